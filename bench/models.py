"""Seed 000's CNN against edgeloop's compact net, trained on the same data in one run.

    python -m bench.models [--epochs 40] [--seed-epochs N] [--seed 0] [--labels-per-class 12]
                           [--json PATH]

Generates the seed-size data set (sensor_sim.dataset.write_datasets: 5,000 train, 1,000 infer,
2,000 drift_train, 800 drift_infer windows) into a temp dir, trains both architectures, ships
int8, fine-tunes each with 12 labeled drift windows per class (48) plus 1,000 replay windows,
and prints: parameters, .tflite size, µs/window (LiteRT, 1 thread, batch 1 and 32), accuracy
on infer and drift_infer before and after fine-tuning, training and fine-tuning seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

log = logging.getLogger("bench.models")

ARCHS = ("seed", "compact")


def run(
    out: Path, *, epochs: int, seed: int, per_class: int, seed_epochs: int | None = None
) -> list[dict[str, Any]]:
    """Train, ship and fine-tune each arch; `seed_epochs` (default `epochs`) caps seed 000's."""
    from jetson_trainer.build.data import load_split
    from jetson_trainer.build.interpreter import micros_per_window
    from jetson_trainer.build.keys import generate_keypair
    from jetson_trainer.build.pipeline import run_finetune, run_train
    from protocol import decode_bundle
    from sensor_sim.dataset import write_datasets

    data = out / "data"
    write_datasets(data, seed=seed)

    def need(split: str) -> tuple[Any, Any]:
        got = load_split(data, split)
        if got is None:
            raise SystemExit(f"sensor_sim.dataset wrote no {split}_* files to {data}")
        return got

    private_key, _ = generate_keypair(out / "keys", overwrite=True)
    x, y = need("train")
    evals = {s: need(s) for s in ("infer", "drift_infer")}
    drift = need("drift_train")
    rows = []
    for arch in ARCHS:
        arch_epochs = seed_epochs if arch == "seed" and seed_epochs else epochs
        log.info("training %s (%d epochs at most)", arch, arch_epochs)
        trained = run_train(
            x,
            y,
            out / arch,
            arch=arch,
            epochs=arch_epochs,
            seed=seed,
            eval_splits=evals,
            private_key=private_key,
            figures=True,
            verbose=0,
        )
        parent = decode_bundle(
            (out / arch / "model.bundle").read_bytes(), None, allow_unsigned=True
        )
        norm, x_infer = parent.manifest.normalisation, evals["infer"][0]
        us1 = micros_per_window(parent.model, norm, x_infer, batch=1, repeats=2000)
        us32 = micros_per_window(parent.model, norm, x_infer, batch=32, repeats=300)
        log.info("fine-tuning %s", arch)
        tuned = run_finetune(
            parent,
            trained.keras_model,
            *drift,
            out / f"{arch}_ft",
            x_replay=x,
            y_replay=y,
            per_class=per_class,
            epochs=arch_epochs,
            seed=seed,
            private_key=private_key,
            eval_splits=evals,
            figures=True,
        )
        cmp = tuned.report["comparison"]
        r = trained.report
        rows.append(
            {
                "arch": arch,
                "params": r["params"],
                "tflite_bytes": parent.manifest.model_bytes,
                "us_b1": us1,
                "us_b32": us32,
                "infer_before": cmp["infer"]["parent"]["accuracy"],
                "drift_before": cmp["drift_infer"]["parent"]["accuracy"],
                "infer_after": cmp["infer"]["child"]["accuracy"],
                "drift_after": cmp["drift_infer"]["child"]["accuracy"],
                "train_s": r["train_seconds"],
                "epochs_run": r["epochs_run"],
                "epochs_max": arch_epochs,
                "finetune_s": tuned.report["finetune_seconds"],
                "n_labels": tuned.report["n_labeled"],
                "n_replay": tuned.report["n_replay"],
                "device": r["device"],
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="seed 000 CNN vs compact (int8, LiteRT 1 thread)")
    cols = [
        ("arch", "arch", "{}"),
        ("params", "params", "{:,}"),
        ("tflite_bytes", ".tflite B", "{:,}"),
        ("us_b1", "µs/win b1", "{:.1f}"),
        ("us_b32", "µs/win b32", "{:.1f}"),
        ("infer_before", "infer", "{:.4f}"),
        ("drift_before", "drift", "{:.4f}"),
        ("infer_after", "infer FT", "{:.4f}"),
        ("drift_after", "drift FT", "{:.4f}"),
        ("train_s", "train s", "{:.1f}"),
        ("finetune_s", "FT s", "{:.1f}"),
    ]
    for _, head, _ in cols:
        t.add_column(head, justify="right")
    for r in rows:
        t.add_row(*(fmt.format(r[key]) for key, _, fmt in cols))
    return t


def markdown(rows: list[dict[str, Any]]) -> str:
    head = (
        "| arch | params | .tflite bytes | µs/window b1 | µs/window b32 | infer | drift_infer "
        "| infer after FT | drift_infer after FT | train s (epochs) | FT s |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        lines.append(
            f"| {r['arch']} | {r['params']:,} | {r['tflite_bytes']:,} | {r['us_b1']:.1f} | "
            f"{r['us_b32']:.1f} | {r['infer_before']:.4f} | {r['drift_before']:.4f} | "
            f"{r['infer_after']:.4f} | {r['drift_after']:.4f} | {r['train_s']:.1f} "
            f"({r['epochs_run']}) | {r['finetune_s']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument(
        "--seed-epochs",
        type=int,
        help="epoch cap for seed 000's network only (default: --epochs); make bench lowers it "
        "to stay within its time budget — its size and speed do not depend on it",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--labels-per-class", type=int, default=12)
    p.add_argument("--json", type=Path, help="also write the rows here")
    p.add_argument("--keep", type=Path, help="keep data, bundles and reports in this dir")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with tempfile.TemporaryDirectory(prefix="edgeloop-bench-") as tmp:
        out = args.keep or Path(tmp)
        rows = run(
            out,
            epochs=args.epochs,
            seed=args.seed,
            per_class=args.labels_per_class,
            seed_epochs=args.seed_epochs,
        )
    Console(width=160).print(table(rows))
    seed_row, compact_row = rows
    print(markdown(rows))
    print(
        f"compact vs seed: {seed_row['us_b1'] / compact_row['us_b1']:.1f}x less time per "
        f"window at batch 1, {seed_row['us_b32'] / compact_row['us_b32']:.1f}x at batch 32; "
        f"device {compact_row['device']}"
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
