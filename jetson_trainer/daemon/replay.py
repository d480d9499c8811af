"""Which original windows a fine-tune replays: the ones the champion agrees with, class-balanced.

Replay keeps a fine-tuned model from forgetting the original conditions. Drawn at random from a
plant's history it fails twice (issue 14, offline on `--realism plant` data):

* faults are rare (5 % of machine-time), so 1,000 random windows hold about 15 of each fault
  and the fine-tune forgets them: macro-F1 on the original holdout fell 0.796 → 0.76–0.78 and
  the gate refused every challenger;
* labels are 5 % wrong, so a fault's labels are up to half mislabeled normal windows: a
  class-balanced draw of the raw labels teaches "normal looks like a fault" (macro-F1 0.3).

Keeping only windows whose label the champion also predicts drops most wrong labels (and the
subtle early stages a label cannot be learned from anyway); balancing the classes among those
keeps every fault in the replay. Offline, 24 plant hours of drift labels then recovered the
drifted macro-F1 to 0.89–0.90 while the original holdout's stayed within 1 point (3 seeds).
On seed-style data the champion agrees with every label and the classes are balanced already:
the draw is an ordinary random one.

>>> y = np.array([0] * 8 + [1, 1, 2])
>>> pred = np.array([0] * 8 + [1, 0, 2])        # the champion disagrees with one "1" label
>>> idx = pick_replay(pred, y, 6, np.random.default_rng(0))
>>> sorted(np.bincount(y[idx], minlength=3).tolist()), bool((pred[idx] == y[idx]).all())
([2, 2, 2], True)
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["pick_replay"]


def pick_replay(
    pred: npt.ArrayLike, y: npt.ArrayLike, size: int, rng: np.random.Generator
) -> npt.NDArray[np.int64]:
    """Indices of `size` replay windows: an equal share for every class among the windows
    whose label `y` the champion's prediction `pred` matches (a class with fewer such windows
    is repeated). A class the champion never gets right is left out; when it gets no label
    right at all, a plain random draw (better some replay than none)."""
    pred, y = np.asarray(pred), np.asarray(y)
    if size <= 0 or len(y) == 0:
        return np.zeros(0, np.int64)
    agree = pred == y
    classes = [c for c in np.unique(y) if (agree & (y == c)).any()]
    if not classes:
        return rng.choice(len(y), min(size, len(y)), replace=False).astype(np.int64)
    share = [size // len(classes) + (i < size % len(classes)) for i in range(len(classes))]
    parts = []
    for c, n in zip(classes, share, strict=True):
        pool = np.flatnonzero(agree & (y == c))
        parts.append(rng.choice(pool, n, replace=len(pool) < n))
    return np.sort(np.concatenate(parts)).astype(np.int64)
