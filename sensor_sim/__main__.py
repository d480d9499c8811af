"""`python -m sensor_sim` / `edgeloop-sim`: the live simulator, its control commands, data sets.

run      the live simulator (dashboard unless --no-dashboard)
drift    send a drift command           fault   force a fault state
repair   repair machines                labels  set the ground-truth label fraction
dataset  write seed 000's eight .npy files and classes.json

Exit codes (nodekit.cli): 0 ok, 1 failed (broker unreachable), 2 bad setting or command.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from nodekit.cli import EXIT_OK, report
from nodekit.settings import add_arguments, flags_of, resolve
from protocol import (
    DRIFT_MODES,
    Command,
    ConfigError,
    EdgeloopError,
    PayloadError,
    __version__,
)

from .config import REALISMS, SECTION, Connection, SimConfig, resolve_sim
from .dataset import DEFAULT_SIZES, SPLITS, write_datasets
from .drift import DriftSettings
from .errors import SimError
from .fleet import FleetConfig
from .kinds import ALL_CHANNELS, SIM_TYPES
from .publisher import Simulator, send_command

log = logging.getLogger("sensor_sim")


def _key_value(value: str) -> tuple[str, float]:
    key, sep, raw = value.partition("=")
    try:
        number = float(raw)
    except ValueError:
        number = math.nan
    if not sep or not key or not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"{value!r} is not NAME=NUMBER (e.g. temperature=5)")
    return key, number


def _machines(value: str) -> tuple[str, ...]:
    ids = tuple(v.strip() for v in value.split(",") if v.strip())
    if not ids:
        raise argparse.ArgumentTypeError("--machines needs ids like m01,m02 or 'all'")
    return ids


def _size(value: str) -> tuple[str, int]:
    name, n = _key_value(value)
    if name not in SPLITS:
        raise argparse.ArgumentTypeError(f"split {name!r} is not one of {tuple(SPLITS)}")
    if n != int(n) or n < 0:
        raise argparse.ArgumentTypeError(f"{value!r}: a split size is a whole number ≥ 0")
    return name, int(n)


def _seed(value: str) -> int:
    try:
        seed = int(value)
    except ValueError:
        seed = -1
    if seed < 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number ≥ 0")
    return seed


def _connection_args(p: argparse.ArgumentParser) -> None:
    add_arguments(p, Connection)


def _target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--machines",
        type=_machines,
        default=("all",),
        help="comma-separated machine ids (m01,m02) or 'all' (default)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The CLI; `run`'s flags are derived from SimConfig and FleetConfig, not written here."""
    parser = argparse.ArgumentParser(
        prog="edgeloop-sim",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"sensor_sim {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run the live simulator",
        description="Publish windows from N simulated machines and obey commands on "
        "…/sim/control. Settings: defaults < --config TOML < environment < flags; each flag's "
        "variable is in brackets.",
    )
    run.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help=f"TOML file of settings, top level or a [{SECTION}] table (unknown keys refused)",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="log the resolved settings and exit without connecting",
    )
    add_arguments(run, SimConfig)
    add_arguments(run, FleetConfig)

    drift = sub.add_parser(
        "drift",
        help="send a drift command",
        description="Publish a drift command to …/sim/control (QoS 1). "
        f"Modes: {', '.join(DRIFT_MODES)}.",
    )
    _connection_args(drift)
    _target_args(drift)
    drift.add_argument("--mode", required=True, choices=DRIFT_MODES)
    drift.add_argument(
        "--param",
        type=_key_value,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"offset/gain: a channel ({', '.join(ALL_CHANNELS)}); "
        "ramp: duration_s; regime: load. Repeat for several.",
    )

    fault = sub.add_parser(
        "fault",
        help="force machines into a state",
        description="Publish a fault command to …/sim/control (QoS 1).",
    )
    _connection_args(fault)
    _target_args(fault)
    fault.add_argument(
        "--state",
        required=True,
        metavar="CLASS",
        help="a class of the machines' type: "
        + "; ".join(f"{t.name}: {', '.join(t.kind.classes)}" for t in SIM_TYPES.values()),
    )

    repair = sub.add_parser(
        "repair",
        help="repair machines",
        description="Publish a repair command to …/sim/control (QoS 1).",
    )
    _connection_args(repair)
    _target_args(repair)

    labels = sub.add_parser(
        "labels",
        help="set the label fraction",
        description="Publish a labels command to …/sim/control (QoS 1).",
    )
    _connection_args(labels)
    labels.add_argument("--fraction", type=float, required=True, help="0..1")

    dataset = sub.add_parser(
        "dataset",
        help="write seed 000's offline data sets",
        description="Write train/infer/drift_train/drift_infer "
        "_data.npy and _labels.npy plus classes.json.",
    )
    dataset.add_argument("--out", type=Path, required=True, help="output directory")
    dataset.add_argument("--seed", type=_seed, default=42, help="random seed (default 42)")
    dataset.add_argument(
        "--size",
        type=_size,
        action="append",
        default=[],
        metavar="SPLIT=N",
        help=f"override a split size, e.g. train=400 (defaults {dict(DEFAULT_SIZES)})",
    )
    dataset.add_argument(
        "--machine-type",
        choices=tuple(SIM_TYPES),
        default="default",
        help="the seed machine (default) or the fan (sensor_sim/fan.py); a fan's classes.json "
        "carries its machine type for the trainer",
    )
    _plant_dataset_args(dataset)
    return parser


