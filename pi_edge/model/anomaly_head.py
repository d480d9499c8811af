"""Serving a classifier with an anomaly head (manifest task "classify" with `anomaly`): a fault
of a class the model does not know is still `anomaly` after class growth (issue 24).

The trainer grows a cold start's anomaly model into a classifier of the faults labeled so far
(jetson_trainer/build/class_growth.py) and gives it a second output, computed in the same
LiteRT call (jetson_trainer/build/anomaly_head.py): `[u, r]` per window, u = s / (1 + s) with s
the window's distance to the normal data over the manifest's threshold (0.5 at it), r ≥ 0 when
the window deviates the way the labeled windows of the class the classifier picked do (r < 0
when it picked the healthy class, or a fault whose labeled windows deviate elsewhere).

A window is `anomaly` when u > 0.5 and r < 0: unlike the healthy data and not recognised as a
known fault. `HeadedClassifier` gives what a classifier gives, over the model's classes and
`anomaly` (K + 1 probabilities): a recognised window keeps its probabilities (and 0 for
`anomaly`); a flagged one gets `anomaly` with p = min(1, s / 2), as an anomaly model's verdict
(model/anomaly.py), and the rest scaled by 1 − p, so `anomaly` is its top class. The node's
anomaly paths then do the rest: states and events, kept and shipped windows (model/vocabulary.py:
`anomaly` is none of the type's classes), label requests (loop/ask_flagged.py).

>>> probs = np.array([[0.99, 0.01], [0.02, 0.98], [0.97, 0.03], [0.1, 0.9]], np.float32)
>>> head = np.array([[0.2, -1.0], [0.9, 0.3], [0.8, -0.9], [0.75, -0.2]], np.float32)
>>> out, ratio = headed_probabilities(probs, head)
>>> out.argmax(axis=1).tolist(), np.round(out[:, 2], 2).tolist(), np.round(ratio, 1).tolist()
([0, 1, 2, 2], [0.0, 0.0, 1.0, 1.0], [0.3, 9.0, 4.0, 3.0])
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from protocol import Manifest
from protocol.machine_state import ANOMALY

from ..errors import ModelError
from .classifier import Classifier

__all__ = ["HeadedClassifier", "head_flags", "headed_probabilities", "is_headed"]


def is_headed(manifest: Manifest) -> bool:
    """Whether the bundle's classifier carries an anomaly head (a second output)."""
    return manifest.has_head


def head_flags(head: npt.NDArray[np.float32]) -> npt.NDArray[np.bool_]:
    """The anomaly verdict of each head output [u, r]: u > 0.5 and r < 0.

    >>> head_flags(np.array([[0.6, -0.1], [0.6, 0.1], [0.4, -0.5]])).tolist()
    [True, False, False]
    """
    return (head[:, 0] > 0.5) & (head[:, 1] < 0.0)


def headed_probabilities(
    probs: npt.NDArray[np.float32], head: npt.NDArray[np.float32]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64]]:
    """(n, K + 1) probabilities over the model's classes and `anomaly`, and score / threshold
    (s = u / (1 − u)) per window (see the module doc)."""
    u = np.clip(head[:, 0].astype(np.float64), 0.0, 1.0 - 1e-7)
    ratio = u / (1.0 - u)
    flagged = head_flags(head)
    a = np.where(flagged, np.minimum(1.0, ratio / 2.0), 0.0)
    out = np.concatenate([probs * (1.0 - a)[:, None], a[:, None]], axis=1)
    return out.astype(np.float32), ratio


class HeadedClassifier:
    """A classifier with an anomaly head on this node: raw windows in, probabilities over its
    classes and `anomaly` out. Not thread-safe (one worker owns it, like a Classifier)."""

    def __init__(self, classifier: Classifier) -> None:
        manifest = classifier.manifest
        if not classifier.has_head:
            raise ModelError(
                f"bundle v{manifest.version} names no anomaly head", kind="incompatible"
            )
        self.inner = classifier
        self.manifest = manifest
        self.threshold = float((manifest.anomaly or {})["threshold"])
        self.classes: tuple[str, ...] = (*manifest.classes, ANOMALY)
        self.last_ratio: npt.NDArray[np.float64] = np.zeros(0)  # of the last `predict`
        self.last_probs: npt.NDArray[np.float32] = np.zeros((0, len(manifest.classes)), np.float32)

    @property
    def runtime(self) -> str:
        return self.inner.runtime

    @property
    def reallocations(self) -> int:
        return self.inner.reallocations

    def predict(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """(n, K + 1) probabilities; `last_probs` keeps the classifier's own (n, K), and
        `last_ratio` each window's score / threshold."""
        probs = self.inner.predict(x)
        out, self.last_ratio = headed_probabilities(probs, self.inner.last_head)
        self.last_probs = probs
        return out

    def check_golden(self) -> int:
        """The classifier's golden vectors, then the head's golden outputs: each within the
        manifest's tolerance and with the same verdict (ModelError(kind="golden"))."""
        n = self.inner.check_golden()  # runs the golden windows: last_head is theirs
        want = np.asarray((self.manifest.anomaly or {}).get("golden", []), np.float32)
        if not n:
            return 0
        got = self.inner.last_head
        if want.shape != got.shape:
            raise ModelError(
                f"anomaly.golden has shape {want.shape}, the head gives {got.shape}", "golden"
            )
        worst = float(np.max(np.abs(got - want)))
        flips = int((head_flags(got) != head_flags(want)).sum())
        if flips or worst > self.manifest.golden_tolerance:
            raise ModelError(
                f"golden anomaly-head outputs fail on this runtime ({self.runtime}): {flips}/"
                f"{len(want)} verdicts differ, max |Δ| {worst:.4f} > tolerance "
                f"{self.manifest.golden_tolerance}; the model does not run here as it did on "
                "the trainer",
                kind="golden",
            )
        return n
