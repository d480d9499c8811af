"""`python -m jetson_trainer` (console script `edgeloop-trainer`): the trainer's CLI.

keygen    --out DIR
train     --data DIR --out DIR [--arch compact|seed] [--epochs N] [--seed S]
          [--quantization int8|float16|float32] [--private-key PEM] [--version N] [--prefix P]
evaluate  --model BUNDLE (--data DIR [--split NAME] | --x X.npy --y Y.npy) [--json]
          [--public-key PEM | --insecure-dev]
finetune  --model BUNDLE (--data DIR | --x X.npy --y Y.npy) [--replay DIR] --out DIR
          [--keras PATH] [--labels-per-class K | --max-labels N] [--private-key PEM]
          [--public-key PEM | --insecure-dev] [--prefix P]
reissue   --model BUNDLE --version N --private-key PEM --out DIR [--prefix P]
          [--public-key PEM | --insecure-dev]   the fleet-wide rollback: an old model, new version
publish   --model BUNDLE [--broker HOST:PORT] [--prefix P] [--config FILE]
label     --machine M --class C [--from T] [--to T] [--id ID] [--cancel] [--broker HOST:PORT]
          a maintenance label event on <prefix>/labels (times: now, now-15m, epoch s, RFC 3339)
import    FILE… --out DIR [--maintenance LOG.csv] [--unlabeled-normal] [--sample-hz HZ]
          [--max-gap-s S] [--stride N] [--holdout F] [--channel-map OLD=NEW] [--report FILE]
          historian CSV (long or wide) / Parquet + maintenance log → a data set `train` reads
models    [--state-dir DIR] [--json]   the model history `serve` keeps in its --store DIR
serve     --store DIR --private-key PEM [--broker HOST:PORT] [--data DIR] [--config FILE] …
          the daemon: stores drift batches, fine-tunes, gates and publishes (see --help)

serve and publish also read EDGELOOP_<SETTING> env vars and a TOML --config file (top level or
a [trainer] table); flags win over env vars, which win over the file. Exit codes: 0 done,
1 failed, 2 bad setting, 3 input refused. TensorFlow is imported only by commands that train.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nodekit.cli import EXIT_FAILED, EXIT_OK, report
from nodekit.lifecycle import run_node
from nodekit.settings import add_arguments, flags_of, resolve
from protocol import DEFAULT_PREFIX, BundleError, ConfigError, EdgeloopError
from protocol.machine_type import MachineType

from .config import SECTION, ImportConfig, LabelConfig, PublishConfig, ServeConfig
from .errors import TrainerError

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("jetson_trainer")

_DEFAULT_FT_SPLIT = "drift_train"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edgeloop-trainer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    k = sub.add_parser("keygen", help="make an Ed25519 key pair for signing bundles")
    k.add_argument("--out", type=Path, required=True, help="directory for the two PEM files")
    k.add_argument("--force", action="store_true", help="overwrite an existing pair")

    t = sub.add_parser("train", help="train, convert, sign and report")
    t.add_argument("--data", type=Path, required=True, help="DIR with train_data.npy etc.")
    t.add_argument("--out", type=Path, required=True)
    t.add_argument(
        "--arch",
        choices=("auto", "compact", "seed", "rocket"),
        default="auto",
        help="auto (default): compact for windows up to 128 samples, rocket (random dilated "
        "convolutions, jetson_trainer/build/rocket.py) for longer ones",
    )
    t.add_argument("--epochs", type=int, default=40)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--quantization", choices=("int8", "float16", "float32"), default="int8")
    t.add_argument("--private-key", type=Path, help="sign with this key (else unsigned)")
    t.add_argument("--version", type=int, default=1, help="bundle version (monotonic)")
    _site_arg(t, DEFAULT_PREFIX)
    _type_args(t)
    t.add_argument(
        "--task",
        choices=("classify", "anomaly"),
        default="classify",
        help="classify (needs labeled faults) or anomaly: a cold start from the healthy class "
        "alone (jetson_trainer/build/anomaly.py)",
    )
    t.add_argument("--progress-bar", action="store_true", help="Keras per-batch progress bar")

    e = sub.add_parser("evaluate", help="run the TFLite model inside a bundle on labeled data")
    e.add_argument("--model", type=Path, required=True, help="model.bundle")
    e.add_argument("--data", type=Path, help="DIR with <split>_data.npy/_labels.npy")
    e.add_argument("--split", default="infer", help="split in --data (default infer)")
    e.add_argument("--x", type=Path, help="windows .npy (N, T, C)")
    e.add_argument("--y", type=Path, help="labels .npy (N,)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    _key_args(e)

    f = sub.add_parser("finetune", help="continue training on new labeled data → child bundle")
    f.add_argument("--model", type=Path, required=True, help="parent model.bundle")
    f.add_argument(
        "--keras", type=Path, help="parent Keras model (default: model.keras beside the bundle)"
    )
    f.add_argument("--data", type=Path, help=f"DIR with {_DEFAULT_FT_SPLIT}_* (and eval splits)")
    f.add_argument("--split", default=_DEFAULT_FT_SPLIT, help="split in --data to learn from")
    f.add_argument("--x", type=Path, help="new windows .npy")
    f.add_argument("--y", type=Path, help="new labels .npy")
    f.add_argument(
        "--replay",
        type=Path,
        help="DIR with train_* of the original data (default: --data if it has train_*)",
    )
    f.add_argument("--out", type=Path, required=True)
    g = f.add_mutually_exclusive_group()
    g.add_argument("--labels-per-class", type=int, help="labeled windows per class (default 12)")
    g.add_argument("--max-labels", type=int, help="labeled windows in total")
    f.add_argument("--epochs", type=int, default=40)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--private-key", type=Path, help="sign the child with this key")
    _key_args(f)
    _site_arg(f, None)

    r = sub.add_parser(
        "reissue",
        help="re-sign an old bundle's model as a new, higher version (fleet-wide rollback)",
        description="Pis refuse a bundle older than the newest they accepted, so to roll the "
        "fleet back, re-issue the old model under a higher version and publish that. With "
        "`serve` running, stop it, re-issue into its models DIR as vNNNN (the next version), "
        "and start it: the re-issued model is then its champion and is published retained.",
    )
    r.add_argument("--model", type=Path, required=True, help="the old model.bundle")
    r.add_argument("--version", type=int, required=True, help="the new version (above all)")
    r.add_argument("--private-key", type=Path, required=True, help="the trainer's signing key")
    r.add_argument("--out", type=Path, required=True, help="DIR for the re-issued bundle")
    _key_args(r)
    _site_arg(r, None)

    u = sub.add_parser("publish", help="send a bundle retained, QoS 1, to <prefix>/model/current")
    _config_arg(u)
    add_arguments(u, PublishConfig)
    lab = sub.add_parser(
        "label",
        help="send a maintenance label: machine, class, from, to (QoS 1 on <prefix>/labels)",
        description="Tell the Pis what a technician found: they label the windows of that "
        "machine and time they still hold and every new one inside it, and ship them to the "
        "trainer like any labeled window. Without --to the label holds until further notice "
        "(a later label of the machine ends it).",
    )
    _config_arg(lab)
    add_arguments(lab, LabelConfig)
    im = sub.add_parser(
        "import",
        help="historian export + maintenance log → a data set for train (no TensorFlow)",
        description="Resample historian samples (long or wide CSV, Parquet) per machine onto "
        "a grid, cut windows, label them from a maintenance log (machine, from, to, class) and "
        "write train/infer splits `train` reads, plus unlabeled_data.npy, windows.csv and "
        "import_report.json. See jetson_trainer/README.md, 'Importing plant history'. Every "
        "setting is also an EDGELOOP_IMPORT_<NAME> env var.",
    )
    im.add_argument(
        "inputs", nargs="*", type=Path, metavar="FILE", help="historian export(s) (CSV/Parquet)"
    )
    add_arguments(im, ImportConfig)
    mo = sub.add_parser(
        "models",
        help="the model history: versions, parents, status, labels, gate scores, deployments",
    )
    mo.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="the daemon's --store DIR (default: env EDGELOOP_STORE)",
    )
    mo.add_argument("--json", action="store_true", help="print one JSON list of the records")
    s = sub.add_parser(
        "serve",
        help="the trainer daemon: store drift batches, fine-tune, gate, publish",
        description="Persistent MQTT session; batches are acknowledged only once stored. "
        "Trains and publishes an initial model from --data if --models has none. Every "
        "setting is also an EDGELOOP_<NAME> env var and a key of the --config file.",
    )
    _config_arg(s)
    add_arguments(s, ServeConfig)
    return p


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help=f"TOML settings (top level or a [{SECTION}] table); env vars and flags override it",
    )


def _site_arg(p: argparse.ArgumentParser, default: str | None) -> None:
    keeps = f"default {default}" if default else "default: the parent bundle's"
    p.add_argument(
        "--prefix",
        dest="site",
        default=default,
        metavar="P",
        help=f"topic prefix (site) of the Pis the bundle is for; they refuse another site's "
        f"bundle ({keeps})",
    )


def _type_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--site-file",
        type=Path,
        metavar="FILE",
        help="the site's machine types (TOML, protocol/README.md 'Machine types'); default: "
        "the type in --data's classes.json, else the built-in type",
    )
    p.add_argument(
        "--machine-type",
        metavar="NAME",
        help="the data's machine type in --site-file (needed when it declares several)",
    )


def _key_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--public-key", type=Path, help="verify the bundle with this public key")
    g.add_argument(
        "--insecure-dev",
        action="store_true",
        help="accept unsigned / unverified bundles (development only)",
    )


def _eval_splits(
    *dirs: Path | None, kind: MachineType | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from .build.data import EVAL_SPLITS, load_split

    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for d in dirs:
        if d is None:
            continue
        for split in EVAL_SPLITS:
            got = load_split(d, split, kind)
            if got is not None and split not in out:
                out[split] = got
    return out


def _print_table(results: dict[str, dict[str, Any]], title: str) -> None:
    from rich.console import Console

    from .build.scores import metrics_table

    console = Console()
    console.width = max(console.width, 120)
    console.print(metrics_table(results, title))


def _cmd_keygen(args: argparse.Namespace) -> int:
    from .build.keys import generate_keypair

    priv, pub = generate_keypair(args.out, overwrite=args.force)
    log.info(
        "private key %s (mode 0600, keep it on the trainer); public key %s (copy to the Pis)",
        priv,
        pub,
    )
    return EXIT_OK


def _cmd_train(args: argparse.Namespace) -> int:
    _import_tensorflow(args.verbose)
    from .build.data import load_split, machine_type_of
    from .build.pipeline import run_train

    kind = machine_type_of(args.data, args.site_file, args.machine_type)
    got = load_split(args.data, "train", kind)
    if got is not None and args.task == "anomaly":
        from .build.anomaly import run_train_anomaly

        outcome = run_train_anomaly(
            *got,
            args.out,
            kind=kind,
            seed=args.seed,
            private_key=args.private_key,
            version=args.version,
            site=args.site,
        )
        r = outcome.report
        log.info(
            "anomaly model v%d: threshold %.3f, false alarms %.4f; bundle %s",
            r["version"],
            r["threshold"],
            r["false_alarm_rate"],
            outcome.bundle_path,
        )
        return EXIT_OK
    if got is None:
        raise TrainerError(
            f"{args.data} has no train_data.npy + train_labels.npy; generate "
            "them with `python -m sensor_sim dataset --out DIR`"
        )
    outcome = run_train(
        *got,
        args.out,
        arch=args.arch,
        epochs=args.epochs,
        seed=args.seed,
        quantization=args.quantization,
        private_key=args.private_key,
        version=args.version,
        site=args.site,
        eval_splits=_eval_splits(args.data, kind=kind),
        verbose=2 if args.progress_bar else 1,
        kind=kind,
    )
    r = outcome.report
    _print_table(
        r["splits"],
        f"{r['arch']} v{r['version']} ({r['shipped']}, "
        f"{r['params']} parameters, {r['train_seconds']:.1f} s on {r['device']})",
    )
    log.info("bundle %s", outcome.bundle_path)
    return EXIT_OK


def _load_xy(args: argparse.Namespace, split: str) -> tuple[np.ndarray, np.ndarray]:
    from .build.data import load_split, load_xy

    if args.x is not None or args.y is not None:
        if args.x is None or args.y is None or args.data is not None:
            raise ConfigError("give either --data DIR or both --x X.npy and --y Y.npy")
        return load_xy(args.x, args.y)
    if args.data is None:
        raise ConfigError("give --data DIR or --x X.npy --y Y.npy")
    got = load_split(args.data, split)
    if got is None:
        raise TrainerError(
            f"{args.data} has no {split}_data.npy + {split}_labels.npy (choose another --split)"
        )
    return got


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .build.artifacts import read_bundle
    from .build.pipeline import evaluate_model_bytes

    bundle = read_bundle(args.model, args.public_key, insecure_dev=args.insecure_dev)
    m = bundle.manifest
    x, y = _load_xy(args, args.split)
    if x.shape[1:] != m.input_shape:
        raise TrainerError(f"windows have shape {x.shape[1:]}, the model expects {m.input_shape}")
    metrics = evaluate_model_bytes(bundle.model, m.normalisation, x, y, m.machine())
    metrics.update(
        {"model_version": m.version, "quantization": m.quantization, "signed": bundle.signed}
    )
    if args.json:
        sys.stdout.write(json.dumps(metrics) + "\n")
    else:
        name = "x/y" if args.x is not None else args.split
        _print_table({name: metrics}, f"bundle v{m.version} ({m.arch}, {m.quantization})")
    return EXIT_OK


def _cmd_finetune(args: argparse.Namespace) -> int:
    _import_tensorflow(args.verbose)
    import keras

    from .build.artifacts import keras_path_for, read_bundle
    from .build.data import load_split
    from .build.pipeline import run_finetune

    parent = read_bundle(args.model, args.public_key, insecure_dev=args.insecure_dev)
    keras_model = keras.models.load_model(keras_path_for(args.model, args.keras))
    x_new, y_new = _load_xy(args, args.split)
    replay_dir = args.replay
    if replay_dir is None and args.data is not None and load_split(args.data, "train"):
        replay_dir = args.data
    replay = load_split(replay_dir, "train") if replay_dir is not None else None
    if replay is None:
        log.warning(
            "no replay data (--replay DIR with train_*): the model may forget the "
            "original conditions"
        )
    outcome = run_finetune(
        parent,
        keras_model,
        x_new,
        y_new,
        args.out,
        x_replay=replay[0] if replay else None,
        y_replay=replay[1] if replay else None,
        per_class=args.labels_per_class,
        max_labels=args.max_labels,
        epochs=args.epochs,
        seed=args.seed,
        private_key=args.private_key,
        eval_splits=_eval_splits(args.data, replay_dir),
        site=args.site,
    )
    r = outcome.report
    rows = {}
    for split, c in r["comparison"].items():
        rows[f"{split} parent v{r['parent']}"] = c["parent"]
        rows[f"{split} child v{r['version']}"] = c["child"]
    if rows:
        _print_table(rows, f"fine-tuned on {r['n_labeled']} labels + {r['n_replay']} replay")
    log.info(
        "child bundle %s (version %d, parent %d)", outcome.bundle_path, r["version"], r["parent"]
    )
    return EXIT_OK


def _settings(args: argparse.Namespace, cls: type) -> Any:
    """`cls` resolved from defaults < --config file < EDGELOOP_* env vars < flags."""
    return resolve(
        cls, file=args.config, section=SECTION, env=os.environ, flags=flags_of(args, cls)
    )


def _cmd_publish(args: argparse.Namespace) -> int:
    from protocol import decode_bundle

    from .daemon.publish import publish_bundle

    config: PublishConfig = _settings(args, PublishConfig)
    try:
        data = config.model.read_bytes()
    except OSError as exc:
        raise TrainerError(f"cannot read bundle {config.model}: {exc}") from exc
    bundle = decode_bundle(data, None, allow_unsigned=True)  # layout + checksum only
    if not bundle.signed:
        log.warning("publishing an UNSIGNED bundle; Pis refuse it unless run with --insecure-dev")
    if bundle.manifest.site != config.prefix:
        raise BundleError(
            f"bundle v{bundle.manifest.version} was made for site {bundle.manifest.site!r}, "
            f"not {config.prefix!r}: the Pis there would refuse it; publish it with --prefix "
            f"{bundle.manifest.site or '…'}, or re-issue it for this site (`reissue --prefix`)",
            kind="site",
        )
    topic = publish_bundle(
        data,
        config.broker,
        prefix=config.prefix,
        timeout=config.timeout,
        credentials=config.credentials(),
        machine_type=bundle.manifest.type_name,
    )
    log.info("bundle v%d is the retained model on %s", bundle.manifest.version, topic)
    return EXIT_OK


def _cmd_reissue(args: argparse.Namespace) -> int:
    from .build.artifacts import KERAS_NAME, read_bundle, reissue

    old = read_bundle(args.model, args.public_key, insecure_dev=args.insecure_dev)
    path = reissue(
        old,
        args.out,
        version=args.version,
        private_key=args.private_key,
        site=args.site,
        keras_path=Path(args.model).parent / KERAS_NAME,
    )
    log.info(
        "v%d is model v%d again, signed; send it with `publish --model %s`",
        args.version,
        old.manifest.version,
        path,
    )
    return EXIT_OK


def _cmd_models(args: argparse.Namespace) -> int:
    from .versions.registry import REGISTRY_NAME, Registry, format_table, parse_registry

    state = args.state_dir or (
        Path(os.environ["EDGELOOP_STORE"]) if os.environ.get("EDGELOOP_STORE") else None
    )
    if state is None:
        raise ConfigError("give --state-dir DIR: the --store DIR of `serve` (or EDGELOOP_STORE)")
    if not state.is_dir():
        raise TrainerError(f"{state} is not a directory; give the --store DIR of `serve`")
    path = state / REGISTRY_NAME
    try:
        reg, refused = parse_registry(path.read_text(encoding="utf-8", errors="replace"))
    except FileNotFoundError:
        log.warning("no model history in %s yet (%s): `serve` writes it", state, REGISTRY_NAME)
        reg, refused = Registry(), []
    except OSError as exc:
        raise TrainerError(f"cannot read {path}: {exc}") from exc
    if refused:
        log.error("%s: skipped %d damaged line(s): %s", path, len(refused), "; ".join(refused[:5]))
    if args.json:
        sys.stdout.write(json.dumps([m.to_dict() for m in reg.records]) + "\n")
    else:
        sys.stdout.write(format_table(reg) + "\n")
    return EXIT_OK


def _cmd_label(args: argparse.Namespace) -> int:
    import time

    from protocol import Topics
    from protocol.labels import LabelEvent, parse_when

    from .daemon.publish import publish_message

    config: LabelConfig = _settings(args, LabelConfig)
    now = time.time()
    event = LabelEvent(
        config.machine,
        config.label_class,
        parse_when(config.start, now),
        None if config.end is None else parse_when(config.end, now),
        config.label_id or "",
        "cancel" if config.cancel else "set",
        config.source,
        now,
    )
    topic = Topics(config.prefix).labels
    publish_message(
        event.to_json(),
        config.broker,
        topic,
        "label event",
        timeout=config.timeout,
        credentials=config.credentials(),
    )
    log.info("label %s sent on %s: %s", event.label_id, topic, event.to_json().decode())
    return EXIT_OK


def _cmd_import(args: argparse.Namespace) -> int:
    from .historian.command import run_import

    flags = flags_of(args, ImportConfig)
    if args.inputs:
        given = [p for p in str(flags.pop("signals", "")).split(",") if p.strip()]
        flags["signals"] = [*given, *(str(p) for p in args.inputs)]
    config: ImportConfig = resolve(ImportConfig, env=os.environ, flags=flags)
    run_import(config)
    return EXIT_OK


def _cmd_serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    config: ServeConfig = _settings(args, ServeConfig)
    _import_tensorflow(args.verbose)
    from .daemon.serve import TrainerDaemon

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    daemon = TrainerDaemon(config)
    console = None
    if config.dashboard:
        from rich.console import Console

        console = Console()
        if console.is_terminal:
            from rich.logging import RichHandler

            root = logging.getLogger()
            for h in list(root.handlers):
                root.removeHandler(h)
            root.addHandler(RichHandler(console=console, show_path=False))
        else:
            console = None
    daemon.start().start_policy()
    metrics = None
    try:
        if config.metrics_port is not None:  # prometheus-client is imported only then
            from nodekit.metrics_server import MetricsServer

            from .daemon.prometheus import daemon_families

            metrics = MetricsServer(
                lambda: daemon_families(daemon),
                config.metrics_host,
                config.metrics_port,
                faults=daemon.faults,
                where="trainer-metrics",
            )
    except BaseException:
        daemon.stop()
        raise
    live = None
    if console is not None:
        from rich.live import Live

        from .daemon.dashboard import render

        live = Live(
            get_renderable=lambda: render(daemon.snapshot()), console=console, refresh_per_second=2
        )
    try:
        return run_node(daemon, stop, name="serve", log=log, every_s=0.5, live=live)
    finally:
        if metrics is not None:
            metrics.close()


_COMMANDS = {
    "keygen": _cmd_keygen,
    "train": _cmd_train,
    "evaluate": _cmd_evaluate,
    "finetune": _cmd_finetune,
    "publish": _cmd_publish,
    "reissue": _cmd_reissue,
    "label": _cmd_label,
    "import": _cmd_import,
    "models": _cmd_models,
    "serve": _cmd_serve,
}


def _quiet(verbose: bool) -> None:
    """Silence TensorFlow's C++ log, absl, Keras retracing notes and Python warnings unless -v.

    Must run before TensorFlow is imported: its C++ side reads TF_CPP_MIN_LOG_LEVEL once.
    """
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.simplefilter("ignore")
    for name in ("tensorflow", "absl", "keras", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _import_tensorflow(verbose: bool) -> None:
    """Import TensorFlow now, for a command that trains, with fd 2 muted unless -v.

    TensorFlow's C++ side prints its oneDNN banner through absl before absl logging is set up,
    which ignores TF_CPP_MIN_LOG_LEVEL (abseil/abseil-cpp#1957); muting the import hides it.
    """
    if verbose:
        import tensorflow

        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code (nodekit.cli: 0 ok, 1 failed, 2 usage, 3 refused)."""
    args = _parser().parse_args(argv)
    _quiet(args.verbose)
    root = logging.getLogger()
    if not root.handlers:
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(console=Console(stderr=True), show_path=False)
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return _COMMANDS[args.command](args)
    except EdgeloopError as exc:
        return report(exc, log)
    except (OSError, ValueError) as exc:
        # unreadable or malformed input files (numpy, Keras): say which, exit as failed
        log.error("error: %s", exc)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