def _plant_dataset_args(p: argparse.ArgumentParser) -> None:
    """`dataset --realism plant` and its knobs (sensor_sim/plant_dataset.py)."""
    p.add_argument(
        "--realism",
        choices=REALISMS,
        default="seed",
        help="seed: seed 000's eight files (default); plant: a realistic plant's history, its "
        "labeled train subset and a held-out infer stream with true class and severity",
    )
    plant = p.add_argument_group("--realism plant")
    plant.add_argument("--machines", type=int, default=16, help="machine count (default 16)")
    plant.add_argument("--hours", type=float, default=24.0, help="history (default 24)")
    plant.add_argument("--test-hours", type=float, default=12.0, help="infer (default 12)")
    plant.add_argument(
        "--period-s", type=float, default=30.0, help="plant s between windows (default 30)"
    )
    plant.add_argument(
        "--label-fraction", type=float, default=0.05, help="share of labeled windows (0.05)"
    )
    plant.add_argument(
        "--plant-drift",
        type=_machines,
        default=(),
        metavar="IDS",
        help="machine ids that drift (a ramp to the drift regime over --plant-drift-ramp)",
    )
    plant.add_argument("--plant-drift-ramp", type=float, default=3600.0, metavar="S")
    plant.add_argument(
        "--time-scale", type=float, default=1.0, help="plant seconds per --period-s second"
    )


def _setup_logging(verbose: bool, console: object | None = None) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_edgeloop_sim", False):
            root.removeHandler(old)
    handler: logging.Handler
    if console is not None:
        from rich.logging import RichHandler

        handler = RichHandler(console=console, show_path=False)  # type: ignore[arg-type]
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    setattr(handler, "_edgeloop_sim", True)  # noqa: B010 - tags our handler for removal
    root.addHandler(handler)
    root.setLevel(level)


def _command(args: argparse.Namespace) -> Command:
    """The control command a drift/fault/repair/labels invocation asks for (PayloadError if bad)."""
    if args.command == "drift":
        return Command("drift", machines=args.machines, mode=args.mode, params=dict(args.param))
    if args.command == "fault":
        return Command("fault", machines=args.machines, state=args.state)
    if args.command == "repair":
        return Command("repair", machines=args.machines)
    return Command("labels", params={"fraction": args.fraction})


def run_config(args: argparse.Namespace, env: Mapping[str, str]) -> SimConfig:
    """The `run` settings from --config, the environment and the flags given."""
    flags = {**flags_of(args, SimConfig), **flags_of(args, FleetConfig)}
    return resolve_sim(file=args.config, env=env, flags=flags)


