"""Class physics against seed 000's documented generator (../shared/SEEDS.md)."""

from __future__ import annotations

import numpy as np
import pytest

from protocol import CHANNELS, CLASSES
from sensor_sim import SimError, generate, sample
from sensor_sim.physics import DRIFT, INFER, STANDARD

# seed 000, copied from SEEDS.md on purpose (not imported): the independent spec.
SEED_STANDARD_MEANS = {
    "normal": (50, 0.3, 11, 125),
    "bearing_fault": (65, 1.0, 11, 140),
    "drive_wear": (55, 0.5, 11, 150),
    "pump_fault": (55, 0.35, 7, 110),
}
SEED_DRIFT_MEANS = {
    "normal": (58, 0.4, 11.8, 135),
    "bearing_fault": (70, 1.2, 8.0, 150),
    "drive_wear": (75, 0.9, 10.5, 170),
    "pump_fault": (60, 0.45, 5.5, 90),
}


@pytest.mark.parametrize(
    "profile, expected", [(STANDARD, SEED_STANDARD_MEANS), (DRIFT, SEED_DRIFT_MEANS)]
)
def test_profile_tables_match_seed_000_means_in_protocol_order(profile, expected):
    for i, cls in enumerate(CLASSES):
        assert profile.mean[i].tolist() == pytest.approx(expected[cls])


def test_infer_profile_changes_only_the_small_deviations():
    diff = np.argwhere(INFER.mean != STANDARD.mean).tolist()
    changed = {(CLASSES[c], CHANNELS[ch]) for c, ch in diff}
    assert changed == {
        ("normal", "temperature"),
        ("normal", "vibration"),
        ("drive_wear", "temperature"),
        ("drive_wear", "vibration"),
        ("pump_fault", "pressure"),
    }
    assert INFER.mean[CLASSES.index("pump_fault"), CHANNELS.index("pressure")] == 6.8


def test_generate_returns_float32_windows_in_channel_order():
    x = generate(np.array([3] * 400), np.random.default_rng(0))
    assert x.shape == (400, 60, 4) and x.dtype == np.float32
    assert x[..., CHANNELS.index("pressure")].mean() == pytest.approx(7, abs=0.05)
    assert x[..., CHANNELS.index("power")].mean() == pytest.approx(110, abs=0.5)


def test_same_seed_gives_identical_windows_and_other_seed_differs():
    labels = np.arange(8) % 4
    a = generate(labels, np.random.default_rng(7))
    b = generate(labels, np.random.default_rng(7))
    c = generate(labels, np.random.default_rng(8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_bearing_vibration_carries_a_per_window_sine_with_seed_bounds():
    # With the gaussian part removed (std -> tiny), what remains is sin(linspace(0,kπ,T))·a.
    rng = np.random.default_rng(1)
    x = sample(np.full(200, CLASSES.index("bearing_fault")), rng, window_length=60)
    vib = x[..., CHANNELS.index("vibration")] - 1.0
    # sine amplitude a <= 0.25 bounds the mean of each window's residual far below 0.3 noise
    assert np.abs(vib.mean(axis=1)).max() < 0.3
    # the residual correlates with a sine of some k in 4..9 for every window
    t = np.linspace(0, 1, 60)
    ks = np.linspace(4, 9, 501)
    basis = np.sin(t[None, :] * ks[:, None] * np.pi)
    best = np.abs(vib @ basis.T).max(axis=1)
    noise_only = np.abs(rng.normal(0, 0.3, (200, 60)) @ basis.T).max(axis=1)
    assert np.median(best) > np.median(noise_only)


def test_blend_interpolates_between_standard_and_drift_means():
    rng = np.random.default_rng(2)
    x = sample(
        np.zeros(3, dtype=np.int64), rng, blend=np.array([0.0, 0.5, 1.0]), window_length=20000
    )
    temps = x[..., CHANNELS.index("temperature")].mean(axis=1)
    assert temps == pytest.approx([50, 54, 58], abs=0.2)


@pytest.mark.parametrize(
    "labels", [np.array([4]), np.array([-1]), np.array([[0]]), np.array([0.5])]
)
def test_generate_rejects_labels_outside_the_class_list(labels):
    with pytest.raises(SimError):
        generate(labels, np.random.default_rng(0))


def test_sample_rejects_blend_outside_unit_interval():
    with pytest.raises(SimError, match="blend"):
        sample(np.array([0]), np.random.default_rng(0), blend=1.5)
