"""Honest quality figures of a classified stream: pure functions over arrays, no model, no clock.

Accuracy hides rare faults (a model that always says "normal" scores 0.95 on a plant with 5 %
fault time), so bench/plant.py reports these beside it:

* `macro_f1` and `per_class_recall` against the TRUE classes;
* `detection_delays`: per true fault episode, onset → the first window at or after it whose
  debounced machine state is a fault (None: not before the episode ended);
* `false_fault_events`: changes of the debounced state to a fault class while the machine was
  truly normal;
* `alarm_count`: how often a state sequence enters an alarm state (drift alarms).

>>> true = np.array([0, 0, 0, 1, 1, 2])
>>> pred = np.array([0, 0, 1, 1, 0, 2])
>>> round(accuracy(true, pred), 3), round(macro_f1(true, pred, 4), 3)
(0.667, 0.722)
>>> [round(r, 2) for r in per_class_recall(true, pred, 4)]
[0.67, 0.5, 1.0, nan]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from jetson_trainer.versions.gate import macro_f1  # the gate's own: one definition

__all__ = [
    "Episode",
    "accuracy",
    "alarm_count",
    "confusion",
    "detection_delays",
    "episodes",
    "false_fault_events",
    "macro_f1",
    "per_class_recall",
    "percentile",
]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
NORMAL = 0
UNKNOWN = -1  # a debounced state that is not known yet


def confusion(true: npt.ArrayLike, pred: npt.ArrayLike, k: int) -> IntArray:
    """k × k counts, rows true, columns predicted.

    >>> confusion([0, 1, 1], [0, 1, 0], 2).tolist()
    [[1, 0], [1, 1]]
    """
    t, p = np.asarray(true, np.int64), np.asarray(pred, np.int64)
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k)


def accuracy(true: npt.ArrayLike, pred: npt.ArrayLike) -> float:
    t, p = np.asarray(true), np.asarray(pred)
    return float((t == p).mean()) if t.size else math.nan


def per_class_recall(true: npt.ArrayLike, pred: npt.ArrayLike, k: int) -> list[float]:
    """Recall per class (NaN for a class absent from `true`)."""
    cm = confusion(true, pred, k)
    support = cm.sum(axis=1)
    return [float(cm[i, i] / support[i]) if support[i] else math.nan for i in range(k)]


@dataclass(frozen=True, slots=True)
class Episode:
    """One true fault of one machine: class, onset and end (the first normal window's time)."""

    machine: int
    cls: int
    onset: float
    end: float


def episodes(true: npt.ArrayLike, machine: npt.ArrayLike, time_s: npt.ArrayLike) -> list[Episode]:
    """The fault episodes of a stream: maximal runs of one machine's non-normal windows.

    A run still open at the end of the stream ends at +inf. Onset is the first fault
    window's time (the true onset lies within one window period before it).

    >>> episodes([0, 1, 1, 0, 2], [0, 0, 0, 0, 0], [0, 1, 2, 3, 4])
    [Episode(machine=0, cls=1, onset=1.0, end=3.0), Episode(machine=0, cls=2, onset=4.0, end=inf)]
    """
    t, m, ts = np.asarray(true), np.asarray(machine), np.asarray(time_s, np.float64)
    out: list[Episode] = []
    for mid in np.unique(m):
        idx = np.flatnonzero(m == mid)
        cls, times = t[idx], ts[idx]
        start = None
        for j in range(len(idx)):
            if start is not None and cls[j] != cls[start]:
                out.append(Episode(int(mid), int(cls[start]), float(times[start]), float(times[j])))
                start = None
            if start is None and cls[j] != NORMAL:
                start = j
        if start is not None:
            out.append(Episode(int(mid), int(cls[start]), float(times[start]), math.inf))
    return sorted(out, key=lambda e: (e.onset, e.machine))


def detection_delays(
    found: list[Episode], state: npt.ArrayLike, machine: npt.ArrayLike, time_s: npt.ArrayLike
) -> list[float | None]:
    """Per episode, seconds from onset to the first window (of that machine, at or after the
    onset, before the end) whose debounced `state` is a fault class; None if none.

    `state` is the debounced class per window (UNKNOWN −1 while unknown).

    >>> ep = episodes([0, 1, 1, 1, 0], [0] * 5, [0, 10, 20, 30, 40])
    >>> detection_delays(ep, [0, 0, 0, 1, 1], [0] * 5, [0, 10, 20, 30, 40])
    [20.0]
    >>> detection_delays(ep, [0, 0, 0, 0, 1], [0] * 5, [0, 10, 20, 30, 40])  # only after it ended
    [None]
    """
    s, m, ts = np.asarray(state), np.asarray(machine), np.asarray(time_s, np.float64)
    out: list[float | None] = []
    for ep in found:
        hit = np.flatnonzero((m == ep.machine) & (ts >= ep.onset) & (ts < ep.end) & (s > NORMAL))
        out.append(float(ts[hit[0]] - ep.onset) if hit.size else None)
    return out


def false_fault_events(state: npt.ArrayLike, true: npt.ArrayLike, machine: npt.ArrayLike) -> int:
    """Changes of a machine's debounced state to a fault class while its true class is normal.

    >>> false_fault_events([0, 2, 2, 0, 0, 3], [0, 0, 0, 0, 1, 1], [0] * 6)  # the 1st only
    1
    """
    s, t, m = np.asarray(state), np.asarray(true), np.asarray(machine)
    count = 0
    for mid in np.unique(m):
        idx = np.flatnonzero(m == mid)
        ss, tt = s[idx], t[idx]
        prev = np.r_[UNKNOWN, ss[:-1]]
        changed_to_fault = (ss > NORMAL) & (ss != prev)
        count += int((changed_to_fault & (tt == NORMAL)).sum())
    return count


def alarm_count(states: npt.ArrayLike, alarm: int) -> int:
    """How often a state sequence enters `alarm` (from any other state).

    >>> alarm_count([0, 1, 2, 2, 0, 2], alarm=2)
    2
    """
    s = np.asarray(states)
    prev = np.r_[-1, s[:-1]] if s.size else s
    return int(((s == alarm) & (prev != alarm)).sum())


def percentile(values: list[float | None], q: float) -> float:
    """The q-th percentile of the non-None values (NaN when there are none).

    >>> percentile([1.0, None, 3.0], 50)
    2.0
    """
    got = [v for v in values if v is not None]
    return float(np.percentile(got, q)) if got else math.nan