def connection(args: argparse.Namespace, env: Mapping[str, str]) -> Connection:
    """The broker and prefix a control command publishes to, from the environment and flags."""
    conn: Connection = resolve(Connection, env=env, flags=flags_of(args, Connection))
    return conn


def _run(args: argparse.Namespace) -> int:
    """Resolve the settings, then publish until q, a signal or --duration ends the run."""
    config = run_config(args, os.environ)
    if args.dry_run:
        log.info("settings: %s", config)
        return EXIT_OK
    stop = threading.Event()
    dashboard = config.dashboard and sys.stdout.isatty()
    sim = Simulator(config)
    with _stop_on_signals(stop), sim:
        if dashboard:
            from rich.console import Console

            from .dashboard import run_live

            console = Console()
            _setup_logging(args.verbose, console)
            run_live(sim, console, stop)
        else:
            sim.run(stop)
    return EXIT_OK


def _dataset(args: argparse.Namespace) -> int:
    """Write the offline data sets; an unwritable --out is a failed run, not a traceback."""
    if args.realism == "plant":
        if args.machine_type != "default":
            raise ConfigError("the realistic plant (--realism plant) plays the seed machine only")
        return _plant_dataset(args)
    try:
        shapes = write_datasets(args.out, args.seed, dict(args.size), args.machine_type)
    except OSError as exc:
        raise SimError(f"cannot write data sets to {args.out}: {exc}", kind="io") from exc
    for name, shape in shapes.items():
        log.info("%s: %s -> %s", name, shape, args.out / (name + "_data.npy"))
    return EXIT_OK


def _plant_dataset(args: argparse.Namespace) -> int:
    """`dataset --realism plant`: the history, its labeled train subset, the infer stream."""
    from .plant import PlantConfig
    from .plant_dataset import write_plant_datasets

    if args.size:
        raise ConfigError("--size sets seed 000's splits; with --realism plant use --hours")
    try:
        config = PlantConfig(
            label_fraction=args.label_fraction,
            drift_machines=tuple(args.plant_drift),
            drift_ramp_s=args.plant_drift_ramp,
            time_scale=args.time_scale,
        )
        sizes = write_plant_datasets(
            args.out,
            args.seed,
            machines=args.machines,
            hours=args.hours,
            test_hours=args.test_hours,
            period_s=args.period_s,
            config=config,
        )
    except SimError as exc:
        raise ConfigError(str(exc)) from exc
    except OSError as exc:
        raise SimError(f"cannot write data sets to {args.out}: {exc}", kind="io") from exc
    log.info("plant data sets in %s: %s windows", args.out, sizes)
    return EXIT_OK


def _send(args: argparse.Namespace) -> int:
    """Publish one control command; a command the protocol refuses is a usage error (exit 2)."""
    conn = connection(args, os.environ)
    try:
        cmd = _command(args)
        if cmd.cmd == "drift":
            DriftSettings.from_command(cmd)  # the simulator's own checks, before the broker
        if cmd.cmd == "fault" and not any(cmd.state in t.kind.classes for t in SIM_TYPES.values()):
            raise SimError(f"no simulated machine type has the class {cmd.state!r}")
    except (PayloadError, SimError) as exc:
        raise ConfigError(f"invalid command: {exc}") from exc
    send_command(conn.broker, conn.prefix, cmd, credentials=conn.credentials())
    return EXIT_OK


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT (Ctrl-C) and SIGTERM end the run cleanly (offline status, rate report)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in saved:
        signal.signal(sig, lambda signum, frame: stop.set())
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; a bad setting exits 2 (EXIT_USAGE), a failed run 1 (EXIT_FAILED)."""
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "dataset":
            return _dataset(args)
        return _send(args)
    except EdgeloopError as exc:
        return report(exc, log)


if __name__ == "__main__":
    sys.exit(main())
