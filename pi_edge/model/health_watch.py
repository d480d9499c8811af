"""Is the model just swapped in clearly worse than the one it replaced? (pure; the clock comes in)

After a swap to a newer model the node watches it for `--watch-s` seconds and compares its
figures on live windows with the figures the previous model had on this node just before the
swap (`Rolling`: the last 500 windows and, since labels are rarer, the last 200 labeled ones).
Three figures, per window: the top probability (confidence), the drift monitor's
out-of-distribution flag, and — on labeled windows — whether the prediction was right.

The rule (`judge`, defaults in `HealthPolicy`):

  labeled accuracy   with ≥ `min_labeled` (20) labeled windows on both sides it alone decides:
                     worse when a one-sided test says the accuracy fell by more than
                     `accuracy_margin` (0.05): z ≥ `z` (2.33, α = 1 %), with the Agresti–Caffo
                     interval (one success and one failure added to each side), which stays
                     honest at 20 labels and at accuracies of 0 or 1. Not worse by that test:
                     the label-free figures are not consulted (labels outrank them).
  mean confidence    ≥ `min_windows` (200) windows on both sides: worse when it fell by more
                     than `confidence_drop` (0.15). A confidence lies in [0, 1], so the mean of
                     200 has a standard error ≤ 0.035 — 0.15 is > 4 of them (fewer, if a
                     machine's windows are correlated: hence the margin, not a z-test).
  out of distribution  ≥ `min_windows` on both sides: worse when the share of flagged windows
                     rose by more than `ood_rise` (0.2).

A model fine-tuned for a drift is expected to differ from the old one on the drifted data, so a
small change of confidence is no reason; and if labels flowed before the swap (the baseline has
`min_labeled` of them), the label-free figures wait for labels until the watch ends and decide
only if too few came. At the end of the watch a model not found worse passes; one with too few
windows to judge is kept ("inconclusive": no rollback without evidence).
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from protocol.status_detail import HealthFigures, ModelHealthDetail, clip_text

__all__ = [
    "Figures",
    "HealthPolicy",
    "HealthState",
    "HealthWatch",
    "ModelHealth",
    "Rolling",
    "Verdict",
    "accuracy_drop_z",
    "judge",
]

REASON_MAX = 200  # characters of a verdict's reason (it goes into the status)


@dataclass(frozen=True, slots=True)
class Figures:
    """Sums over some windows of one model: windows, their confidences, out-of-distribution
    flags, labeled windows and how many of those it got right.

    >>> f = Figures(windows=4, confidence_sum=3.0, ood=1, labeled=2, correct=1)
    >>> f.mean_confidence, f.ood_rate, f.accuracy
    (0.75, 0.25, 0.5)
    >>> (f + f).windows, Figures().accuracy
    (8, None)
    """

    windows: int = 0
    confidence_sum: float = 0.0
    ood: int = 0
    labeled: int = 0
    correct: int = 0

    def __post_init__(self) -> None:
        if min(self.windows, self.ood, self.labeled, self.correct) < 0:
            raise ValueError(f"figures cannot be negative: {self}")
        if self.ood > self.windows or self.correct > self.labeled:
            raise ValueError(f"more flagged than windows or more right than labeled: {self}")
        if not 0.0 <= self.confidence_sum <= self.windows + 1e-6 * max(self.windows, 1):
            raise ValueError(f"confidence sum outside [0, windows]: {self}")

    def __add__(self, other: Figures) -> Figures:
        return Figures(
            self.windows + other.windows,
            self.confidence_sum + other.confidence_sum,
            self.ood + other.ood,
            self.labeled + other.labeled,
            self.correct + other.correct,
        )

    @property
    def mean_confidence(self) -> float | None:
        return self.confidence_sum / self.windows if self.windows else None

    @property
    def ood_rate(self) -> float | None:
        return self.ood / self.windows if self.windows else None

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labeled if self.labeled else None

    @classmethod
    def of_batch(
        cls,
        probabilities: npt.NDArray[np.float32],
        predicted: npt.NDArray[np.int64],
        ood: npt.NDArray[np.bool_],
        labels: Sequence[int | None],
    ) -> Figures:
        """A classified micro-batch's figures: (N, K) probabilities, their argmax, the drift
        monitor's out-of-distribution flags and the windows' labels (None: unlabeled).

        >>> p = np.array([[0.9, 0.1], [0.4, 0.6], [0.5, 0.5]], np.float32)
        >>> Figures.of_batch(p, p.argmax(axis=1), np.array([0, 1, 0], bool), [0, 0, None])
        Figures(windows=3, confidence_sum=2.0, ood=1, labeled=2, correct=1)
        >>> Figures.of_batch(p * np.nan, np.array([0, 1, 0]), np.zeros(3, bool), [None] * 3)
        Figures(windows=3, confidence_sum=0.0, ood=0, labeled=0, correct=0)
        """
        n = len(predicted)
        top = np.clip(probabilities[np.arange(n), predicted], 0.0, 1.0)  # NaN stays NaN
        labeled = correct = 0
        for label, guess in zip(labels, predicted.tolist(), strict=True):
            if label is not None:
                labeled += 1
                correct += label == guess
        return cls(
            n,
            min(round(float(np.nansum(top, dtype=np.float64)), 6), float(n)),  # NaN: 0
            int(np.count_nonzero(ood)),
            labeled,
            correct,
        )

    def detail(self) -> HealthFigures:
        """For the status (`detail.model_health`): counts and rates, rounded to 4 places (None
        where there is nothing to divide by)."""

        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 4)

        return HealthFigures(
            self.windows, r(self.mean_confidence), r(self.ood_rate), self.labeled, r(self.accuracy)
        )

    def to_dict(self) -> dict[str, Any]:
        """The status's JSON form of `detail()`.

        >>> Figures(windows=4, confidence_sum=3.0, ood=1).to_dict()
        {'windows': 4, 'mean_confidence': 0.75, 'ood_rate': 0.25, 'labeled': 0, 'accuracy': None}
        """
        return self.detail().to_json_obj()


class Rolling:
    """Figures of the serving model over its last `windows` windows and, separately, its last
    `labeled` labeled windows (labels are rarer), in whole micro-batches.

    >>> r = Rolling(windows=4, labeled=2)
    >>> for _ in range(3):
    ...     r.add(Figures(windows=2, confidence_sum=1.0, labeled=1, correct=1))
    >>> r.figures()
    Figures(windows=4, confidence_sum=2.0, ood=0, labeled=2, correct=2)
    """

    def __init__(self, windows: int = 500, labeled: int = 200) -> None:
        if windows < 1 or labeled < 1:
            raise ValueError("a rolling window needs room for at least one window")
        self.max_windows = windows
        self.max_labeled = labeled
        self._batches: deque[tuple[int, float, int]] = deque()  # windows, confidence, ood
        self._labels: deque[tuple[int, int]] = deque()  # labeled, correct
        self._windows = 0
        self._labeled = 0

    def add(self, f: Figures) -> None:
        if f.windows:
            self._batches.append((f.windows, f.confidence_sum, f.ood))
            self._windows += f.windows
            while self._windows - self._batches[0][0] >= self.max_windows:
                self._windows -= self._batches.popleft()[0]
        if f.labeled:
            self._labels.append((f.labeled, f.correct))
            self._labeled += f.labeled
            while self._labeled - self._labels[0][0] >= self.max_labeled:
                self._labeled -= self._labels.popleft()[0]

    def figures(self) -> Figures:
        return Figures(
            self._windows,
            min(sum(b[1] for b in self._batches), float(self._windows)),
            sum(b[2] for b in self._batches),
            self._labeled,
            sum(c for _, c in self._labels),
        )

    def clear(self) -> None:
        self._batches.clear()
        self._labels.clear()
        self._windows = self._labeled = 0


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """When a newly swapped-in model is clearly worse (see the module docstring)."""

    min_windows: int = 200
    confidence_drop: float = 0.15
    ood_rise: float = 0.2
    min_labeled: int = 20
    accuracy_margin: float = 0.05
    z: float = 2.33
    rolling_windows: int = 500
    rolling_labeled: int = 200

    def __post_init__(self) -> None:
        for name in ("min_windows", "min_labeled", "rolling_windows", "rolling_labeled"):
            if getattr(self, name) < 1:
                raise ValueError(f"health policy {name} must be ≥ 1")
        for name in ("confidence_drop", "ood_rise", "accuracy_margin"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"health policy {name} must be within [0, 1)")
        if self.z <= 0:
            raise ValueError("health policy z must be > 0")
        if self.rolling_windows < self.min_windows or self.rolling_labeled < self.min_labeled:
            raise ValueError(
                "health policy: the rolling figures of the serving model must hold at least "
                "min_windows windows and min_labeled labeled windows, or no baseline ever suffices"
            )


class HealthState(enum.Enum):
    WATCHING = "watching"
    PASSED = "passed"
    WORSE = "worse"
    INCONCLUSIVE = "inconclusive"

    @property
    def final(self) -> bool:
        return self is not HealthState.WATCHING


@dataclass(frozen=True, slots=True)
class Verdict:
    """A watch's state, why, and which figure decided ("accuracy", "confidence", "ood")."""

    state: HealthState
    reason: str
    signal: str | None = None

    def __post_init__(self) -> None:
        if len(self.reason) > REASON_MAX:
            object.__setattr__(self, "reason", self.reason[: REASON_MAX - 1] + "…")


