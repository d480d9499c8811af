"""A label-free estimate of the serving model's current accuracy, from its confidences alone.

Labels are rare and late; the model's top probability is there for every window. Over the last
`window` classified windows of the node the estimate is one of (`method`):

  atc              average thresholded confidence (Garg et al., ICLR 2022): the share of recent
                   windows whose confidence reaches the threshold t at which the validation
                   windows' share equals the validation accuracy. t comes from the manifest's
                   confidence quantiles (q01 … q50); when the validation error is below 1 %,
                   t = q01 and the share is scaled by accuracy / 0.99 so that validation-like
                   traffic estimates the validation accuracy. A confidence within
                   `ATC_TOLERANCE` below t counts as reaching it: the manifest rounds to 4
                   decimals, and an int8 model's probabilities come in steps of 1/256 (its
                   q01 … q50 are often all 0.9961, its top output, 255/256).
  doc              difference of confidences: validation accuracy − (validation mean confidence
                   − recent mean confidence).
  mean_confidence  the recent mean top probability (no manifest needed).

`auto` takes atc when the manifest has the quantiles, else doc when it has accuracy and mean
confidence, else mean_confidence. Labeled windows among the recent ones give `labeled_accuracy`
beside it, so the estimate can be checked where labels exist (bench/estimate.py measures its
error per drift mode). A new model version starts the window over.

>>> import numpy as np
>>> ref = Reference.from_metrics({"accuracy": 1.0, "mean_confidence": 0.98,
...     "confidence_q01": 0.9, "confidence_q05": 0.95, "confidence_q25": 0.98,
...     "confidence_q50": 0.99})
>>> conf = np.array([0.99, 0.97, 0.5, 0.6])
>>> {m: round(estimate(conf, ref, m), 3) for m in METHODS}
{'atc': 0.505, 'doc': 0.785, 'mean_confidence': 0.765}
>>> est = AccuracyEstimator(window=4)
>>> est.observe(1, ref.as_metrics(), conf, np.array([0, 0, 1, 2]), [0, None, 2, None])
>>> s = est.summary(); s["accuracy_est"], s["windows"], s["labeled_accuracy"], s["method"]
(0.5051, 4, 0.5, 'atc')
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from protocol.status_detail import ESTIMATE_METHODS, EstimateDetail, finite_or_none

__all__ = ["METHODS", "AccuracyEstimator", "Reference", "atc_threshold", "estimate", "sure_at"]

METHODS = ESTIMATE_METHODS  # ("atc", "doc", "mean_confidence"): the status names them
_QUANTILES: tuple[tuple[float, str], ...] = (
    (0.01, "confidence_q01"),
    (0.05, "confidence_q05"),
    (0.25, "confidence_q25"),
    (0.5, "confidence_q50"),
)
DEFAULT_WINDOW = 512
ATC_TOLERANCE = 0.002  # about half an int8 probability step (1/256)
DEFAULT_SURE_AT = 0.9  # without the manifest's quantiles: a window below this is unsure


def _real(metrics: Mapping[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0:
        return float(value)
    return None


@dataclass(frozen=True, slots=True)
class Reference:
    """What the manifest says of the model on validation data (None: not given)."""

    accuracy: float | None = None
    mean_confidence: float | None = None
    quantiles: tuple[tuple[float, float], ...] = ()  # (level, confidence), levels ascending

    def __post_init__(self) -> None:
        for name in ("accuracy", "mean_confidence"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"reference {name} {value} must be within [0, 1]")
        levels = [q for q, _ in self.quantiles]
        if levels != sorted(levels) or any(not 0.0 < q < 1.0 for q in levels):
            raise ValueError(f"reference quantile levels {levels} must be ascending in (0, 1)")

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, Any]) -> Reference:
        """From a manifest's `metrics` (unknown or out-of-range figures are left out)."""
        quantiles = tuple((q, v) for q, key in _QUANTILES if (v := _real(metrics, key)) is not None)
        return cls(_real(metrics, "accuracy"), _real(metrics, "mean_confidence"), quantiles)

    def as_metrics(self) -> dict[str, float]:
        keys = dict(_QUANTILES)
        out = {keys.get(q, f"confidence_q{round(q * 100):02d}"): v for q, v in self.quantiles}
        if self.accuracy is not None:
            out["accuracy"] = self.accuracy
        if self.mean_confidence is not None:
            out["mean_confidence"] = self.mean_confidence
        return out

    def method(self, wanted: str = "auto") -> str:
        """The method `wanted` resolves to with this reference (`auto`: the best it allows).

        >>> Reference().method(), Reference(1.0, 0.9).method(), Reference(1.0, 0.9).method("atc")
        ('mean_confidence', 'doc', 'doc')
        """
        can_doc = self.accuracy is not None and self.mean_confidence is not None
        can_atc = self.accuracy is not None and bool(self.quantiles)
        if wanted in ("auto", "atc") and can_atc:
            return "atc"
        if wanted in ("auto", "atc", "doc") and can_doc:
            return "doc"
        return "mean_confidence"


