"""Where a machine type's class list meets its serving model's: window labels and drift-batch
records index the type's declared classes, a model's outputs index its own.

They are the same list for a classifier trained on the whole type (every model before cold
start). They differ for an anomaly model, whose outputs are (healthy, `anomaly`), and for a
classifier that knows only some of the type's classes yet (the trainer grows a type's class
list as technicians label new faults: protocol/README.md, "Anomaly models and class growth").
`Vocabulary` maps both ways, so the node can keep speaking the model's words on the wire
(predictions, states, events) and the type's words to the trainer (kept windows):

- a window's label, as the model's output index: the same name; for an anomaly model the
  healthy class is 0 and every other class 1 (`anomaly`: what the model should have flagged);
  a class the model does not know is None (not counted against it);
- a prediction, as the type's index: the same name; `anomaly` (or a class the type does not
  declare) is -1 (none), so a flagged window goes to the trainer unlabeled, with its reason.

>>> v = Vocabulary(("normal", "bearing_fault", "drive_wear"), ("normal", "anomaly"), True)
>>> v.served_label(0), v.served_label(2), v.declared_of(np.array([0, 1])).tolist()
(0, 1, [0, -1])
>>> g = Vocabulary(("normal", "bearing_fault", "drive_wear"), ("normal", "drive_wear"), False)
>>> g.identity, g.served_label(1), g.served_label(2), g.declared_of(np.array([1, 0])).tolist()
(False, None, 1, [2, 0])
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from protocol import Window

__all__ = ["Vocabulary", "vocabulary"]


class Vocabulary:
    """The type's `declared` classes against a model's `served` (output) classes (see above)."""

    __slots__ = ("_to_declared", "_to_served", "anomaly", "declared", "identity", "served")

    def __init__(
        self, declared: Sequence[str], served: Sequence[str], anomaly: bool = False
    ) -> None:
        self.declared = tuple(declared)
        self.served = tuple(served)
        self.anomaly = anomaly
        self.identity = self.declared == self.served and not anomaly
        index = {c: i for i, c in enumerate(self.served)}
        healthy = self.served[0]
        self._to_served: list[int | None] = [
            (0 if c == healthy else 1) if anomaly else index.get(c) for c in self.declared
        ]
        where = {c: i for i, c in enumerate(self.declared)}
        self._to_declared = np.array([where.get(c, -1) for c in self.served], np.int64)

    def served_label(self, label: int | None) -> int | None:
        """A window's label (the type's index) as the model's output index (None: unknown)."""
        if label is None or not 0 <= label < len(self._to_served):
            return None
        return self._to_served[label]

    def declared_of(self, top: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """The model's predictions as the type's indices (-1: `anomaly`, or not the type's)."""
        return self._to_declared[np.asarray(top, np.int64)]

    def relabel(self, windows: list[Window]) -> list[Window]:
        """`windows` with labels as the model's output indices (the same list when identical)."""
        if self.identity:
            return windows
        return [
            w if w.label is None else dataclasses.replace(w, label=self.served_label(int(w.label)))
            for w in windows
        ]


@functools.lru_cache(maxsize=32)
def vocabulary(declared: tuple[str, ...], served: tuple[str, ...], anomaly: bool) -> Vocabulary:
    """The (cached) Vocabulary of a type's classes against a serving model's."""
    return Vocabulary(declared, served, anomaly)