def accuracy_drop_z(before: Figures, after: Figures, margin: float) -> float:
    """One-sided z of "accuracy fell by more than `margin`" (Agresti–Caffo adjusted).

    >>> round(accuracy_drop_z(Figures(100, 90.0, 0, 100, 98), Figures(30, 25.0, 0, 30, 3), 0.05), 1)
    13.1
    >>> accuracy_drop_z(Figures(100, 90.0, 0, 100, 98), Figures(30, 25.0, 0, 30, 29), 0.05) < 0
    True
    """
    n1, n2 = before.labeled + 2, after.labeled + 2
    p1, p2 = (before.correct + 1) / n1, (after.correct + 1) / n2
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    return (p1 - p2 - margin) / se


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def judge(baseline: Figures, current: Figures, policy: HealthPolicy, final: bool) -> Verdict:
    """The verdict on `current` (the new model since the swap) against `baseline` (the previous
    model before it); `final` at the end of the watch. Labeled accuracy outranks the rest.

    >>> p = HealthPolicy()
    >>> old = Figures(windows=500, confidence_sum=475.0, ood=5, labeled=100, correct=98)
    >>> bad = Figures(windows=150, confidence_sum=142.0, ood=1, labeled=25, correct=2)
    >>> v = judge(old, bad, p, final=False)
    >>> v.state.value, v.signal
    ('worse', 'accuracy')
    >>> v.reason
    'labeled accuracy 0.08 on 25 windows vs 0.98 on 100 before the swap: lower by > 0.05 (z 12.9)'
    >>> unsure = Figures(windows=500, confidence_sum=300.0, ood=0, labeled=25, correct=25)
    >>> judge(old, unsure, p, final=True).state.value  # labels say fine: confidence ignored
    'passed'
    """
    p = policy
    if baseline.labeled >= p.min_labeled and current.labeled >= p.min_labeled:
        z = accuracy_drop_z(baseline, current, p.accuracy_margin)
        text = (
            f"labeled accuracy {_pct(current.accuracy)} on {current.labeled} windows vs "
            f"{_pct(baseline.accuracy)} on {baseline.labeled} before the swap"
        )
        if z >= p.z:
            return Verdict(
                HealthState.WORSE,
                f"{text}: lower by > {p.accuracy_margin:.2f} (z {z:.1f})",
                "accuracy",
            )
        state = HealthState.PASSED if final else HealthState.WATCHING
        return Verdict(state, f"{text}: not lower by > {p.accuracy_margin:.2f} (z {z:.1f})")
    if baseline.labeled >= p.min_labeled and not final:
        return Verdict(
            HealthState.WATCHING,
            f"{current.labeled} of {p.min_labeled} labeled windows: labels outrank confidence "
            "and out-of-distribution rate, which wait for them until the watch ends",
        )
    if current.windows < p.min_windows or baseline.windows < p.min_windows:
        state = HealthState.INCONCLUSIVE if final else HealthState.WATCHING
        return Verdict(
            state,
            f"{current.windows} windows since the swap, {baseline.windows} before it: "
            f"{p.min_windows} of each needed to judge",
        )
    assert baseline.mean_confidence is not None and current.mean_confidence is not None
    assert baseline.ood_rate is not None and current.ood_rate is not None
    drop = baseline.mean_confidence - current.mean_confidence
    if drop > p.confidence_drop:
        return Verdict(
            HealthState.WORSE,
            f"mean confidence {current.mean_confidence:.2f} on {current.windows} windows vs "
            f"{baseline.mean_confidence:.2f} on {baseline.windows} before the swap: "
            f"dropped {drop:.2f} > {p.confidence_drop:.2f}",
            "confidence",
        )
    rise = current.ood_rate - baseline.ood_rate
    if rise > p.ood_rise:
        return Verdict(
            HealthState.WORSE,
            f"out-of-distribution rate {current.ood_rate:.2f} on {current.windows} windows vs "
            f"{baseline.ood_rate:.2f} on {baseline.windows} before the swap: "
            f"up {rise:.2f} > {p.ood_rise:.2f}",
            "ood",
        )
    return Verdict(
        HealthState.PASSED if final else HealthState.WATCHING,
        f"mean confidence {current.mean_confidence:.2f} (before {baseline.mean_confidence:.2f}), "
        f"out-of-distribution rate {current.ood_rate:.2f} (before {baseline.ood_rate:.2f}) "
        f"on {current.windows} windows; no labels to judge accuracy",
    )


