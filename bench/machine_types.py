"""One node, two machine types: µs/window of each type's model and the RSS one more type costs.

    python -m bench.machine_types --model BUNDLE --public-key KEY [--type-model BUNDLE]
                                  [--work DIR] [--repeats 600] [--json PATH]

`--model` is a built-in-type bundle (the suite's shared compact model); `--type-model` a bundle
of another machine type signed with the same key. Without `--type-model` the bench makes one
with the trainer's build path (`compact` net, float32 and int8 tried, int8 shipped when it
agrees): the made-up type `press`, 3 channels × 32 samples, 3 classes, synthetic strokes, signed
with a throw-away key (the bench then vets both bundles unverified, as `--insecure-dev` does;
the signature check costs no memory worth measuring).

Per type: µs per window through pi_edge's `Classifier.predict` (`protocol.model_input`'s
transform + one LiteRT invoke, 1 thread) at batch 1 and batch 16, and the bare invoke
(`jetson_trainer.build.interpreter.micros_per_window`). RSS: a fresh child process imports
pi_edge and vets the built-in type's model (interpreters for batch sizes 1..16 allocated, as a
node under load has), then the other type's; the difference of VmRSS is what an extra type
costs (issue 24: at most 8 MB).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("bench.machine_types")

BATCHES = (1, 16)
WARM_SIZES = range(1, 17)  # batch sizes a loaded node's interpreter cache has seen


def rss_kib() -> int:
    """This process's resident set (VmRSS), KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def press_windows(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic press strokes (32 × 3: force, stroke, current) of classes ok, jam, overload."""
    y = rng.integers(0, 3, n)
    t = np.linspace(0.0, 1.0, 32)
    x = np.empty((n, 32, 3))
    for i, k in enumerate(y):
        force = 20.0 + 30.0 * np.sin(np.pi * t) + rng.normal(0, 1.5, 32)
        stroke = 40.0 * np.sin(np.pi * t) + rng.normal(0, 0.8, 32)
        current = 8.0 + rng.normal(0, 0.4, 32)
        if k == 1:
            stroke, force = np.minimum(stroke, 12.0), force + 25.0
        elif k == 2:
            current, force = current + 6.0, force + 12.0
        x[i] = np.stack([force, stroke, current], axis=1)
    return x.astype(np.float32), y.astype(np.int64)


