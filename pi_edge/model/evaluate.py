"""Offline evaluation of a bundle on labelled windows: accuracy, macro F1, confusion, µs/window.

numpy only (no scikit-learn on the Pi).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .vetting import Expected, vet_bundle


def confusion_matrix(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike, n_classes: int
) -> npt.NDArray[np.int64]:
    """Counts with rows = true class, columns = predicted class.

    >>> confusion_matrix([0, 1, 1, 2], [0, 1, 2, 2], 3).tolist()
    [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
    """
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def macro_f1(cm: npt.NDArray[np.int64]) -> float:
    """Unweighted mean of per-class F1 (classes absent from truth and prediction count as 0).

    >>> round(macro_f1(confusion_matrix([0, 1, 1, 2], [0, 1, 2, 2], 3)), 4)
    0.7778
    """
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(axis=0) + cm.sum(axis=1)
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1.mean())


@dataclass(frozen=True, slots=True)
class Evaluation:
    model_version: int
    runtime: str
    n: int
    accuracy: float
    macro_f1: float
    classes: tuple[str, ...]
    confusion: list[list[int]]
    us_per_window_p50: float
    us_per_window_p99: float
    us_per_window_batched: float
    png: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_version": self.model_version,
            "runtime": self.runtime,
            "n": self.n,
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "classes": list(self.classes),
            "confusion": self.confusion,
            "us_per_window_p50": self.us_per_window_p50,
            "us_per_window_p99": self.us_per_window_p99,
            "us_per_window_batched": self.us_per_window_batched,
            "png": self.png,
        }


def evaluate(
    bundle: bytes,
    x: npt.NDArray[np.float32],
    y: npt.NDArray[Any],
    *,
    public_key: bytes | tuple[bytes, ...] | None,
    allow_unsigned: bool,
    threads: int = 1,
    timing_windows: int = 300,
    png: Path | None = None,
) -> Evaluation:
    """Vet `bundle` like a live node would, then score it on (x, y) and time batch-1 calls."""
    from ..errors import EdgeError

    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y)
    vetted = vet_bundle(
        bundle,
        public_key=public_key,
        allow_unsigned=allow_unsigned,
        expected=_expected_from(bundle, public_key, allow_unsigned),
        threads=threads,
    )
    manifest = vetted.bundle.manifest
    clf = vetted.classifier
    if x.ndim != 3 or x.shape[1:] != manifest.input_shape:
        raise EdgeError(f"x has shape {x.shape}, the model wants (n, {manifest.input_shape})")
    if y.dtype.kind in "US":
        lookup = {c: i for i, c in enumerate(manifest.classes)}
        try:
            y = np.asarray([lookup[str(v)] for v in y])
        except KeyError as exc:
            raise EdgeError(f"y has label {exc} not in {manifest.classes}") from exc
    y = y.astype(np.int64).ravel()
    if len(y) != len(x):
        raise EdgeError(f"x has {len(x)} windows but y has {len(y)} labels")
    if len(y) and (y.min() < 0 or y.max() >= len(manifest.classes)):
        raise EdgeError(f"y labels must be in 0..{len(manifest.classes) - 1}")
    t0 = time.perf_counter()
    probs = clf.predict(x)
    batched_us = (time.perf_counter() - t0) / max(len(x), 1) * 1e6
    pred = probs[:, : len(manifest.classes)].argmax(axis=1)  # an anomaly head's column: not
    cm = confusion_matrix(y, pred, len(manifest.classes))
    k = min(timing_windows, len(x))
    times = np.empty(k)
    for _ in range(min(10, k)):
        clf.predict(x[:1])
    for i in range(k):
        t = time.perf_counter_ns()
        clf.predict(x[i : i + 1])
        times[i] = (time.perf_counter_ns() - t) / 1e3
    p50, p99 = np.percentile(times, [50, 99]).tolist() if k else (0.0, 0.0)
    if png is not None:
        from ._png import confusion_png

        confusion_png(cm, png, classes=manifest.classes)
    return Evaluation(
        model_version=manifest.version,
        runtime=clf.runtime,
        n=len(x),
        accuracy=float((pred == y).mean()) if len(y) else 0.0,
        macro_f1=macro_f1(cm),
        classes=manifest.classes,
        confusion=cm.tolist(),
        us_per_window_p50=round(p50, 1),
        us_per_window_p99=round(p99, 1),
        us_per_window_batched=round(batched_us, 1),
        png=None if png is None else str(png),
    )


def _expected_from(
    bundle: bytes, public_key: bytes | tuple[bytes, ...] | None, allow_unsigned: bool
) -> Expected:
    """Offline there is no running config: accept the bundle's own shape."""
    from protocol import BundleError, decode_bundle

    from ..errors import ModelError

    try:
        m = decode_bundle(bundle, public_key, allow_unsigned=allow_unsigned).manifest
    except BundleError as exc:
        raise ModelError(str(exc), exc.kind) from exc
    return Expected(m.classes, m.channels, m.window_length)