class HealthWatch:
    """One watch: the new model's figures since the swap against `baseline`, until `until`.

    The first final verdict sticks: later batches do not change it.

    >>> p = HealthPolicy(min_windows=2, min_labeled=2, rolling_windows=2, rolling_labeled=2)
    >>> w = HealthWatch(Figures(windows=4, confidence_sum=3.8), p, started=0.0, watch_s=10.0)
    >>> w.update(Figures(windows=1, confidence_sum=0.9), now=1.0).state.value
    'watching'
    >>> w.update(Figures(windows=2, confidence_sum=0.6), now=2.0).state.value
    'worse'
    >>> w.update(Figures(windows=50, confidence_sum=50.0), now=3.0).state.value
    'worse'
    """

    def __init__(
        self, baseline: Figures, policy: HealthPolicy, started: float, watch_s: float
    ) -> None:
        if watch_s <= 0:
            raise ValueError("a watch needs a duration > 0")
        self.baseline = baseline
        self.policy = policy
        self.started = started
        self.until = started + watch_s
        self.figures = Figures()
        self.verdict = judge(baseline, self.figures, policy, final=False)

    def update(self, batch: Figures, now: float) -> Verdict:
        """Add a batch classified by the watched model; the verdict after it."""
        if not self.verdict.state.final:
            self.figures = self.figures + batch
        return self.check(now)

    def check(self, now: float) -> Verdict:
        """The verdict now (final once `until` has passed, or once the model is worse)."""
        if not self.verdict.state.final:
            self.verdict = judge(self.baseline, self.figures, self.policy, now >= self.until)
        return self.verdict