def make_type_model(out: Path) -> Path:
    """Train and convert the `press` model with the trainer's build path; its bundle path."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from jetson_trainer.build.architectures import build_model, learning_rate
    from jetson_trainer.build.artifacts import GOLDEN_TOLERANCE, golden_vectors
    from jetson_trainer.build.convert import convert_and_verify, converter_version, pick_variant
    from jetson_trainer.build.data import normalisation
    from protocol import DEFAULT_PREFIX, Manifest, encode_bundle
    from protocol.machine_type import Channel, MachineType
    from protocol.model_input import normalise

    kind = MachineType(
        "press",
        (Channel("force", "kN"), Channel("stroke", "mm"), Channel("current", "A")),
        sample_hz=50.0,
        window_length=32,
        classes=("ok", "jam", "overload"),
        machines=("press-*",),
    )
    rng = np.random.default_rng(7)
    x, y = press_windows(1200, rng)
    x_val, y_val = press_windows(200, rng)
    norm = normalisation(x)
    net = build_model("compact", window_length=32, n_channels=3, n_classes=3, seed=0)
    net.compile(
        optimizer=keras.optimizers.Adam(learning_rate("compact")),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    net.fit(normalise(x, norm), y, epochs=25, batch_size=32, verbose=0)
    variants = convert_and_verify(net, x, x_val, ("int8", "float32"), norm=norm, time_repeats=50)
    chosen = pick_variant(variants, "int8")
    wire = kind.to_dict()
    del wire["classes"], wire["window_length"]
    manifest = Manifest(
        version=1,
        model_sha256=hashlib.sha256(chosen.model).hexdigest(),
        model_bytes=len(chosen.model),
        created=time.time(),
        site=DEFAULT_PREFIX,
        classes=kind.classes,
        channels=kind.channel_names,
        window_length=32,
        quantization=chosen.quantization,
        arch="compact",
        converter=converter_version(),
        normalisation=norm,
        golden=golden_vectors(chosen.model, x_val, y_val, norm),
        golden_tolerance=GOLDEN_TOLERANCE[chosen.quantization],
        metrics={"accuracy": float(variants[chosen.quantization].agreement)},
        machine_type=wire,
    )
    path = out / "press.bundle"
    path.write_bytes(encode_bundle(manifest, chosen.model, Ed25519PrivateKey.generate().sign))
    return path


def _vet(path: Path) -> Any:
    """The bundle at `path` vetted as a node vets it (golden vectors on this runtime), with the
    interpreters of batch sizes 1..16 allocated; unverified (see the module doc)."""
    from pi_edge.intake.inbox import BatchPolicy
    from pi_edge.model.vetting import Expected, build_model, verify_bundle

    bundle = verify_bundle(path.read_bytes(), public_key=None, allow_unsigned=True)
    m = bundle.manifest
    expected = Expected(None, None, None, m.type_name)
    vetted = build_model(bundle, expected=expected, threads=1, policy=BatchPolicy(max_size=16))
    t, c = m.input_shape
    for n in WARM_SIZES:
        vetted.classifier.predict(np.zeros((n, t, c), np.float32))
    return vetted


def rss_child(paths: list[Path]) -> dict[str, Any]:
    """In a fresh process: RSS after importing pi_edge, then after vetting each bundle in turn."""
    from pi_edge.model import classifier

    classifier.interpreter_class()  # the runtime import, shared by every type
    steps = {"imported": rss_kib()}
    kept = []
    for path in paths:
        kept.append(_vet(path))
        steps[kept[-1].bundle.manifest.type_name] = rss_kib()
    return steps


def speed(path: Path, repeats: int) -> dict[str, Any]:
    """µs/window of one bundle's model: pi_edge's Classifier.predict and the bare invoke."""
    from jetson_trainer.build.interpreter import micros_per_window

    vetted = _vet(path)
    m = vetted.bundle.manifest
    x = np.asarray([g["x"] for g in m.golden], np.float32)
    row: dict[str, Any] = {
        "type": m.type_name,
        "shape": list(m.input_shape),
        "classes": len(m.classes),
        "quantization": m.quantization,
        "model_bytes": m.model_bytes,
    }
    for batch in BATCHES:
        xb = np.resize(x, (batch, *x.shape[1:]))
        best = float("inf")
        for _ in range(5):  # the lowest block median: other processes share the CPU
            times = []
            for _ in range(max(1, repeats // 5)):
                t0 = time.perf_counter()
                vetted.classifier.predict(xb)
                times.append(time.perf_counter() - t0)
            best = min(best, float(np.median(times)))
        row[f"us_per_window_b{batch}"] = round(best / batch * 1e6, 2)
        row[f"invoke_us_per_window_b{batch}"] = round(
            micros_per_window(vetted.classifier.model, m.normalisation, x, batch=batch), 2
        )
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True, help="a built-in-type bundle")
    ap.add_argument("--public-key", type=Path, help="unused: both bundles are vetted unverified")
    ap.add_argument("--type-model", type=Path, help="a bundle of another machine type")
    ap.add_argument("--work", type=Path, help="where to make the type model (default: a temp dir)")
    ap.add_argument("--repeats", type=int, default=600)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--rss-child", nargs="+", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rss_child:
        print(json.dumps(rss_child(args.rss_child)))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory(prefix="edgeloop-bench-types-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        type_model = args.type_model
        if type_model is None:
            t0 = time.perf_counter()
            type_model = make_type_model(work)
            log.info("made the press model in %.1f s", time.perf_counter() - t0)
        rows = [speed(p, args.repeats) for p in (args.model, type_model)]
        child = subprocess.run(
            [sys.executable, "-m", "bench.machine_types", "--model", str(args.model),
             "--rss-child", str(args.model), str(type_model)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        rss = json.loads(child.stdout.strip().splitlines()[-1])
    names = [r["type"] for r in rows]
    result = {
        "rows": rows,
        "rss_kib": rss,
        "rss_first_type_mb": round((rss[names[0]] - rss["imported"]) / 1024, 2),
        "rss_extra_type_mb": round((rss[names[1]] - rss[names[0]]) / 1024, 2),
    }
    for r in rows:
        print(
            f"{r['type']:>8} {r['shape'][0]}x{r['shape'][1]} {r['classes']} classes "
            f"{r['quantization']:>7}: {r['us_per_window_b1']:7.1f} µs/window at batch 1, "
            f"{r['us_per_window_b16']:6.1f} at 16 (bare invoke {r['invoke_us_per_window_b1']:.1f}"
            f" / {r['invoke_us_per_window_b16']:.1f})"
        )
    print(
        f"RSS: first type {result['rss_first_type_mb']} MB, one more type "
        f"{result['rss_extra_type_mb']} MB (target ≤ 8 MB)"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
