"""One classified batch as the closed loop sees it, whatever kind of model served it.

A classifier trained on the whole machine type needs nothing here: its outputs index the
type's classes. An anomaly model (model/anomaly.py) or a classifier that knows only some of the
type's classes (grown from an anomaly model) does: the windows' labels are mapped onto the
model's outputs (model/vocabulary.py) before the drift watch, the health watch, the accuracy
estimate and the predictions see them, and the model's verdicts are mapped back onto the type's
classes for what goes to the trainer (kept windows, held windows for late labels). An anomaly
model's flagged windows are flagged out of distribution, so they are kept and shipped; so are
the windows a classifier's anomaly head flags (model/anomaly_head.py: outputs are the model's
classes and `anomaly`, the drift watch sees the classifier's own probabilities).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from protocol import Window

from ..model.anomaly import drift_view, flag_anomalies
from ..model.vetting import VettedModel
from ..model.vocabulary import Vocabulary, vocabulary
from .drift import Verdicts
from .drift_watch import DriftWatch

__all__ = ["ServedBatch", "serve_batch"]


@dataclass(frozen=True, slots=True)
class ServedBatch:
    """`seen`: the windows with labels as the model's output indices; `labels` those labels;
    `top` the model's verdicts; `declared_top` the same as the type's class indices (-1:
    `anomaly`); `verdicts` drift (and anomaly) flags; `vocab` the mapping."""

    vocab: Vocabulary
    seen: list[Window]
    labels: list[int | None]
    top: npt.NDArray[np.int64]
    declared_top: npt.NDArray[np.int64]
    verdicts: Verdicts


def serve_batch(
    model: VettedModel,
    declared: tuple[str, ...],
    drift: DriftWatch,
    windows: list[Window],
    x: npt.NDArray[np.float32],
    probs: npt.NDArray[np.float32],
) -> ServedBatch:
    """Map one batch `model` gave `probs` for onto its type's `declared` classes, and let the
    drift watch see it (see the module doc)."""
    scorer, head = model.anomaly, model.head
    vocab = vocabulary(declared, model.classes, scorer is not None)
    seen = vocab.relabel(windows)
    top = probs.argmax(axis=1)
    if head is not None:  # the drift watch sees the classifier; the head flags what it knows not
        inner = head.last_probs
        verdicts = drift.observe(seen, x, inner, inner.argmax(axis=1))
        flagged = (top == len(inner[0]) if len(inner) else top < 0).astype(np.int64)
        verdicts = flag_anomalies(verdicts, flagged, head.last_ratio)
    elif scorer is None:
        verdicts = drift.observe(seen, x, probs, top)
    else:
        one_class, ones, zeros = drift_view(seen, probs)
        verdicts = flag_anomalies(drift.observe(one_class, x, ones, zeros), top, scorer.last_ratio)
    labels = [None if w.label is None else int(w.label) for w in seen]
    return ServedBatch(vocab, seen, labels, top, vocab.declared_of(top), verdicts)
