"""The machine types this simulator can play: each a `protocol.MachineType` and its physics.

`default` is the seed machine (physics.py: four channels, 60-sample windows); `fan` a belt-driven
fan (fan.py: three channels, 128-sample windows, its own four classes). A drift's `regime` mode
moves each type's own channels (`regime`: gains and offsets by channel name at a load).

>>> [k.name for k in SIM_TYPES.values()], SIM_TYPES["fan"].kind.input_shape
(['default', 'fan'], (128, 3))
>>> SIM_TYPES["fan"].regime(1.44)
({'vib_x': 1.2, 'vib_y': 1.2, 'current': 1.44}, {})
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from protocol.machine_type import DEFAULT_TYPE, MachineType

from . import fan, physics

__all__ = ["ALL_CHANNELS", "SEED", "SIM_TYPES", "SimType"]

Generate = Callable[..., npt.NDArray[np.float32]]  # (labels, rng, *, blend, window_length)
Regime = Callable[[float], tuple[dict[str, float], dict[str, float]]]

REGIME_TEMPERATURE_PER_LOAD = 15.0
REGIME_PRESSURE_PER_LOAD = 0.25


def _seed_regime(load: float) -> tuple[dict[str, float], dict[str, float]]:
    """power × L, pressure × (1 + 0.25 (L − 1)), vibration × √L, temperature + 15 °C (L − 1)."""
    gains = {
        "power": load,
        "pressure": 1 + REGIME_PRESSURE_PER_LOAD * (load - 1),
        "vibration": math.sqrt(load),
    }
    return gains, {"temperature": REGIME_TEMPERATURE_PER_LOAD * (load - 1)}


def _fan_regime(load: float) -> tuple[dict[str, float], dict[str, float]]:
    """A fan at load L: motor current × L, vibration × √L (as the seed machine's)."""
    root = round(math.sqrt(load), 12)
    return {"vib_x": root, "vib_y": root, "current": load}, {}


@dataclass(frozen=True, slots=True)
class SimType:
    """A machine type and how to make its windows."""

    kind: MachineType
    generate: Generate
    regime: Regime

    @property
    def name(self) -> str:
        return self.kind.name


SEED = SimType(DEFAULT_TYPE, physics.sample, _seed_regime)
FAN = SimType(fan.FAN_TYPE, fan.generate, _fan_regime)
SIM_TYPES: dict[str, SimType] = {t.name: t for t in (SEED, FAN)}
ALL_CHANNELS: tuple[str, ...] = tuple(
    dict.fromkeys(c for t in SIM_TYPES.values() for c in t.kind.channel_names)
)
