"""Manifest, signed bundle and the files written next to it.

An output directory of `train` or `finetune` holds:

    model.bundle        the signed bundle (protocol.encode_bundle): manifest + .tflite + signature
    model.tflite        the same .tflite bytes, for inspection (netron, benchmark_model)
    model.keras         the Keras model, which `finetune` continues from (the bundle has no Keras)
    manifest.json       the manifest, pretty-printed
    report.json         metrics, conversion checks, timings, energy
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from protocol import (
    Bundle,
    ConfigError,
    Manifest,
    decode_bundle,
    encode_bundle,
)
from protocol import load_public_key as _load_public_key
from protocol.machine_type import DEFAULT_TYPE, MachineType

from ..errors import TrainerError
from .data import train_stats
from .interpreter import LiteModel
from .keys import load_private_key
from .scores import classification_metrics, confidence_summary

__all__ = [
    "BUNDLE_NAME",
    "KERAS_NAME",
    "TFLITE_NAME",
    "golden_vectors",
    "keras_path_for",
    "make_manifest",
    "read_bundle",
    "reissue",
    "write_artifacts",
]

log = logging.getLogger(__name__)

BUNDLE_NAME = "model.bundle"
TFLITE_NAME = "model.tflite"
KERAS_NAME = "model.keras"
GOLDEN_PER_CLASS = 2
GOLDEN_TOLERANCE = {"int8": 0.05, "float16": 0.01, "float32": 0.001}


def golden_vectors(
    model: bytes,
    x_raw: np.ndarray,
    y: np.ndarray,
    norm: dict[str, list[float]],
    per_class: int = GOLDEN_PER_CLASS,
) -> list[dict[str, Any]]:
    """A few raw windows (per class) with the probabilities the .tflite model gives them."""
    picks: list[int] = []
    for c in np.unique(y):
        picks.extend(np.flatnonzero(y == c)[:per_class].tolist())
    xs = np.asarray(x_raw, np.float32)[picks]
    probs = LiteModel(model, norm).predict(xs)
    return [
        {"x": [[float(v) for v in row] for row in xs[i]], "probs": [float(p) for p in probs[i]]}
        for i in range(len(picks))
    ]


def manifest_machine_type(kind: MachineType) -> dict[str, Any] | None:
    """The manifest's `machine_type` for a model of `kind`: None for the built-in type (its
    manifests stay byte-identical), else the type less what the manifest's own fields say.

    >>> manifest_machine_type(DEFAULT_TYPE) is None
    True
    """
    if kind.name == DEFAULT_TYPE.name:
        return None
    return {k: v for k, v in kind.to_dict().items() if k not in ("classes", "window_length")}


def make_manifest(
    *,
    model: bytes,
    version: int,
    parent: int | None,
    site: str,
    quantization: str,
    arch: str,
    converter: str,
    norm: dict[str, list[float]],
    x_stats: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    y_stats: np.ndarray | None = None,
    extra: dict[str, Any] | None = None,
    x_confidence: np.ndarray | None = None,
    kind: MachineType = DEFAULT_TYPE,
) -> Manifest:
    """The manifest for `model`: statistics from `x_stats`, metrics and golden from validation.

    With `y_stats`, train_stats also carries the class-conditional window-feature statistics
    (protocol.features) that the Pi's drift detector and out-of-distribution flag need. `site`
    is the topic prefix of the nodes the model is for: a node refuses a bundle from the network
    made for another site. With `x_confidence` (windows as the Pis will see them, e.g. both
    regimes of a drift, unlabeled), the confidence figures — the reference of the Pi's
    confidence detector — come from those windows instead of the validation set.
    """
    lite = LiteModel(model, norm)
    probs = lite.predict(x_val)
    m = classification_metrics(y_val, probs, kind.classes)
    if x_confidence is not None and len(x_confidence):
        m.update(confidence_summary(lite.predict(x_confidence), kind.classes))
    metrics = {
        k: m[k]
        for k in (
            "n",
            "accuracy",
            "macro_f1",
            "mean_confidence",
            "confidence_q01",
            "confidence_q05",
            "confidence_q25",
            "confidence_q50",
            "mean_confidence_per_class",
        )
    }
    return Manifest(
        version=version,
        parent=parent,
        site=site,
        created=time.time(),
        classes=kind.classes,
        channels=kind.channel_names,
        machine_type=manifest_machine_type(kind),
        window_length=int(x_val.shape[1]),
        quantization=quantization,
        arch=arch,
        converter=converter,
        model_sha256=hashlib.sha256(model).hexdigest(),
        model_bytes=len(model),
        normalisation=norm,
        train_stats=train_stats(x_stats, y_stats, kind),
        metrics=metrics,
        golden=golden_vectors(model, x_val, y_val, norm),
        golden_tolerance=GOLDEN_TOLERANCE.get(quantization, 0.05),
        extra=dict(extra or {}),
    )


def write_artifacts(
    out_dir: Path, manifest: Manifest, model: bytes, keras_model: Any, private_key: Path | None
) -> Path:
    """Write bundle, .tflite, .keras and manifest.json into `out_dir`; return the bundle path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sign = load_private_key(private_key).sign if private_key is not None else None
    if sign is None:
        log.warning(
            "no --private-key: the bundle is UNSIGNED; a Pi refuses it unless started "
            "with --insecure-dev"
        )
    data = encode_bundle(manifest, model, sign=sign)
    bundle_path = out_dir / BUNDLE_NAME
    tmp = bundle_path.with_suffix(".bundle.tmp")
    tmp.write_bytes(data)
    tmp.replace(bundle_path)
    (out_dir / TFLITE_NAME).write_bytes(model)
    (out_dir / "manifest.json").write_text(json.dumps(manifest.to_dict(), indent=1) + "\n")
    if keras_model is not None:
        keras_model.save(out_dir / KERAS_NAME)
    log.info(
        "wrote %s (%d bytes, version %d, %s, %s)",
        bundle_path,
        len(data),
        manifest.version,
        manifest.quantization,
        "signed" if sign else "unsigned",
    )
    return bundle_path