def sure_at(ref: Reference) -> float:
    """The confidence from which a window counts as sure: the ATC threshold (less the
    tolerance) when the manifest has its quantiles, else DEFAULT_SURE_AT.

    >>> sure_at(Reference(1.0, 0.99, ((0.01, 0.95),))), sure_at(Reference())
    (0.948, 0.9)
    """
    if ref.accuracy is None or not ref.quantiles:
        return DEFAULT_SURE_AT
    return round(atc_threshold(ref)[0] - ATC_TOLERANCE, 6)


def atc_threshold(ref: Reference) -> tuple[float, float]:
    """(t, share): the confidence t below which a share `1 − accuracy` of the validation
    windows lie, interpolated between the manifest's quantiles, and the share of validation
    windows at or above t (what `estimate` scales by).

    >>> ref = Reference(0.9, 0.95, ((0.01, 0.5), (0.05, 0.7), (0.25, 0.9)))
    >>> [round(x, 3) for x in atc_threshold(ref)]
    [0.75, 0.9]
    >>> atc_threshold(Reference(1.0, 0.99, ((0.01, 0.8),)))
    (0.8, 0.99)
    """
    if ref.accuracy is None or not ref.quantiles:
        raise ValueError("ATC needs the validation accuracy and confidence quantiles")
    error = 1.0 - ref.accuracy
    levels = [q for q, _ in ref.quantiles]
    values = [v for _, v in ref.quantiles]
    level = float(np.clip(error, levels[0], levels[-1]))
    return float(np.interp(level, levels, values)), 1.0 - level


def estimate(confidence: npt.ArrayLike, ref: Reference | None, method: str = "auto") -> float:
    """The accuracy estimate of windows with these top probabilities (nan without windows)."""
    conf = np.asarray(confidence, np.float64)
    if not len(conf):
        return float("nan")
    ref = ref or Reference()
    how = ref.method(method)
    if how == "atc":
        t, share = atc_threshold(ref)
        assert ref.accuracy is not None
        value = float(np.mean(conf >= t - ATC_TOLERANCE)) * ref.accuracy / share
    elif how == "doc":
        assert ref.accuracy is not None and ref.mean_confidence is not None
        value = ref.accuracy - (ref.mean_confidence - float(conf.mean()))
    else:
        value = float(conf.mean())
    return float(np.clip(value, 0.0, 1.0))


class AccuracyEstimator:
    """The node's last `window` confidences (and whether labeled ones were right), per model.

    The worker `observe`s each batch (a few vectorised numpy writes); the status thread reads
    `summary()`. A new model version starts over.
    """

    def __init__(self, window: int = DEFAULT_WINDOW, method: str = "auto") -> None:
        if window < 1:
            raise ValueError(f"estimate window {window} must be ≥ 1")
        if method not in ("auto", *METHODS):
            raise ValueError(f"estimate method {method!r} must be auto or one of {METHODS}")
        self.window = window
        self.method = method
        self._lock = threading.Lock()
        self._conf = np.zeros(window)
        self._right = np.full(window, -1, np.int8)  # 1 right, 0 wrong, -1 unlabeled
        self._n = 0  # windows seen since the model changed
        self._version: int | None = None
        self._ref = Reference()

    def observe(
        self,
        version: int,
        metrics: Mapping[str, Any],
        confidence: npt.NDArray[np.floating[Any]],
        predicted: npt.NDArray[np.integer[Any]],
        labels: Sequence[int | None],
    ) -> None:
        """One classified batch of model `version` (manifest `metrics`)."""
        right = np.fromiter(
            (
                -1 if y is None else int(y == p)
                for y, p in zip(labels, predicted.tolist(), strict=True)
            ),
            np.int8,
            len(labels),
        )
        conf = np.asarray(confidence, np.float64)[-self.window :]
        right = right[-self.window :]
        with self._lock:
            if version != self._version:
                self._version, self._n = version, 0
                self._ref = Reference.from_metrics(metrics)
                self._right[:] = -1
            idx = (self._n + np.arange(len(conf))) % self.window
            self._conf[idx] = conf
            self._right[idx] = right
            self._n += len(conf)

    def reset(self) -> None:
        with self._lock:
            self._version, self._n = None, 0

    def summary(self) -> dict[str, Any]:
        """`detail.estimate` as JSON: {accuracy_est, windows, labeled_accuracy, labeled, method,
        model_version}; accuracy_est is None before any window."""
        return self.detail().to_json_obj()

    def detail(self) -> EstimateDetail:
        """`detail.estimate` of the status (protocol.status_detail.EstimateDetail)."""
        with self._lock:
            n = min(self._n, self.window)
            conf, right, ref = self._conf[:n].copy(), self._right[:n], self._ref
            version = self._version
            labeled = right[right >= 0]
        how = ref.method(self.method)
        est = estimate(conf, ref, how) if n else None
        return EstimateDetail(
            accuracy_est=finite_or_none(None if est is None else round(est, 4)),
            windows=n,
            labeled_accuracy=round(float(labeled.mean()), 4) if len(labeled) else None,
            labeled=len(labeled),
            method=how,
            model_version=version,
        )

    @property
    def sure_at(self) -> float:
        """The serving model's `sure_at` (which windows a label request may skip)."""
        with self._lock:
            ref = self._ref
        return sure_at(ref)

    @property
    def accuracy_est(self) -> float | None:
        return self.summary()["accuracy_est"]  # type: ignore[no-any-return]
