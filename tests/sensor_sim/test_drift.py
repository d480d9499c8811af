"""Drift transforms: each mode's documented effect, as a table."""

from __future__ import annotations

import math

import numpy as np
import pytest

from protocol import CHANNELS
from sensor_sim import DriftSettings, SimError, apply, effect


@pytest.mark.parametrize(
    "mode, params, elapsed, blend, gain, offset",
    [
        ("off", {}, 0, 0.0, (1, 1, 1, 1), (0, 0, 0, 0)),
        ("step", {}, 0, 1.0, (1, 1, 1, 1), (0, 0, 0, 0)),
        ("offset", {"temperature": 5, "power": -3}, 0, 0.0, (1, 1, 1, 1), (5, 0, 0, -3)),
        ("gain", {"pressure": 1.1}, 0, 0.0, (1, 1, 1.1, 1), (0, 0, 0, 0)),
        ("ramp", {}, 300, 0.5, (1, 1, 1, 1), (0, 0, 0, 0)),
        ("ramp", {"duration_s": 10}, 5, 0.5, (1, 1, 1, 1), (0, 0, 0, 0)),
        ("ramp", {"duration_s": 10}, 50, 1.0, (1, 1, 1, 1), (0, 0, 0, 0)),
        ("regime", {}, 0, 0.0, (1, math.sqrt(1.3), 1.075, 1.3), (4.5, 0, 0, 0)),
        ("regime", {"load": 2.0}, 0, 0.0, (1, math.sqrt(2), 1.25, 2.0), (15, 0, 0, 0)),
    ],
)
def test_drift_effect_per_mode(mode, params, elapsed, blend, gain, offset):
    eff = effect(DriftSettings(mode, params), elapsed_s=elapsed)
    assert eff.blend == pytest.approx(blend)
    assert eff.gain == pytest.approx(gain)
    assert eff.offset == pytest.approx(offset)


def test_apply_maps_each_channel_by_gain_then_offset():
    x = np.ones((2, 3, len(CHANNELS)), dtype=np.float32)
    out = apply(x, effect(DriftSettings("gain", {"power": 2.0}), 0))
    assert out[..., CHANNELS.index("power")].tolist() == [[2.0] * 3] * 2
    assert out[..., CHANNELS.index("temperature")].tolist() == [[1.0] * 3] * 2
    assert out.dtype == np.float32


@pytest.mark.parametrize(
    "mode, params",
    [
        ("sideways", {}),
        ("offset", {"humidity": 1}),
        ("gain", {"power": 0}),
        ("ramp", {"duration_s": -1}),
        ("regime", {"load": 9}),
        ("step", {"temperature": 1}),
        ("offset", {"temperature": float("nan")}),
    ],
)
def test_invalid_drift_settings_are_refused(mode, params):
    with pytest.raises(SimError):
        DriftSettings(mode, params)
