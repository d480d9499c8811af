"""An anomaly model's node asks for the labels of what it flags (issue 24, cold start).

A type with no fault history serves an anomaly model: it can say that a window is unusual, not
what is wrong. A technician's label of a flagged window is how the type learns its first fault
classes (the trainer grows the class list), so the node asks for the windows it flagged —
whatever its drift state or accuracy estimate — within the same budget and spread over
machines as every label request (loop/label_requests.py). Held windows an anomaly model flagged
carry the predicted index -1 (model/vocabulary.py: `anomaly` is none of the type's classes).

>>> from protocol import Window
>>> import numpy as np
>>> w = [Window(m, i, 10**9 + i, np.zeros((2, 1), np.float32)) for i, m in enumerate("aab")]
>>> held = [(w[0], -1, 0.9, 0.8), (w[1], 0, 0.99, 0.98), (w[2], -1, 0.6, 0.2)]
>>> asker = LabelAsker(AskConfig(per_minute=8))
>>> [(c.machine, c.seq) for c in ask_flagged(asker, held, now=0.0)]
[('b', 2), ('a', 0)]
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from protocol import Window

from .label_requests import AskConfig, Candidate, LabelAsker

__all__ = ["AskConfig", "ask_flagged"]


def ask_flagged(
    asker: LabelAsker, held: Iterable[tuple[Window, int, float, float]], now: float
) -> list[Candidate]:
    """The flagged held windows (predicted -1) to ask for now; [] when not due."""
    if not asker.due_flagged(now):
        return []
    return asker.pick(
        (
            Candidate(w.machine, w.seq, w.timestamp_ns, p, conf, margin)
            for w, p, conf, margin in held
            if p < 0 and w.timestamp_ns > 0  # a window without a sensor time cannot be named
        ),
        now,
        sure_at=math.inf,
    )
