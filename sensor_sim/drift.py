"""Drift transforms: what a machine's drift setting does to the windows it produces.

A setting becomes a `DriftEffect` for a given elapsed time since it was commanded (the
caller passes the time in; there is no clock here). An effect is

* `blend`: 0..1, how far the class distributions have moved from seed 000's standard
  regime towards its drift regime (physics.sample interpolates means, stds, sine bounds
  and wear noise linearly), then
* a per-channel affine map ``x · gain + offset`` applied to the generated window.

    mode     params (default)              effect
    off      —                             blend 0, gain 1, offset 0
    step     —                             blend 1: exactly seed 000's drift distributions
    offset   <channel>=value (0)           x + value on the named channels (calibration)
    gain     <channel>=value (1), > 0      x · value on the named channels (calibration)
    ramp     duration_s (600)              blend = min(1, elapsed / duration_s): ageing
    regime   load (1.3), 0.2..5            new operating point at load L:
                                             power       × L
                                             temperature + 15 °C · (L − 1)
                                             pressure    × (1 + 0.25 · (L − 1))
                                             vibration   × √L

The regime model: electrical power scales with mechanical load; the extra losses raise the
steady temperature by ~15 °C per +100 % load; a pump at a faster operating point delivers
somewhat more pressure; vibration velocity grows with the square root of load. That is the seed
machine's; every simulated type has its own (sensor_sim/kinds.py), on its own channels, and
`offset`/`gain` name channels of the machine's type (`effect(settings, t, sim_type)`).

>>> eff = effect(DriftSettings("offset", {"temperature": 5.0}), elapsed_s=0.0)
>>> eff.offset
(5.0, 0.0, 0.0, 0.0)
>>> effect(DriftSettings("ramp", {"duration_s": 100.0}), elapsed_s=25.0).blend
0.25
>>> import numpy as np
>>> out = apply(np.full((1, 2, 4), 10.0, np.float32), effect(DriftSettings("regime"), 0.0))
>>> [round(float(v), 3) for v in out[0, 0]]  # temperature, vibration, pressure, power at L=1.3
[14.5, 11.402, 10.75, 13.0]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from protocol import DRIFT_MODES, Command, PayloadError

from .errors import SimError
from .kinds import ALL_CHANNELS, SEED, SimType

DEFAULT_RAMP_S = 600.0
DEFAULT_LOAD = 1.3

_NEUTRAL = tuple(0.0 for _ in SEED.kind.channels)
_UNIT = tuple(1.0 for _ in SEED.kind.channels)


@dataclass(frozen=True, slots=True)
class DriftSettings:
    """A machine's drift mode and its params (validated like a control command)."""

    mode: str = "off"
    params: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in DRIFT_MODES:
            raise SimError(f"drift mode {self.mode!r} is not one of {DRIFT_MODES}", "bad_field")
        try:  # one validation for the wire and for Python callers
            Command("drift", mode=self.mode, params=dict(self.params))
        except PayloadError as exc:
            raise SimError(str(exc), exc.kind) from exc
        if self.mode in ("offset", "gain"):  # a channel of a type the simulator plays
            unknown = sorted(set(self.params) - set(ALL_CHANNELS))
            if unknown:
                raise SimError(
                    f"{self.mode} drift names channel(s) {unknown} no simulated machine has: "
                    + ", ".join(ALL_CHANNELS),
                    "bad_field",
                )
        object.__setattr__(self, "params", {k: float(v) for k, v in self.params.items()})

    @classmethod
    def from_command(cls, cmd: Command) -> DriftSettings:
        if cmd.cmd != "drift" or cmd.mode is None:
            raise SimError(f"command {cmd.cmd!r} is not a drift command")
        return cls(cmd.mode, dict(cmd.params))

    def describe(self) -> str:
        """Short text for dashboards and status, e.g. 'offset temperature=5'.

        >>> DriftSettings("gain", {"power": 1.1}).describe()
        'gain power=1.1'
        """
        args = " ".join(f"{k}={v:g}" for k, v in sorted(self.params.items()))
        return f"{self.mode} {args}".strip()


@dataclass(frozen=True, slots=True)
class DriftEffect:
    """How far to blend towards the drift regime, then the per-channel affine map."""

    blend: float = 0.0
    gain: tuple[float, ...] = _UNIT  # one per channel of the machine's type (the seed's: 4)
    offset: tuple[float, ...] = _NEUTRAL

    def __post_init__(self) -> None:
        if not 0.0 <= self.blend <= 1.0:
            raise SimError(f"drift blend {self.blend} must be within 0..1")
        if len(self.gain) != len(self.offset):
            raise SimError("drift gain and offset need one value per channel each")

    @property
    def is_identity(self) -> bool:
        return all(g == 1.0 for g in self.gain) and all(o == 0.0 for o in self.offset)


def _per_channel(
    params: Mapping[str, float], default: float, channels: tuple[str, ...]
) -> tuple[float, ...]:
    return tuple(float(params.get(ch, default)) for ch in channels)


def effect(settings: DriftSettings, elapsed_s: float, sim_type: SimType = SEED) -> DriftEffect:
    """The effect of `settings` `elapsed_s` seconds after it was commanded, on a machine of
    `sim_type` (its channels; channels it has not are left alone)."""
    mode, params = settings.mode, settings.params
    channels = sim_type.kind.channel_names
    unit = tuple(1.0 for _ in channels)
    neutral = tuple(0.0 for _ in channels)
    if mode == "off":
        return DriftEffect(gain=unit, offset=neutral)
    if mode == "step":
        return DriftEffect(blend=1.0, gain=unit, offset=neutral)
    if mode == "offset":
        return DriftEffect(gain=unit, offset=_per_channel(params, 0.0, channels))
    if mode == "gain":
        return DriftEffect(gain=_per_channel(params, 1.0, channels), offset=neutral)
    if mode == "ramp":
        duration = params.get("duration_s", DEFAULT_RAMP_S)
        blend = min(1.0, max(0.0, elapsed_s) / duration)
        return DriftEffect(blend=blend, gain=unit, offset=neutral)
    if mode == "regime":
        gains, offsets = sim_type.regime(params.get("load", DEFAULT_LOAD))
        return DriftEffect(
            gain=_per_channel(gains, 1.0, channels), offset=_per_channel(offsets, 0.0, channels)
        )
    raise SimError(f"drift mode {mode!r} has no effect defined")  # pragma: no cover


def apply(windows: npt.NDArray[np.float32], eff: DriftEffect) -> npt.NDArray[np.float32]:
    """`windows` (…, T, C) mapped by ``x · gain + offset`` per channel (a new array)."""
    if eff.is_identity:
        return windows
    gain = np.asarray(eff.gain, dtype=np.float32)
    offset = np.asarray(eff.offset, dtype=np.float32)
    return (windows * gain + offset).astype(np.float32, copy=False)
