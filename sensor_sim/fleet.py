"""The simulated fleet: machines m01..mNN (the seed machine) and fan-01..fan-NN (the fan type,
sensor_sim/fan.py), control commands, and one window per machine per tick.

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
>>> mixed = Fleet(FleetConfig(machines=1, fans=1, mtbf_s=0.0), np.random.default_rng(0))
>>> mixed.apply(Command("fault", state="looseness"))  # only a fan has that class
['fan-01']
>>> [(w.machine, w.data.shape, m.state_name) for w, m in zip(mixed.tick(0.1, 1), mixed.machines)]
[('m01', (60, 4), 'normal'), ('fan-01', (128, 3), 'looseness')]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from nodekit.settings import check, setting
from protocol import WINDOW_LENGTH, Command, Window

from .drift import DriftSettings
from .errors import SimError
from .kinds import FAN, SEED
from .machine import Machine, MachineConfig

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


def fan_ids(n: int) -> tuple[str, ...]:
    """The ids of n fans: fan-01..fan-NN (members of the fan type's pattern `fan-*`).

    >>> fan_ids(2)
    ('fan-01', 'fan-02')
    """
    width = max(2, len(str(n)))
    return tuple(f"fan-{i:0{width}d}" for i in range(1, n + 1))


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
    fans: int = setting(
        0,
        help="fan machines besides: machine type 'fan' (3 channels, 128 samples), ids fan-01…",
        low=0,
        high=MAX_MACHINES,
        metavar="N",
    )
    window_length: int = setting(
        WINDOW_LENGTH,
        help="samples per window of the seed machines (a fan's are its type's 128)",
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
        self.machines += [Machine(f, machine_config, FAN) for f in fan_ids(config.fans)]
        self._by_id = {m.id: m for m in self.machines}
        self.label_fraction = config.label_fraction
        self.labels_sent = dict.fromkeys(self._by_id, 0)
        self._groups = [  # (sim type, indices of its machines), for one sample() call each
            (t, np.flatnonzero([m.sim_type is t for m in self.machines]))
            for t in (SEED, FAN)
            if any(m.sim_type is t for m in self.machines)
        ]

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

    def _fitting(self, cmd: Command, targets: list[Machine]) -> list[Machine]:
        """The targets whose type has the class a fault names, or the channels a per-channel
        drift names. Of "all", those (SimError if none); named machines must all fit, else
        SimError naming what the misfit's type has (protocol.Command checks only names)."""

        def fits(m: Machine) -> bool:
            kind = m.sim_type.kind
            if cmd.cmd == "fault":
                return cmd.state in kind.classes
            if cmd.cmd == "drift" and cmd.mode in ("offset", "gain"):
                return set(cmd.params) <= set(kind.channel_names)
            return True

        fit = [m for m in targets if fits(m)]
        if fit and (cmd.machines == ("all",) or len(fit) == len(targets)):
            return fit
        kind = next(m for m in targets if not fits(m)).sim_type.kind
        if cmd.cmd == "fault":
            raise SimError(
                f"fault state {cmd.state!r} is not a class of machine type {kind.name}: "
                + ", ".join(kind.classes),
                kind="bad_field",
            )
        unknown = sorted(set(cmd.params) - set(kind.channel_names))
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
        targets = self._fitting(cmd, self._targets(cmd))
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
        data: list[np.ndarray] = [np.empty(0)] * n
        for sim_type, idx in self._groups:
            group = [self.machines[i] for i in idx]
            labels = np.fromiter((m.state for m in group), dtype=np.int64, count=len(group))
            effects = [m.drift_effect() for m in group]
            blend = np.fromiter((e.blend for e in effects), dtype=np.float64, count=len(group))
            length = self.config.window_length if sim_type is SEED else sim_type.kind.window_length
            x = sim_type.generate(labels, self.rng, blend=blend, window_length=length)
            if not all(e.is_identity for e in effects):
                gain = np.array([e.gain for e in effects], dtype=np.float32)
                offset = np.array([e.offset for e in effects], dtype=np.float32)
                x = x * gain[:, None, :] + offset[:, None, :]
            for k, at in enumerate(idx.tolist()):
                data[at] = x[k]
        with_label = self.rng.random(n) < self.label_fraction
        windows = []
        for i, m in enumerate(self.machines):
            label = m.state if with_label[i] else None
            if label is not None:
                self.labels_sent[m.id] += 1
            windows.append(Window(m.id, m.next_seq(), timestamp_ns, data[i], label))
        return windows
