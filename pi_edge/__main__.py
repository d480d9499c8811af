"""`python -m pi_edge` (console script `edgeloop-edge`): run | evaluate | rollback | export |
recover-buffer.

Exit codes are edgeloop's shared table (nodekit.cli): 0 ok, 1 failed, 2 bad setting, 3 refused.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nodekit.cli import EXIT_OK, report
from nodekit.lifecycle import run_node
from nodekit.proc import limit_malloc_arenas
from nodekit.settings import add_arguments, flags_of, resolve
from protocol import BundleError, ConfigError, EdgeloopError, check_id
from protocol.bundle import load_public_keys

from . import __version__
from .config import SECTION, EdgeConfig
from .errors import EdgeError

# A render of the dashboard costs ~10-20 ms of CPU (rich lays out the whole table); at 4 Hz that
# doubled a node's CPU at the demo's 160 windows/s (bench/demo_load.py), at 1 Hz it is a quarter.
DASHBOARD_HZ = 1

log = logging.getLogger("pi_edge")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgeloop-edge", description="edgeloop's Pi classifier")
    p.add_argument("--version", action="version", version=f"pi_edge {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="classify live windows from MQTT",
        description="Settings: defaults < --config TOML < EDGELOOP_* env < flags; each flag "
        "names its environment variable, and each setting's name is its config-file key.",
    )
    _config_arg(run)
    add_arguments(run, EdgeConfig)

    ev = sub.add_parser("evaluate", help="score a bundle on labelled windows")
    ev.add_argument("--model", type=Path, required=True, help="bundle file")
    ev.add_argument("--x", type=Path, required=True, help="windows .npy (n, T, C) raw float32")
    ev.add_argument("--y", type=Path, required=True, help="labels .npy (n,) ints or class names")
    ev.add_argument("--png", type=Path, help="write the confusion matrix as a PNG here")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    add_arguments(ev, EdgeConfig, only=("public_key", "insecure_dev", "threads"))

    rb = sub.add_parser(
        "rollback",
        help="make the previous model current in the state dir, block the current version",
    )
    rb.add_argument(
        "--from",
        dest="from_version",
        type=int,
        metavar="VERSION",
        help="roll back only if current.bundle is this version (else exit 1, nothing changed)",
    )
    rb.add_argument(
        "--type",
        dest="machine_type",
        default="default",
        metavar="TYPE",
        help="the machine type whose model to roll back (default: the built-in type 'default'; "
        "another type's models live in STATE_DIR/types/TYPE)",
    )
    _config_arg(rb)
    add_arguments(rb, EdgeConfig, only=("state_dir",))
    ex = sub.add_parser("export", help="write the local prediction history as CSV or JSON lines")
    ex.add_argument("--since", help="only predictions newer than this, e.g. 15m, 1h, 7d (all)")
    ex.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    ex.add_argument("--out", type=Path, help="file to write (default: standard output)")
    _config_arg(ex)
    add_arguments(ex, EdgeConfig, only=("state_dir",))
    rc = sub.add_parser(
        "recover-buffer",
        help="queue the windows of a moved-aside buffer file for shipping again",
        description="A corrupt buffer.sqlite is moved aside to buffer.sqlite.corrupt-<time> "
        "and kept; this copies every readable, valid window from such a file into the state "
        "dir's buffer (a running node ships them; duplicates are ignored).",
    )
    rc.add_argument("file", type=Path, help="the moved-aside buffer file")
    _config_arg(rc)
    add_arguments(rc, EdgeConfig, only=("state_dir",))
    ha = sub.add_parser(
        "ha-remove",
        help="remove a node's Home Assistant discovery configs (empty retained payloads)",
        description="Clears the retained discovery configs of --node of the site --prefix: with "
        "--machines those machines' sensors; without (or '+') every config of the site found "
        "under the node's topic level, the node's own too. Configs an older edgeloop published "
        "(ids not scoped by site, level <ha-prefix>/sensor/<node>/) are cleared as well, those "
        "that read --prefix's topics only. Stop the node (or run it without --ha-discovery) "
        "first, or it publishes them again.",
    )
    ha.add_argument(
        "--settle",
        type=float,
        default=1.0,
        help="seconds without a new retained config before the search for them ends (default 1)",
    )
    _config_arg(ha)
    add_arguments(ha, EdgeConfig, only=_HA_REMOVE_SETTINGS)
    return p


_HA_REMOVE_SETTINGS = (
    "broker",
    "prefix",
    "node",
    "machines",
    "ha_prefix",
    "mqtt_user",
    "mqtt_password_file",
    "mqtt_ca_file",
    "mqtt_cert_file",
    "mqtt_key_file",
    "mqtt_tls",
)


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", type=Path, help=f"TOML file of settings (top level or [{SECTION}] table)"
    )


def _setup_logging(verbose: bool, console: Any = None) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    root = logging.getLogger()
    root.setLevel(level)
    for h in list(root.handlers):
        if getattr(h, "_pi_edge", False):
            root.removeHandler(h)
    handler: logging.Handler
    if console is not None:
        from rich.logging import RichHandler

        handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    setattr(handler, "_pi_edge", True)  # noqa: B010 - tags our handler for removal
    root.addHandler(handler)


def build_config(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> EdgeConfig:
    """defaults < --config < env < flags."""
    config: EdgeConfig = resolve(
        EdgeConfig,
        file=getattr(args, "config", None),
        section=SECTION,
        env=os.environ if env is None else env,
        flags=flags_of(args, EdgeConfig),
    )
    return config


def _run(args: argparse.Namespace) -> int:
    limit_malloc_arenas()  # before any thread starts: less resident memory on a Pi
    cfg = build_config(args)
    console = None
    if cfg.report.dashboard:
        from rich.console import Console

        console = Console(stderr=False)
        if not console.is_terminal:
            console = None
    _setup_logging(args.verbose, console)
    if cfg.models.public_key is None and not cfg.models.insecure_dev:
        raise ConfigError(
            "no public key: pass --public-key PATH (or EDGELOOP_PUBLIC_KEY) so "
            "bundles can be verified, or --insecure-dev for development only"
        )
    public_key = _public_key(cfg.models.public_key)
    if cfg.models.insecure_dev:
        log.warning(
            "--insecure-dev: no public key, model bundles are accepted unverified (unsigned "
            "ones too); development only"
        )
    from .service import EdgeService

    stop = threading.Event()

    def _handle(signum: int, frame: object) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError):  # ValueError: not the main thread (a test)
            signal.signal(sig, _handle)
    service = EdgeService(cfg, public_key=public_key).start()
    live = None
    if console is not None:
        from rich.live import Live

        from .report.dashboard import render

        live = Live(
            get_renderable=lambda: render(service.snapshot()),
            console=console,
            refresh_per_second=DASHBOARD_HZ,
            transient=False,
            redirect_stderr=False,
        )
    try:
        return run_node(service, stop, name="pi_edge", log=log, live=live)
    finally:
        log.info("pi_edge stopped")


def _evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from .model.evaluate import evaluate

    _setup_logging(args.verbose)
    cfg = build_config(args)
    if cfg.models.public_key is None and not cfg.models.insecure_dev:
        raise ConfigError("pass --public-key PATH to verify the bundle, or --insecure-dev")
    key = _public_key(cfg.models.public_key)
    try:
        x = np.load(args.x, allow_pickle=False)
        y = np.load(args.y, allow_pickle=False)
        bundle = args.model.read_bytes()
    except (OSError, ValueError) as exc:
        raise EdgeError(f"cannot read the evaluation inputs: {exc}") from exc
    result = evaluate(
        bundle,
        x,
        y,
        public_key=key,
        allow_unsigned=cfg.models.insecure_dev,
        threads=cfg.models.threads,
        png=args.png,
    )
    if args.json:
        sys.stdout.write(json.dumps(result.to_dict()) + "\n")
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        f"model v{result.model_version} on {result.runtime}: {result.n} windows, "
        f"accuracy {result.accuracy:.4f}, macro F1 {result.macro_f1:.4f}"
    )
    console.print(
        f"µs/window (batch 1): p50 {result.us_per_window_p50:.0f}, p99 "
        f"{result.us_per_window_p99:.0f}; batched {result.us_per_window_batched:.0f}"
    )
    table = Table(title="confusion (rows = truth, columns = predicted)")
    table.add_column("")
    for c in result.classes:
        table.add_column(c, justify="right")
    for c, row in zip(result.classes, result.confusion, strict=True):
        table.add_row(c, *(str(v) for v in row))
    console.print(table)
    if result.png:
        console.print(f"confusion matrix PNG: {result.png}")
    return 0


def _public_key(path: Path | None) -> tuple[bytes, ...] | None:
    """The configured key(s), checked (small-order keys refused); a bad one is a ConfigError."""
    if path is None:
        return None
    try:
        return load_public_keys(path)
    except BundleError as exc:
        raise ConfigError(f"--public-key: {exc}") from exc


def _rollback(args: argparse.Namespace) -> int:
    from .model.state_dir import ModelStore

    _setup_logging(args.verbose)
    state_dir = build_config(args).state_dir
    if args.machine_type != "default":  # another machine type's models (pi_edge --site/--types)
        state_dir = state_dir / "types" / check_id(args.machine_type, "machine type")
    from_v, to_v = ModelStore(state_dir).rollback(expect_from=args.from_version)
    log.info(
        "rolled back from model v%s to v%s in %s; a running node loads it within one status "
        "interval and keeps it across restarts (current.bundle is the operator's own, trusted "
        "below the high-water mark); it will not re-install v%s from the retained topic, and "
        "refuses any older bundle from the network",
        "?" if from_v is None else from_v,
        "?" if to_v is None else to_v,
        state_dir,
        "?" if from_v is None else from_v,
    )
    if from_v is None:
        log.warning(
            "the version rolled back from is unknown (a state dir from an older pi_edge), so "
            "it is not blocked: a retained copy of it may come back"
        )
    return 0


def _export(args: argparse.Namespace) -> int:
    from .report.history_store import PredictionHistory, export, parse_duration

    _setup_logging(args.verbose)
    state_dir = build_config(args).state_dir
    path = state_dir / "history.sqlite"
    if not path.exists():
        raise ConfigError(f"no prediction history at {path}; run `pi_edge run` with this state dir")
    try:
        since = parse_duration(args.since) if args.since else None
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    history = PredictionHistory(path, heal=False)  # a running node may own the file
    try:
        text = export(history.rows(since_s=since), args.format)
    finally:
        history.close()
    if args.out:
        args.out.write_text(text)
        log.info(
            "wrote %d prediction(s) to %s", text.count("\n") - (args.format == "csv"), args.out
        )
    else:
        sys.stdout.write(text)
    return 0


def _recover_buffer(args: argparse.Namespace) -> int:
    from .loop.buffer import DurableBuffer, recover

    _setup_logging(args.verbose)
    if not args.file.is_file():
        raise ConfigError(f"no file {args.file}; pass a buffer.sqlite.corrupt-<time> file")
    path = build_config(args).state_dir / "buffer.sqlite"
    buffer = DurableBuffer(path)
    try:
        added, skipped = recover(args.file, buffer)
    finally:
        buffer.close()
    log.info(
        "queued %d window(s) from %s in %s (%d unreadable, invalid or already there); "
        "keep the file until the trainer has them",
        added,
        args.file,
        path,
        skipped,
    )
    return EXIT_OK


def _ha_remove(args: argparse.Namespace) -> int:
    from nodekit.mqtt import connect, make_client, start_loop

    from .report.home_assistant import remove

    _setup_logging(args.verbose)
    cfg = build_config(args)
    machines = None if "+" in cfg.intake.machines else cfg.intake.machines
    client = make_client(f"{cfg.node}-ha-remove-{os.getpid()}"[:64])  # never the node's own id
    link = connect(client, cfg.broker, credentials=cfg.credentials().for_("cli"))
    start_loop(client)
    try:
        link.wait(10.0)
        cleared = remove(
            client,
            cfg.node,
            cfg.report.ha_prefix,
            machines,
            cfg.prefix,
            settle_s=max(args.settle, 0.0),
        )
    finally:
        client.disconnect()
        client.loop_stop()
    for topic in cleared:
        log.info("cleared %s", topic)
    log.info(
        "removed %d Home Assistant discovery config(s) of node %s under %s/",
        len(cleared),
        cfg.node,
        cfg.report.ha_prefix,
    )
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code (nodekit.cli: 0 ok, 1 failed, 2 usage, 3 refused)."""
    args = _parser().parse_args(argv)
    commands = {
        "run": _run,
        "evaluate": _evaluate,
        "export": _export,
        "rollback": _rollback,
        "recover-buffer": _recover_buffer,
        "ha-remove": _ha_remove,
    }
    try:
        return commands[args.command](args)
    except EdgeloopError as exc:
        return report(exc, log)


if __name__ == "__main__":
    sys.exit(main())