def read_bundle(path: Path, public_key: Path | None, *, insecure_dev: bool = False) -> Bundle:
    """Decode and verify the bundle file at `path` (as the Pi would)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TrainerError(f"cannot read bundle {path}: {exc}") from exc
    key = _load_public_key(public_key) if public_key is not None else None
    if key is None and not insecure_dev:
        raise ConfigError(
            f"no --public-key given to verify {path}; pass the trainer's public "
            "key, or --insecure-dev to skip verification (development only)"
        )
    return decode_bundle(data, key, allow_unsigned=insecure_dev)


def reissue(
    old: Bundle,
    out_dir: Path,
    *,
    version: int,
    private_key: Path,
    site: str | None = None,
    keras_path: Path | None = None,
) -> Path:
    """Re-sign `old`'s model, unchanged, as the NEW `version`: the fleet-wide rollback.

    Pis refuse a bundle older than the newest they accepted, so an old model goes back out
    only under a higher version number, signed by the trainer; its manifest keeps everything
    else (normalisation, statistics, golden vectors) and records `extra["reissue_of"]`. The
    Keras model beside the old bundle is copied too, so `serve` can fine-tune from it.
    """
    m = old.manifest
    if version <= m.version:
        raise ConfigError(
            f"--version {version} must be above the old bundle's v{m.version} (and above the "
            "newest version the Pis run): versions only go up"
        )
    manifest = dataclasses.replace(
        m,
        version=version,
        site=m.site if site is None else site,
        created=time.time(),
        extra={**m.extra, "reissue_of": m.version},
    )
    path = write_artifacts(out_dir, manifest, old.model, None, private_key)
    if keras_path is not None and Path(keras_path).exists():
        shutil.copy2(keras_path, Path(out_dir) / KERAS_NAME)
    log.info("re-issued model v%d as v%d in %s", m.version, version, path)
    return path


def keras_path_for(bundle_path: Path, keras_path: Path | None = None) -> Path:
    """`keras_path`, or the `model.keras` written beside `bundle_path`."""
    path = Path(keras_path) if keras_path is not None else Path(bundle_path).parent / KERAS_NAME
    if not path.exists():
        raise TrainerError(
            f"no Keras model at {path}; the bundle holds only TFLite, so finetune "
            "needs the model.keras that `train` wrote beside it (pass --keras)"
        )
    return path