class ModelHealth:
    """The serving model's rolling figures and the watch after each swap to a newer model.

    Not thread-safe (the model manager holds a lock around it). `observe` and `tick` return a
    verdict once, when a watch ends (a WORSE one means: roll back).

    >>> p = HealthPolicy(min_windows=2, min_labeled=2, rolling_windows=4, rolling_labeled=4)
    >>> h = ModelHealth(watch_s=10.0, policy=p)
    >>> h.installed(None, 1, now=0.0, watch=True)  # at start: nothing to compare with
    >>> h.observe(1, Figures(windows=4, confidence_sum=3.9, labeled=4, correct=4), now=1.0)
    >>> h.installed(1, 2, now=2.0, watch=True)
    >>> h.snapshot(now=2.0, wall=1000.0)["watching"], h.snapshot(2.0, 1000.0)["until"]
    (2, 1010.0)
    >>> v = h.observe(2, Figures(windows=4, confidence_sum=3.9, labeled=4, correct=0), now=3.0)
    >>> v.state.value, h.observe(2, Figures(windows=1, confidence_sum=1.0), now=4.0)
    ('worse', None)
    >>> h.installed(2, 1, now=5.0, watch=True)  # the rollback: an older version is not watched
    >>> s = h.snapshot(now=5.0, wall=1003.0)
    >>> s["watching"], s["verdict"], s["watched"], s["against"]
    (None, 'worse', 2, 1)
    """

    def __init__(self, watch_s: float, policy: HealthPolicy | None = None) -> None:
        if watch_s < 0:
            raise ValueError("watch_s must be ≥ 0 (0: no watch)")
        self.watch_s = watch_s
        self.policy = policy or HealthPolicy()
        self.rolling = Rolling(self.policy.rolling_windows, self.policy.rolling_labeled)
        self.serving: int | None = None
        self.watch: HealthWatch | None = None
        self.watched: tuple[int, int] | None = None  # (from, to) of the current/last watch
        self.last: Verdict | None = None  # the last watch's verdict
        self.baseline: Figures | None = None

    def installed(self, old: int | None, new: int, now: float, watch: bool) -> None:
        """`new` replaced `old` (None at start). A newer version is watched when `watch` is
        true and watching is on; the rolling figures start over for `new`."""
        if self.watch is not None and self.watched is not None:  # a watch not yet over
            self.last = Verdict(
                HealthState.INCONCLUSIVE,
                f"v{new} replaced v{self.watched[1]} before its watch ended",
            )
        self.watch = None
        if self.watch_s > 0 and watch and old is not None and new > old:
            baseline = self.rolling.figures()
            self.watch = HealthWatch(baseline, self.policy, now, self.watch_s)
            self.watched, self.last, self.baseline = (old, new), None, baseline
        self.serving = new
        self.rolling.clear()

    def observe(self, version: int, batch: Figures, now: float) -> Verdict | None:
        """A batch classified by `version`; the final verdict when this batch ended a watch."""
        if version != self.serving:
            return None
        self.rolling.add(batch)
        if self.watch is None:
            return None
        return self._settle(self.watch.update(batch, now))

    def tick(self, now: float) -> Verdict | None:
        """The watch's end without traffic: the final verdict if it ended now."""
        if self.watch is None:
            return None
        return self._settle(self.watch.check(now))

    def _settle(self, verdict: Verdict) -> Verdict | None:
        if not verdict.state.final:
            return None
        self.watch, self.last = None, verdict
        return verdict

    def detail(self, now: float, wall: float) -> ModelHealthDetail:
        """`detail.model_health` of the status (rollback counts 0: the manager adds them): `now`
        on the clock `observe` was given, `wall` the same instant as a Unix time (for `until`)."""
        watch = self.watch
        if watch is not None:
            verdict = watch.verdict
            state = verdict.state.value
        elif self.last is not None:
            verdict, state = self.last, self.last.state.value
        else:
            verdict, state = None, "off" if self.watch_s <= 0 else "idle"
        return ModelHealthDetail(
            watching=None if watch is None or self.watched is None else self.watched[1],
            watched=None if self.watched is None else self.watched[1],
            against=None if self.watched is None else self.watched[0],
            until=None if watch is None else max(0.0, round(wall + watch.until - now, 3)),
            verdict=state,
            reason=None if verdict is None else clip_text(verdict.reason, REASON_MAX),
            signal=None if verdict is None else verdict.signal,
            watch_s=self.watch_s,
            since_swap=None if watch is None else watch.figures.detail(),
            baseline=None if self.baseline is None else self.baseline.detail(),
            serving=self.rolling.figures().detail(),
        )

    def snapshot(self, now: float, wall: float) -> dict[str, Any]:
        """The JSON form of `detail(now, wall)`."""
        return self.detail(now, wall).to_json_obj()
