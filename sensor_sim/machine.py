"""One simulated machine's true state: normal → develops a fault → repaired → normal.

Pure: the caller advances time by `dt` and passes the random generator in.

* While normal, a fault starts in each step with probability ``1 − exp(−dt / mtbf_s)``
  (exponential time between faults); its class is drawn uniformly among the fault classes.
* A fault that developed by itself is repaired after an exponential time with mean
  ``repair_s``.
* A fault forced by a `fault` command stays until a `repair` command (so an operator's
  demonstration does not end by surprise). ``fault`` with the type's healthy class is a repair.
* States are class indices of the machine's type (sensor_sim/kinds.py: the seed machine's by
  default, whose healthy class is "normal"; a fan's is "ok").
* ``mtbf_s = 0`` disables spontaneous faults.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> m = Machine("m01", MachineConfig(mtbf_s=0.0))
>>> m.advance(3600.0, rng).state_name
'normal'
>>> m.force("pump_fault").state_name
'pump_fault'
>>> m.advance(3600.0, rng).state_name  # forced faults wait for a repair
'pump_fault'
>>> m.repair().state_name
'normal'
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from protocol import ConfigError, PayloadError, check_id

from .drift import DriftEffect, DriftSettings, effect
from .errors import SimError
from .kinds import SEED, SimType


@dataclass(frozen=True, slots=True)
class MachineConfig:
    """mtbf_s: mean time between spontaneous faults (0 = never); repair_s: mean repair time."""

    mtbf_s: float = 300.0
    repair_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("mtbf_s", "repair_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"machine {name}={value!r} must be a finite number ≥ 0")
        if self.repair_s <= 0:
            raise ConfigError(f"machine repair_s={self.repair_s} must be > 0")


class Machine:
    """State, drift setting and counters of one machine. Not thread-safe: one owner."""

    def __init__(
        self, machine_id: str, config: MachineConfig | None = None, sim_type: SimType = SEED
    ) -> None:
        self.id = check_id(machine_id)
        self.config = config or MachineConfig()
        self.sim_type = sim_type
        kind = sim_type.kind
        self.normal = kind.classes.index(kind.normal)
        self.faults = tuple(i for i in range(len(kind.classes)) if i != self.normal)
        self.state = self.normal
        self.forced = False
        self.clock = 0.0  # seconds of simulated time
        self.repair_at = math.inf
        self.drift = DriftSettings()
        self.drift_since = 0.0
        self.seq = 0

    @property
    def state_name(self) -> str:
        return self.sim_type.kind.classes[self.state]

    def advance(self, dt: float, rng: np.random.Generator) -> Machine:
        """Let `dt` seconds pass: maybe develop a fault, maybe finish a repair."""
        if not (math.isfinite(dt) and dt >= 0):
            raise SimError(f"time step {dt!r} must be a finite number ≥ 0")
        self.clock += dt
        if self.state == self.normal:
            mtbf = self.config.mtbf_s
            if mtbf > 0 and rng.random() < -math.expm1(-dt / mtbf):
                self.state = int(rng.choice(self.faults))
                self.forced = False
                self.repair_at = self.clock + rng.exponential(self.config.repair_s)
        elif not self.forced and self.clock >= self.repair_at:
            self.repair()
        return self

    def force(self, state: str | int) -> Machine:
        """Switch to `state` now (a class name or index of the machine's type); a fault then
        waits for a repair. SimError naming the type's classes if it has no such class."""
        kind = self.sim_type.kind
        try:
            index = kind.class_of(state) if isinstance(state, str) else int(state)
        except PayloadError as exc:
            raise SimError(str(exc), "bad_field") from exc
        if not 0 <= index < len(kind.classes):
            raise SimError(f"class index {index} is not one of machine type {kind.name}'s")
        if index == self.normal:
            return self.repair()
        self.state, self.forced, self.repair_at = index, True, math.inf
        return self

    def repair(self) -> Machine:
        self.state, self.forced, self.repair_at = self.normal, False, math.inf
        return self

    def set_drift(self, settings: DriftSettings) -> Machine:
        """Start `settings` now; a ramp counts its elapsed time from here."""
        self.drift, self.drift_since = settings, self.clock
        return self

    def drift_effect(self) -> DriftEffect:
        return effect(self.drift, self.clock - self.drift_since, self.sim_type)

    def next_seq(self) -> int:
        seq, self.seq = self.seq, self.seq + 1
        return seq
