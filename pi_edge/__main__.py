"""`python -m pi_edge` (console script `edgeloop-edge`): run | evaluate | rollback.

Exit codes: 0 ok, 1 a runtime error (model refused, evaluation failed), 2 bad settings.
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
from pathlib import Path
from typing import Any

from protocol import EdgeloopError, load_public_key

from . import __version__
from .config import ENV, EdgeConfig
from .errors import ConfigError, EdgeError

log = logging.getLogger("pi_edge")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgeloop-edge", description="edgeloop's Pi classifier")
    p.add_argument("--version", action="version", version=f"pi_edge {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="classify live windows from MQTT",
        description="Settings: defaults < --config TOML < EDGELOOP_* env < flags. "
        f"Env vars: {', '.join(ENV)}.",
        argument_default=argparse.SUPPRESS,
    )
    run.add_argument("--config", type=Path, help="TOML file of settings (unknown keys refused)")
    run.add_argument("--broker", help="HOST:PORT of the MQTT broker (default 127.0.0.1:1883)")
    run.add_argument("--prefix", help="topic prefix (default edgeloop/v1)")
    run.add_argument("--node", help="node id for the status topic and MQTT client id")
    run.add_argument("--machines", help="'+' (all) or a comma-separated list of machine ids")
    run.add_argument(
        "--shared-group",
        dest="shared_group",
        help="MQTT 5 shared subscription group to split machines across nodes",
    )
    run.add_argument(
        "--public-key",
        dest="public_key",
        type=Path,
        help="trainer's Ed25519 public key (PEM/hex/raw) that bundles must verify with",
    )
    run.add_argument(
        "--insecure-dev",
        dest="insecure_dev",
        action="store_true",
        help="accept unsigned bundles (development only)",
    )
    run.add_argument("--model", type=Path, help="bundle to start from if the state dir has none")
    run.add_argument(
        "--state-dir",
        dest="state_dir",
        type=Path,
        help="where the last good and previous models live",
    )
    run.add_argument("--threads", type=int, help="interpreter threads (default 1)")
    run.add_argument("--batch-max", dest="batch_max", type=int, help="windows per invoke (32)")
    run.add_argument(
        "--batch-wait-ms",
        dest="batch_wait_ms",
        type=float,
        help="under load, wait up to M ms for a batch to fill (1; 0: take what is queued)",
    )
    run.add_argument(
        "--batch-wait-above",
        dest="batch_wait_above_per_s",
        type=float,
        help="windows/s above which the worker waits for batches to fill (2000; 0: always)",
    )
    run.add_argument(
        "--queue-size",
        dest="queue_size",
        type=int,
        help="inbox capacity; when full the oldest window is dropped (2048)",
    )
    run.add_argument(
        "--status-interval",
        dest="status_interval_s",
        type=float,
        help="seconds between status messages (2)",
    )
    run.add_argument(
        "--low-confidence",
        dest="low_confidence",
        type=float,
        help="confidence below which a window is flagged and kept (0.6)",
    )
    run.add_argument(
        "--buffer-max-rows",
        dest="buffer_max_rows",
        type=int,
        help="kept windows on disk before the oldest unlabeled go (50000)",
    )
    run.add_argument(
        "--keep-flagged-per-s",
        dest="keep_flagged_per_s",
        type=float,
        help="flagged (unlabeled) windows kept per machine per second (1); labeled: all",
    )
    run.add_argument(
        "--no-dashboard",
        dest="dashboard",
        action="store_false",
        help="service mode: plain logs, no live view",
    )

    ev = sub.add_parser("evaluate", help="score a bundle on labelled windows")
    ev.add_argument("--model", type=Path, required=True, help="bundle file")
    ev.add_argument("--x", type=Path, required=True, help="windows .npy (n, T, C) raw float32")
    ev.add_argument("--y", type=Path, required=True, help="labels .npy (n,) ints or class names")
    ev.add_argument("--public-key", type=Path, help="verify the bundle with this key")
    ev.add_argument("--insecure-dev", action="store_true", help="accept an unsigned bundle")
    ev.add_argument("--png", type=Path, help="write the confusion matrix as a PNG here")
    ev.add_argument("--threads", type=int, default=1)
    ev.add_argument("--json", action="store_true", help="print one JSON object")

    rb = sub.add_parser("rollback", help="swap current and previous model in the state dir")
    rb.add_argument(
        "--state-dir",
        type=Path,
        help="state dir (default $EDGELOOP_STATE_DIR or ~/.local/state/...)",
    )
    ex = sub.add_parser("export", help="write the local prediction history as CSV or JSON lines")
    ex.add_argument("--since", help="only predictions newer than this, e.g. 15m, 1h, 7d (all)")
    ex.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    ex.add_argument("--out", type=Path, help="file to write (default: standard output)")
    ex.add_argument(
        "--state-dir",
        type=Path,
        help="state dir (default $EDGELOOP_STATE_DIR or ~/.local/state/...)",
    )
    return p


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


def build_config(args: argparse.Namespace, env: dict[str, str] | None = None) -> EdgeConfig:
    """defaults < --config < env < flags."""
    cfg = EdgeConfig()
    given = vars(args)
    if "config" in given:
        cfg = EdgeConfig.from_toml(given["config"], cfg)
    cfg = EdgeConfig.from_env(os.environ if env is None else env, cfg)
    flags = {
        k: v
        for k, v in given.items()
        if k in set(EdgeConfig.keys()) - {"command", "verbose", "config"}
    }
    return EdgeConfig.from_dict(flags, cfg)


def _run(args: argparse.Namespace) -> int:
    cfg = build_config(args)
    console = None
    if cfg.dashboard:
        from rich.console import Console

        console = Console(stderr=False)
        if not console.is_terminal:
            console = None
    _setup_logging(args.verbose, console)
    if cfg.public_key is None and not cfg.insecure_dev:
        raise ConfigError(
            "no public key: pass --public-key PATH (or EDGELOOP_PUBLIC_KEY) so "
            "bundles can be verified, or --insecure-dev for development only"
        )
    public_key = load_public_key(cfg.public_key) if cfg.public_key is not None else None
    if cfg.insecure_dev:
        log.warning("--insecure-dev: unsigned model bundles will be accepted")
    from .service import EdgeService

    stop = threading.Event()

    def _handle(signum: int, frame: object) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError):  # ValueError: not the main thread (a test)
            signal.signal(sig, _handle)
    service = EdgeService(cfg, public_key=public_key).start()
    try:
        if console is not None:
            from rich.live import Live

            from .dashboard import render

            with Live(
                get_renderable=lambda: render(service.snapshot()),
                console=console,
                refresh_per_second=4,
                transient=False,
                redirect_stderr=False,
            ):
                while not stop.wait(0.25):
                    pass
        else:
            stop.wait()
    finally:
        service.stop()
        log.info("pi_edge stopped")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from .evaluate import evaluate

    _setup_logging(args.verbose)
    if args.public_key is None and not args.insecure_dev:
        raise ConfigError("pass --public-key PATH to verify the bundle, or --insecure-dev")
    key = load_public_key(args.public_key) if args.public_key else None
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
        allow_unsigned=args.insecure_dev,
        threads=args.threads,
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


def _rollback(args: argparse.Namespace) -> int:
    from .config import default_state_dir
    from .models import ModelStore

    _setup_logging(args.verbose)
    state_dir = args.state_dir or Path(os.environ.get("EDGELOOP_STATE_DIR") or default_state_dir())
    from_v, to_v = ModelStore(state_dir).rollback()
    log.info(
        "rolled back from model v%s to v%s in %s; a running node loads it within one "
        "status interval, and will not re-install v%s from the retained topic",
        from_v,
        to_v,
        state_dir,
        from_v,
    )
    return 0


def _export(args: argparse.Namespace) -> int:
    from .config import default_state_dir
    from .history import PredictionHistory, export, parse_duration

    _setup_logging(args.verbose)
    state_dir = args.state_dir or Path(os.environ.get("EDGELOOP_STATE_DIR") or default_state_dir())
    path = state_dir / "history.sqlite"
    if not path.exists():
        raise ConfigError(f"no prediction history at {path}; run `pi_edge run` with this state dir")
    try:
        since = parse_duration(args.since) if args.since else None
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    history = PredictionHistory(path)
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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "evaluate":
            return _evaluate(args)
        if args.command == "export":
            return _export(args)
        return _rollback(args)
    except ConfigError as exc:
        logging.getLogger("pi_edge").error("%s", exc)
        if not logging.getLogger().handlers:
            sys.stderr.write(f"error: {exc}\n")
        return 2
    except EdgeloopError as exc:
        logging.getLogger("pi_edge").error("%s", exc)
        if not logging.getLogger().handlers:
            sys.stderr.write(f"error: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
