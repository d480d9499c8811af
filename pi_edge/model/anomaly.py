"""Serving an anomaly model (manifest task "anomaly"): a score per window against the manifest's
threshold, turned into the two classes the rest of the node speaks — the type's healthy class
and `anomaly`.

The trainer's anomaly model (jetson_trainer/build/anomaly.py) has one output, a distance to the
normal data (≈ 1 on normal windows). `AnomalyScorer` wraps
the node's one interpreter loader (`Classifier`) and gives what a classifier gives, so the
worker, drift watch, kept windows, debounced states and predictions need no second path:
`predict` returns (n, 2) probabilities over (healthy, `anomaly`) as protocol/README.md
("Prediction") defines them, `[1 − p, p]` with

    p = min(1, score / (2 × threshold))

0.5 at the threshold, so a window is `anomaly` (argmax 1) when its score is above the threshold,
and the confidence says how far from it the score is (1 at score 0 or at twice the threshold).
`last_ratio` keeps score / threshold, which the prediction carries as its `ood_score` (1 = the
threshold) and `ood` is true for an anomalous window.

The golden vectors of an anomaly manifest hold raw scores (`"probs": [score]`); they pass when
each score is within the manifest's tolerance relative to max(1, score) and on the same side of
the threshold.

>>> s = np.array([0.5, 2.0, 4.0, 6.0, 80.0, 0.0])
>>> p = anomaly_probabilities(s, 4.0)
>>> p.argmax(axis=1).tolist(), p[:, 1].tolist()
([0, 0, 0, 1, 1, 0], [0.0625, 0.25, 0.5, 0.75, 1.0, 0.0])
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from protocol import Manifest, Window
from protocol.machine_state import ANOMALY

from ..errors import ModelError
from ..loop.drift import Verdicts
from .classifier import Classifier

__all__ = [
    "AnomalyScorer",
    "anomaly_probabilities",
    "drift_view",
    "flag_anomalies",
    "is_anomaly",
    "threshold_of",
]


def is_anomaly(manifest: Manifest) -> bool:
    """Whether the bundle's model scores windows (task "anomaly") instead of classifying them."""
    return manifest.task == "anomaly"


def threshold_of(manifest: Manifest) -> float:
    """The manifest's score threshold (ModelError(kind="incompatible") if it has none)."""
    settings = manifest.anomaly or {}
    threshold = settings.get("threshold")
    if not isinstance(threshold, int | float) or not threshold > 0:
        raise ModelError(
            f"bundle v{manifest.version} is an anomaly model without a positive "
            f"anomaly.threshold ({threshold!r}); publish one the trainer made with --task anomaly",
            kind="incompatible",
        )
    return float(threshold)


def anomaly_probabilities(scores: npt.ArrayLike, threshold: float) -> npt.NDArray[np.float32]:
    """(n, 2) probabilities (healthy, `anomaly`) of `scores`: p = min(1, score / (2 threshold))."""
    p = np.clip(np.asarray(scores, np.float64) / (2.0 * threshold), 0.0, 1.0)
    return np.stack([1.0 - p, p], axis=1).astype(np.float32)


class AnomalyScorer:
    """An anomaly model on this node: raw windows in, (healthy, `anomaly`) probabilities out.

    Not thread-safe (one worker owns it, like a Classifier). `classes` are its output classes.
    """

    def __init__(self, classifier: Classifier) -> None:
        manifest = classifier.manifest
        if len(manifest.classes) != 1:
            raise ModelError(
                f"anomaly model v{manifest.version} names {len(manifest.classes)} classes; an "
                "anomaly model knows only the healthy one",
                kind="incompatible",
            )
        self.inner = classifier
        self.manifest = manifest
        self.threshold = threshold_of(manifest)
        self.classes: tuple[str, ...] = (manifest.classes[0], ANOMALY)
        self.last_ratio: npt.NDArray[np.float64] = np.zeros(0)  # of the last `predict`

    @property
    def runtime(self) -> str:
        return self.inner.runtime

    @property
    def reallocations(self) -> int:
        return self.inner.reallocations

    def scores(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """The model's raw score per window (n,)."""
        return self.inner.predict(x)[:, 0].astype(np.float64)

    def predict(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """(n, 2) probabilities of (healthy, `anomaly`); `last_ratio` keeps score / threshold."""
        s = self.scores(x)
        self.last_ratio = s / self.threshold
        return anomaly_probabilities(s, self.threshold)

    def check_golden(self) -> int:
        """Run the golden scores; ModelError(kind="golden") unless each is within tolerance
        (relative to max(1, score)) and on the same side of the threshold. Returns how many."""
        golden = self.manifest.golden
        if not golden:
            return 0
        try:
            x = np.asarray([g["x"] for g in golden], dtype=np.float32)
            want = np.asarray([g["probs"] for g in golden], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"manifest golden vectors are malformed: {exc}", "golden") from exc
        if x.shape[1:] != self.manifest.input_shape or want.shape != (len(x), 1):
            raise ModelError(
                f"golden vectors have shape {x.shape} / {want.shape}, expected "
                f"(n, {self.manifest.input_shape}) / (n, 1) scores",
                "golden",
            )
        got = self.scores(x)
        want = want[:, 0]
        rel = np.abs(got - want) / np.maximum(1.0, np.abs(want))
        flips = (got > self.threshold) != (want > self.threshold)
        worst = float(rel.max())
        if flips.any() or worst > self.manifest.golden_tolerance:
            raise ModelError(
                f"golden scores fail on this runtime ({self.runtime}): {int(flips.sum())}/"
                f"{len(flips)} verdicts differ, max relative |Δscore| {worst:.2e} > tolerance "
                f"{self.manifest.golden_tolerance}; the model does not run here as it did on "
                "the trainer",
                kind="golden",
            )
        return len(golden)


def flag_anomalies(
    verdicts: Verdicts, top: npt.NDArray[np.int64], ratio: npt.NDArray[np.float64]
) -> Verdicts:
    """The batch's drift verdicts with the anomaly model's own: each window it finds anomalous
    (`top` 1) is flagged out of distribution (so it is kept and shipped to the trainer), and
    every window's out-of-distribution score is its score / threshold (1 = the threshold).

    >>> v = flag_anomalies(Verdicts.quiet(3), np.array([0, 1, 0]), np.array([0.2, 3.0, 0.9]))
    >>> v.flags.tolist(), v.ood_score.tolist(), v[1].reason
    ([0, 1, 0], [0.2, 3.0, 0.9], 'out_of_distribution')
    """
    flags = np.where(top == 1, np.int8(1), verdicts.flags).astype(np.int8)
    return Verdicts(verdicts.states, np.asarray(ratio, np.float64), flags)


def drift_view(
    windows: list[Window], probs: npt.NDArray[np.float32]
) -> tuple[list[Window], npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """What the drift watch sees of a batch an anomaly model scored: a one-class model (the
    healthy class, probability 1, the reference its manifest's statistics describe), and only
    the labels of healthy windows (`windows` have the model's output labels: 0 healthy, 1 a
    fault). Input drift still measures the windows against the healthy statistics; whether a
    fault was flagged is the anomaly verdict's business, not an accuracy drift.
    """
    n = len(windows)
    seen = [w if w.label in (None, 0) else dataclasses.replace(w, label=None) for w in windows]
    return seen, np.ones((n, 1), np.float32), np.zeros(n, np.int64)
