"""`python -m sensor_sim` / `edgeloop-sim`: the live simulator, its control commands, data sets.

run      the live simulator (dashboard unless --no-dashboard)
drift    send a drift command           fault   force a fault state
repair   repair machines                labels  set the ground-truth label fraction
dataset  write seed 000's eight .npy files and classes.json
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from protocol import CHANNELS, CLASSES, DRIFT_MODES, Command, EdgeloopError, PayloadError
from protocol.mqtt import parse_address

from ._errors import SimError
from .dataset import DEFAULT_SIZES, write_datasets
from .fleet import FleetConfig
from .publisher import SimConfig, Simulator, send_command

log = logging.getLogger("sensor_sim")

EXIT_OK, EXIT_ERROR = 0, 2


def _broker(value: str) -> str:
    try:
        parse_address(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return value


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


def _connection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--broker",
        type=_broker,
        default=os.environ.get("EDGELOOP_BROKER", "127.0.0.1:1883"),
        help="MQTT broker HOST:PORT (default: $EDGELOOP_BROKER or %(default)s)",
    )
    p.add_argument(
        "--prefix",
        default=os.environ.get("EDGELOOP_PREFIX", "edgeloop/v1"),
        help="topic prefix (default: $EDGELOOP_PREFIX or %(default)s)",
    )


def _target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--machines",
        type=_machines,
        default=("all",),
        help="comma-separated machine ids (m01,m02) or 'all' (default)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeloop-sim",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run the live simulator",
        description="Publish windows from N simulated machines and obey commands on …/sim/control.",
    )
    _connection_args(run)
    run.add_argument("--machines", type=int, default=16, help="machine count (default 16)")
    run.add_argument(
        "--hz", type=float, default=10.0, help="windows per second per machine (default 10)"
    )
    run.add_argument(
        "--label-fraction",
        type=float,
        default=0.05,
        help="share of windows carrying the true label (default 0.05)",
    )
    run.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    run.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help="seconds to run, 0 = until q / Ctrl-C (default 0)",
    )
    run.add_argument("--window-length", type=int, default=60, help="samples per window")
    run.add_argument(
        "--fault-mtbf",
        type=float,
        default=300.0,
        help="mean seconds between spontaneous faults per machine, 0 = never",
    )
    run.add_argument(
        "--repair-mean",
        type=float,
        default=60.0,
        help="mean seconds until a spontaneous fault is repaired",
    )
    run.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        help="seconds to wait for the broker before giving up (default 10)",
    )
    run.add_argument("--node", default="simulator", help="node id for the status topic")
    run.add_argument(
        "--max-rate",
        action="store_true",
        help="ignore --hz and publish as fast as possible (measures the ceiling)",
    )
    run.add_argument(
        "--no-dashboard",
        action="store_true",
        help="log lines instead of the live dashboard (also when stdout is not a terminal)",
    )

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
        help=f"offset/gain: a channel ({', '.join(CHANNELS)}); "
        "ramp: duration_s; regime: load. Repeat for several.",
    )

    fault = sub.add_parser(
        "fault",
        help="force machines into a state",
        description="Publish a fault command to …/sim/control (QoS 1).",
    )
    _connection_args(fault)
    _target_args(fault)
    fault.add_argument("--state", required=True, choices=CLASSES)

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
    dataset.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    dataset.add_argument(
        "--size",
        type=_key_value,
        action="append",
        default=[],
        metavar="SPLIT=N",
        help=f"override a split size, e.g. train=400 (defaults {dict(DEFAULT_SIZES)})",
    )
    return parser


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
    if args.command == "drift":
        return Command("drift", machines=args.machines, mode=args.mode, params=dict(args.param))
    if args.command == "fault":
        return Command("fault", machines=args.machines, state=args.state)
    if args.command == "repair":
        return Command("repair", machines=args.machines)
    return Command("labels", params={"fraction": args.fraction})


def _run(args: argparse.Namespace) -> int:
    config = SimConfig(
        broker=args.broker,
        prefix=args.prefix,
        node=args.node,
        hz=args.hz,
        seed=args.seed,
        duration_s=args.duration,
        max_rate=args.max_rate,
        connect_timeout_s=args.connect_timeout,
        fleet=FleetConfig(
            machines=args.machines,
            label_fraction=args.label_fraction,
            mtbf_s=args.fault_mtbf,
            repair_s=args.repair_mean,
            window_length=args.window_length,
        ),
    )
    stop = threading.Event()
    dashboard = not args.no_dashboard and sys.stdout.isatty()
    sim = Simulator(config)
    with _stop_on_signals(stop), sim:
        if dashboard:
            from rich.console import Console

            from .dashboard import run_live

            console = Console()
            _setup_logging(args.verbose, console)
            report = run_live(sim, console, stop)
        else:
            report = sim.run(stop)
    print(report.describe())
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
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "dataset":
            sizes = {name: int(n) for name, n in args.size}
            bad = [f"{name}={n:g}" for name, n in args.size if n != int(n) or n < 0]
            if bad:
                raise SimError(f"--size {bad} must be whole numbers ≥ 0")
            shapes = write_datasets(args.out, args.seed, sizes)
            for name, shape in shapes.items():
                print(f"{name}: {shape} -> {args.out / (name + '_data.npy')}")
            return EXIT_OK
        cmd = _command(args)
        send_command(args.broker, args.prefix, cmd)
        print(f"sent {cmd.to_json().decode()}")
        return EXIT_OK
    except PayloadError as exc:
        log.error("invalid command: %s", exc)
        return EXIT_ERROR
    except (SimError, EdgeloopError, ValueError) as exc:
        log.error("%s", exc)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
