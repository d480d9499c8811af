"""The simulated fleet: machines m01..mNN, control commands, and one window per machine per tick.

Pure: time (`dt`, `timestamp_ns`) and randomness come in as arguments; the MQTT shell in
publisher.py only feeds commands in and publishes what `tick` returns.

>>> import numpy as np
>>> from protocol import Command
>>> fleet = Fleet(FleetConfig(machines=3, label_fraction=0.0, mtbf_s=0.0), np.random.default_rng(0))
>>> fleet.ids
('m01', 'm02', 'm03')
>>> fleet.apply(Command("drift", machines=("m02",), mode="offset", params={"temperature": 5}))
['m02']
>>> [m.drift.describe() for m in fleet.machines]
['off', 'offset temperature=5', 'off']
>>> [(w.machine, w.seq, w.data.shape) for w in fleet.tick(0.1, timestamp_ns=1)]
[('m01', 0, (60, 4)), ('m02', 0, (60, 4)), ('m03', 0, (60, 4))]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from nodekit.settings import check, setting
from protocol import WINDOW_LENGTH, Command, Window
from protocol.machine_type import DEFAULT_TYPE

from .drift import DriftSettings
from .errors import SimError
from .machine import Machine, MachineConfig
from .physics import sample

MAX_MACHINES = 999


def machine_ids(n: int) -> tuple[str, ...]:
    """The ids of an n-machine fleet: m01..mNN (three digits from 100 machines on).

    >>> machine_ids(2), machine_ids(100)[-1]
    (('m01', 'm02'), 'm100')
    """
    if not 1 <= n <= MAX_MACHINES:
        raise SimError(f"machine count {n} must be within 1..{MAX_MACHINES}")
    width = max(2, len(str(n)))
    return tuple(f"m{i:0{width}d}" for i in range(1, n + 1))


def _repair(value: float) -> None:
    if value <= 0:
        raise ValueError("must be > 0 (a fault needs time to be repaired)")


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """The fleet's settings, declared once: flags, EDGELOOP_SIM_* env names and file keys derive.

    Env names carry SIM_ so that they never collide with pi_edge's (its EDGELOOP_MACHINES is a
    list of ids, this `machines` is a count).
    """

    ENV_PREFIX: ClassVar[str] = "EDGELOOP_SIM_"  # pi_edge has EDGELOOP_MACHINES too

    machines: int = setting(16, help="machine count", low=1, high=MAX_MACHINES, metavar="N")
    label_fraction: float = setting(
        0.05,
        help="share of windows carrying the true label",
        low=0.0,
        high=1.0,
    )
    mtbf_s: float = setting(
        300.0,
        help="mean seconds between spontaneous faults per machine, 0 = never",
        low=0.0,
        high=1e9,
        flag="--fault-mtbf",
        metavar="S",
    )
    repair_s: float = setting(
        60.0,
        help="mean seconds until a spontaneous fault is repaired",
        high=1e9,
        check=_repair,
        flag="--repair-mean",
        metavar="S",
    )
    window_length: int = setting(
        WINDOW_LENGTH,
        help="samples per window",
        low=1,
        high=4096,
        metavar="N",
    )

    def __post_init__(self) -> None:
        check(self)


def check_fraction(value: float) -> float:
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise SimError(f"label fraction {value!r} must be within 0..1")
    return value


class Fleet:
    """All machines of one simulator. Not thread-safe: the publisher loop owns it."""

    def __init__(self, config: FleetConfig, rng: np.random.Generator) -> None:
        self.config = config
        self.rng = rng
        machine_config = MachineConfig(config.mtbf_s, config.repair_s)
        self.machines = [Machine(mid, machine_config) for mid in machine_ids(config.machines)]
        self._by_id = {m.id: m for m in self.machines}
        self.label_fraction = config.label_fraction
        self.machine_type = DEFAULT_TYPE  # the seed machine's physics (sensor_sim/physics.py)
        self.labels_sent = dict.fromkeys(self._by_id, 0)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._by_id)

    def _targets(self, cmd: Command) -> list[Machine]:
        if cmd.machines == ("all",):
            return list(self.machines)
        unknown = [m for m in cmd.machines if m not in self._by_id]
        if unknown:
            raise SimError(
                f"unknown machine(s) {unknown}; this simulator runs {self.ids[0]}..{self.ids[-1]}",
                kind="unknown_machine",
            )
        return [self._by_id[m] for m in cmd.machines]

    def _check_vocabulary(self, cmd: Command) -> None:
        """A fault names a class and a per-channel drift its channels, of the machines' type;
        SimError naming what the type has (protocol.Command checks only that they are names)."""
        kind = self.machine_type
        if cmd.cmd == "fault" and cmd.state not in kind.classes:
            raise SimError(
                f"fault state {cmd.state!r} is not a class of machine type {kind.name}: "
                + ", ".join(kind.classes),
                kind="bad_field",
            )
        if cmd.cmd == "drift" and cmd.mode in ("offset", "gain"):
            unknown = sorted(set(cmd.params) - set(kind.channel_names))
            if unknown:
                raise SimError(
                    f"{cmd.mode} drift names channel(s) {unknown} that machine type {kind.name} "
                    "has not: " + ", ".join(kind.channel_names),
                    kind="bad_field",
                )

    def apply(self, cmd: Command) -> list[str]:
        """Apply a validated command; returns the machine ids it changed. SimError if refused."""
        if cmd.cmd == "labels":
            self.label_fraction = check_fraction(cmd.params["fraction"])
            return list(self.ids)
        targets = self._targets(cmd)
        self._check_vocabulary(cmd)
        if cmd.cmd == "drift":
            settings = DriftSettings.from_command(cmd)
            for m in targets:
                m.set_drift(settings)
        elif cmd.cmd == "fault":
            assert cmd.state is not None  # checked by Command
            for m in targets:
                m.force(cmd.state)
        elif cmd.cmd == "repair":
            for m in targets:
                m.repair()
        else:  # pragma: no cover - Command refuses other commands
            raise SimError(f"command {cmd.cmd!r} is not handled", kind="bad_field")
        return [m.id for m in targets]

    def tick(self, dt: float, timestamp_ns: int) -> list[Window]:
        """Advance every machine by `dt` seconds and return one new window per machine."""
        n = len(self.machines)
        for m in self.machines:
            m.advance(dt, self.rng)
        labels = np.fromiter((m.state for m in self.machines), dtype=np.int64, count=n)
        effects = [m.drift_effect() for m in self.machines]
        blend = np.fromiter((e.blend for e in effects), dtype=np.float64, count=n)
        data = sample(labels, self.rng, blend=blend, window_length=self.config.window_length)
        if not all(e.is_identity for e in effects):
            gain = np.array([e.gain for e in effects], dtype=np.float32)
            offset = np.array([e.offset for e in effects], dtype=np.float32)
            data = data * gain[:, None, :] + offset[:, None, :]
        with_label = self.rng.random(n) < self.label_fraction
        windows = []
        for i, m in enumerate(self.machines):
            label = m.state if with_label[i] else None
            if label is not None:
                self.labels_sent[m.id] += 1
            windows.append(Window(m.id, m.next_seq(), timestamp_ns, data[i], label))
        return windows
