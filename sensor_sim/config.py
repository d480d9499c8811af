"""The simulator's settings, declared once: flags, env names and config keys derive from them.

`SimConfig` (the publisher's settings) and `FleetConfig` (fleet.py) together make the `run`
command's settings; `Connection` is what the control commands need. `nodekit.settings`
derives the flags, the environment variables and the TOML keys from these fields.
Precedence, last wins: defaults < `--config FILE` (TOML, top level or a `[sim]` table,
unknown keys refused) < environment < flags.

Environment names: EDGELOOP_BROKER and EDGELOOP_PREFIX are shared by every role; every other
simulator setting is EDGELOOP_SIM_<FIELD>, so one shell can configure pi_edge and the
simulator without a clash (pi_edge's EDGELOOP_MACHINES is a list of ids, not a count).

>>> from protocol import DEFAULT_PREFIX
>>> cfg = resolve_sim(env={"EDGELOOP_SIM_HZ": "5", "EDGELOOP_SIM_MACHINES": "3"},
...                   flags={"hz": "20"})
>>> cfg.hz, cfg.fleet.machines, cfg.prefix == DEFAULT_PREFIX
(20.0, 3, True)
>>> resolve_sim(flags={"label_fraction": "1.5"})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
protocol.errors.ConfigError: label_fraction 1.5 must be a number in 0.0..1.0 (...); set ...
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from nodekit.settings import (
    MqttSettings,
    broker_setting,
    check,
    from_mapping,
    prefix_setting,
    read_toml,
    resolve,
    setting,
)
from protocol import ConfigError, check_id
from protocol.machine_type import DEFAULT_TYPE_NAME
from protocol.signals import SignalMap, read_signals_file, signals_type

from .fleet import FleetConfig, machine_ids
from .kinds import SIM_TYPES
from .plant import PlantConfig

REALISMS = ("seed", "plant")  # --realism: seed 000's physics, or the realistic plant

__all__ = ["SECTION", "Connection", "SimConfig", "resolve_sim", "setting_names"]

SECTION = "sim"  # the TOML table a shared config file keeps the simulator's settings in


def _hz(value: float) -> None:
    if not 0 < value <= 1000:
        raise ValueError("must be within (0, 1000] windows/s per machine")


def _positive(value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError("must be > 0")


@dataclass(frozen=True, slots=True)
class Connection(MqttSettings):
    """Where the control commands (drift, fault, repair, labels) publish."""

    broker: str = broker_setting()
    prefix: str = prefix_setting()

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True, slots=True)
class SimConfig(MqttSettings):
    """Everything `Simulator` needs; `duration_s` 0 means run until stopped."""

    ENV_PREFIX: ClassVar[str] = "EDGELOOP_SIM_"  # pi_edge has EDGELOOP_MACHINES too

    broker: str = broker_setting()
    prefix: str = prefix_setting()
    node: str = setting(
        "simulator",
        help="node id for the status topic",
        check=lambda v: check_id(v, "node id"),
    )
    hz: float = setting(10.0, help="windows per second per machine", check=_hz)
    fleet: FleetConfig = field(default_factory=FleetConfig)
    seed: int | None = setting(
        None,
        help="random seed (default: random)",
        low=0,
        high=2**63 - 1,
        metavar="N",
    )
    duration_s: float = setting(
        0.0,
        help="seconds to run, 0 = until q / Ctrl-C",
        low=0.0,
        flag="--duration",
        metavar="S",
    )
    max_rate: bool = setting(
        False,
        help="ignore --hz and publish as fast as possible (measures the ceiling)",
    )
    signals: tuple[Path, ...] = setting(
        (),
        help="publish each window as per-signal readings on the topics of these signals files "
        "(TOML, as pi_edge --signals reads them; every signal needs a 'time' key) instead of "
        "window messages: comma-separated, one per machine type played (the seed machines' "
        'without machine_type, the fans\' with machine_type = "fan")',
        metavar="FILE[,FILE…]",
    )
    realism: str = setting(
        "seed",
        help="seed: seed 000's class physics (default, unchanged); plant: the realistic plant "
        "(rare developing faults, correlated channels, artefacts, late noisy label events; "
        "sensor_sim/README.md, 'Realistic plant')",
        choices=REALISMS,
    )
    time_scale: float = setting(
        1.0,
        help="with --realism plant: plant seconds per wall second (60: an hour-long fault "
        "develops in a minute)",
        low=1e-6,
        high=1e6,
        metavar="X",
    )
    plant_drift: tuple[str, ...] = setting(
        (),
        help="with --realism plant: comma-separated machine ids that drift (a ramp to seed "
        "000's drift regime over --plant-drift-ramp plant seconds); the others do not",
        check=lambda v: [check_id(m, "machine id") for m in v],
        metavar="IDS",
    )
    plant_drift_ramp_s: float = setting(
        3600.0,
        help="with --plant-drift: plant seconds from no drift to the full drift regime",
        low=1e-3,
        high=1e9,
        flag="--plant-drift-ramp",
        metavar="S",
    )
    answer_label_requests: bool = setting(
        False,
        help="play the technician who answers pi_edge's label requests ({prefix}/labels/"
        "requests): a label event with each requested window's true class, on {prefix}/labels",
    )
    label_answer_delay_s: float = setting(
        5.0,
        help="with --answer-label-requests: seconds from a request to its answer",
        low=0.0,
        high=86400.0,
        flag="--label-answer-delay",
        metavar="S",
    )
    dashboard: bool = setting(
        True,
        help="live dashboard; off: log lines (also when stdout is not a terminal)",
    )
    status_interval_s: float = setting(
        2.0,
        help="seconds between retained status messages",
        check=_positive,
        cli=False,
    )
    report_interval_s: float = setting(
        10.0,
        help="seconds between rate log lines",
        check=_positive,
        cli=False,
    )
    rate_interval_s: float = setting(
        1.0,
        help="seconds over which the per-machine rate is measured",
        check=_positive,
        cli=False,
    )
    connect_timeout_s: float = setting(
        10.0,
        help="seconds to wait for the broker before giving up",
        low=0.0,
        flag="--connect-timeout",
        metavar="S",
    )
    max_lag_s: float = setting(
        1.0,
        help="seconds behind schedule before late ticks are skipped",
        low=0.0,
        cli=False,
    )
    backpressure_every: int = setting(
        8,
        help="with max_rate, wait for paho to flush every this many ticks",
        low=1,
        high=1_000_000,
        cli=False,
    )

    def __post_init__(self) -> None:
        if isinstance(self.signals, str | Path):  # one file, as before (code and tests)
            object.__setattr__(self, "signals", (Path(self.signals),))
        check(self)
        self.signal_maps()  # a wrong signals file fails before anything starts
        if self.realism == "plant" and self.fleet.fans:
            raise ConfigError("the realistic plant (--plant) plays the seed machines only")
        unknown = sorted(set(self.plant_drift) - set(machine_ids(self.fleet.machines)))
        if unknown:
            raise ConfigError(
                f"plant_drift names {unknown}, not machines of this {self.fleet.machines}-machine "
                "simulator (m01..); give ids within --machines"
            )

    def signal_maps(self) -> dict[str, SignalMap]:
        """The checked signals files by the machine type they play (`default`: the seed
        machines, `fan`: the fans), or {}; ConfigError if the simulator cannot publish them.

        Every signal needs a `time` key: the simulator's sample time runs ahead of the wall
        clock (a window of T samples per tick), so arrival times would not rebuild its windows.
        Each type played has exactly one file (a file without `machine_type` is the seed's).
        """
        out: dict[str, SignalMap] = {}
        for path in self.signals:
            obj = read_signals_file(path)
            try:
                name = signals_type(obj) or DEFAULT_TYPE_NAME
            except ValueError as exc:
                raise ConfigError(f"signals file {path}: {exc}") from exc
            if name not in SIM_TYPES:
                raise ConfigError(
                    f"signals file {path} is of machine type {name!r}; the simulator plays "
                    f"{', '.join(SIM_TYPES)}"
                )
            if name in out:
                raise ConfigError(
                    f"two signals files of machine type {name!r} (a file without machine_type "
                    "is the seed machines'); give each type one"
                )
            kind = SIM_TYPES[name].kind
            rate = None if name == DEFAULT_TYPE_NAME else kind.sample_hz
            out[name] = self._playable(
                SignalMap.from_dict(obj, kind.channel_names, source=str(path), rate=rate), path
            )
        played = {DEFAULT_TYPE_NAME: self.fleet.machines, "fan": self.fleet.fans}
        if out:
            idle = [n for n in out if not played[n]]
            unfed = [n for n, count in played.items() if count and n not in out]
            if idle or unfed:
                raise ConfigError(
                    "per-signal mode (--signals) needs one signals file per machine type played "
                    f"and machines of each file's type: {', '.join(unfed) or 'none'} without a "
                    f"file; files of {', '.join(idle) or 'none'} without machines (--fans N "
                    'plays fans; their file says machine_type = "fan")'
                )
        return out

    def _playable(self, signals: SignalMap, path: Path) -> SignalMap:
        untimed = [s.topic for s in signals.signals if s.time is None]
        wild = [s.topic for s in signals.signals if "+" in s.topic.split("/")]
        if untimed:
            raise ConfigError(
                f"signals file {path}: the simulator needs a `time` key on every "
                f"signal (missing on {untimed}): its sample time runs ahead of the wall clock, "
                "so arrival times would not rebuild its windows"
            )
        if wild:
            raise ConfigError(
                f"signals file {path}: the simulator publishes on concrete topics; "
                f"write out the '+' level of {wild}"
            )
        mapped = {s.channel for s in signals.signals}
        unmapped = [c for c in signals.channels if c not in mapped]
        if unmapped:
            raise ConfigError(
                f"signals file {path}: the simulator publishes MQTT readings only, and "
                f"no [[signal]] maps {unmapped} ([[opcua]] and [[modbus]] are read by pi_edge)"
            )
        return signals

    @property
    def period_s(self) -> float:
        return 1.0 / self.hz

    def plant_config(self) -> PlantConfig:
        """The realistic plant's parameters for `--realism plant` (label share: the fleet's)."""
        return PlantConfig(
            label_fraction=self.fleet.label_fraction,
            drift_machines=self.plant_drift,
            drift_ramp_s=self.plant_drift_ramp_s,
            time_scale=self.time_scale,
        )


def setting_names(cls: type) -> tuple[str, ...]:
    """The fields of `cls` that are settings (SimConfig's `fleet` is a nested class, not one)."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.metadata)


def _part(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    names = setting_names(cls)
    return {k: v for k, v in values.items() if k in names}


def resolve_sim(
    *,
    file: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> SimConfig:
    """The `run` settings from defaults < TOML `file` < `env` < `flags` (one flat key space).

    The file, env and flags may set both `SimConfig`'s and `FleetConfig`'s settings; a key
    that is neither is refused.
    """
    flags = dict(flags or {})
    raw = read_toml(file, SECTION) if file is not None else {}
    known = setting_names(SimConfig) + setting_names(FleetConfig)
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"unknown setting(s) {unknown} in {file}; known: {', '.join(known)}")
    source = str(file)
    fleet = resolve(
        FleetConfig,
        base=from_mapping(FleetConfig, _part(FleetConfig, raw), source=source),
        env=env,
        flags=_part(FleetConfig, flags),
    )
    base = from_mapping(SimConfig, _part(SimConfig, raw), source=source)
    config: SimConfig = resolve(
        SimConfig, base={**base, "fleet": fleet}, env=env, flags=_part(SimConfig, flags)
    )
    return config
