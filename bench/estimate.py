"""How far off is the Pi's label-free accuracy estimate? Per drift mode, against the truth.

`python -m bench.estimate [--model BUNDLE --public-key PEM] [--windows 4096] [--json PATH]`

Seed-style windows (sensor_sim.physics.sample, classes balanced) go through a real model in
pi_edge's classifier, without drift and under each drift mode of the simulator
(sensor_sim.drift.effect/apply, the parameters of bench/drift_detection.py), either on every window
("all") or on one machine in four ("1 of 4": what a node serving four machines sees when one
drifts). The windows are cut into chunks of the node's estimate window (512 by default,
`--estimate-windows`), and per chunk pi_edge.loop.accuracy_estimate gives its estimate by each
method (atc, doc, mean_confidence) from the confidences alone; the truth is the chunk's accuracy.
Reported per scenario: true accuracy, each method's mean estimate, mean absolute error and worst
error over the chunks. Without --model, a compact model is trained first (bench.edge.make_model, in
subprocesses, ~20 s). The whole run takes well under 2 minutes.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pi_edge.loop.accuracy_estimate import DEFAULT_WINDOW, METHODS, Reference, estimate
from pi_edge.model.classifier import Classifier
from protocol import CLASSES, decode_bundle, load_public_key
from sensor_sim.drift import DriftEffect, DriftSettings, apply, effect
from sensor_sim.physics import sample

log = logging.getLogger("bench.estimate")

MODES: dict[str, DriftSettings] = {
    "none": DriftSettings(),
    "step": DriftSettings("step"),
    "offset": DriftSettings("offset", {"temperature": 8.0, "pressure": -1.0}),
    "gain": DriftSettings("gain", {"vibration": 1.6, "power": 1.15}),
    "ramp (half way)": DriftSettings("ramp", {"duration_s": 300.0}),
    "regime": DriftSettings("regime", {"load": 1.3}),
}
RAMP_ELAPSED_S = 150.0  # half of the ramp's 300 s
SHARES = {"all": 1.0, "1 of 4": 0.25}


@dataclass(frozen=True)
class Row:
    scenario: str
    mode: str
    drifted_share: float
    windows: int
    chunks: int
    true_accuracy: float
    mean_confidence: float
    estimate: dict[str, float]  # method → mean estimate over the chunks
    mae: dict[str, float]  # method → mean |estimate − truth| over the chunks
    max_error: dict[str, float]  # method → worst |estimate − truth|
    bias: dict[str, float]  # method → mean (estimate − truth): > 0 overestimates


def windows_for(
    mode: str, share: float, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """n seed-style windows with balanced labels; a `share` of them under drift `mode`."""
    labels = rng.integers(0, len(CLASSES), n)
    drifted = rng.random(n) < share
    eff = effect(MODES[mode], RAMP_ELAPSED_S) if mode != "none" else DriftEffect()
    blend = np.where(drifted, eff.blend, 0.0)
    x = sample(labels, rng, blend=blend)
    if not eff.is_identity:
        x[drifted] = apply(x[drifted], eff)
    return x, labels


def measure(
    classifier: Classifier,
    ref: Reference,
    mode: str,
    share_name: str,
    n: int,
    chunk: int,
    rng: np.random.Generator,
) -> Row:
    x, y = windows_for(mode, SHARES[share_name], n, rng)
    probs = np.concatenate([classifier.predict(x[i : i + 256]) for i in range(0, n, 256)])
    conf = probs.max(axis=1).astype(np.float64)
    right = probs.argmax(axis=1) == y
    truths: list[float] = []
    ests: dict[str, list[float]] = {m: [] for m in METHODS}
    for i in range(0, n - chunk + 1, chunk):
        truths.append(float(right[i : i + chunk].mean()))
        for m in METHODS:
            ests[m].append(estimate(conf[i : i + chunk], ref, m))
    t = np.array(truths)
    return Row(
        scenario=f"{mode} ({share_name})" if mode != "none" else "none",
        mode=mode,
        drifted_share=SHARES[share_name] if mode != "none" else 0.0,
        windows=n,
        chunks=len(t),
        true_accuracy=round(float(t.mean()), 4),
        mean_confidence=round(float(conf.mean()), 4),
        estimate={m: round(float(np.mean(v)), 4) for m, v in ests.items()},
        mae={m: round(float(np.abs(np.array(v) - t).mean()), 4) for m, v in ests.items()},
        max_error={m: round(float(np.abs(np.array(v) - t).max()), 4) for m, v in ests.items()},
        bias={m: round(float((np.array(v) - t).mean()), 4) for m, v in ests.items()},
    )


def table(rows: list[Row], default: str) -> str:
    head = "| scenario | true accuracy | mean confidence | " + " | ".join(
        f"{m} est (MAE)" for m in METHODS
    )
    lines = [head + " |", "|---|---|---|" + "---|" * len(METHODS)]
    for r in rows:
        cells = [f"{r.estimate[m]:.3f} ({r.mae[m]:.3f})" for m in METHODS]
        lines.append(
            f"| {r.scenario} | {r.true_accuracy:.3f} | {r.mean_confidence:.3f} | "
            + " | ".join(cells)
            + " |"
        )
    overall = {m: float(np.mean([r.mae[m] for r in rows])) for m in METHODS}
    lines.append(
        "| mean absolute error, all scenarios | | | "
        + " | ".join(f"{overall[m]:.3f}" for m in METHODS)
        + " |"
    )
    bias = {m: float(np.mean([r.bias[m] for r in rows])) for m in METHODS}
    lines.append(
        "| mean signed error (> 0: overestimates) | | | "
        + " | ".join(f"{bias[m]:+.3f}" for m in METHODS)
        + f" |\n\nthe node's method (auto, this manifest): {default}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, help="signed bundle (default: train a compact one)")
    p.add_argument("--public-key", type=Path, help="its public key (with --model)")
    p.add_argument("--windows", type=int, default=4096, help="windows per scenario (4096)")
    p.add_argument(
        "--estimate-windows",
        type=int,
        default=DEFAULT_WINDOW,
        help=f"chunk = the node's estimate window ({DEFAULT_WINDOW})",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if (args.model is None) != (args.public_key is None):
        p.error("give --model and --public-key together, or neither (a model is trained)")
    if args.windows < args.estimate_windows:
        p.error(f"--windows {args.windows} must be ≥ --estimate-windows {args.estimate_windows}")
    started = time.monotonic()
    model, key = args.model, args.public_key
    if model is None:
        from bench.edge import make_model

        model, key = make_model(Path(tempfile.mkdtemp(prefix="edgeloop-bench-estimate-")))
    bundle = decode_bundle(model.read_bytes(), load_public_key(key))
    classifier = Classifier(bundle.model, bundle.manifest)
    ref = Reference.from_metrics(bundle.manifest.metrics)
    default = ref.method()
    rng = np.random.default_rng(args.seed)
    rows = []
    for mode in MODES:
        for share_name in ("all",) if mode == "none" else tuple(SHARES):
            rows.append(
                measure(classifier, ref, mode, share_name, args.windows, args.estimate_windows, rng)
            )
    print(table(rows, default))
    seconds = time.monotonic() - started
    log.info("bench.estimate: %d scenarios in %.1f s", len(rows), seconds)
    if args.json:
        out: dict[str, Any] = {
            "bench": "estimate",
            "model_version": bundle.manifest.version,
            "reference": ref.as_metrics(),
            "default_method": default,
            "estimate_windows": args.estimate_windows,
            "seconds": round(seconds, 1),
            "rows": [asdict(r) for r in rows],
            "mae_all": {m: round(float(np.mean([r.mae[m] for r in rows])), 4) for m in METHODS},
            "bias_all": {m: round(float(np.mean([r.bias[m] for r in rows])), 4) for m in METHODS},
            "mae_undrifted": rows[0].mae,
        }
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
