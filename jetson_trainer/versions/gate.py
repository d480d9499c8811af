"""The gate: publish a challenger only if it beats the champion where drift happened and does
not forget the original conditions.

>>> decide(Scores(drift=0.74, original=1.0), Scores(drift=0.98, original=0.995)).accepted
True
>>> decide(Scores(drift=0.74, original=1.0), Scores(drift=0.98, original=0.95)).reason
'challenger loses 5.0 points on the original holdout (1.000 → 0.950), more than the 1.0 allowed'

When both are equally accurate on the drift holdout (typically both perfect: the drift moved the
inputs but not across a decision boundary yet), the challenger beats the champion only if its
log-loss there is at least `min_loss_gain` lower: it is surer of the new regime, and its
manifest's statistics describe that regime, so the Pis stop reporting drift.

>>> decide(Scores(1.0, 1.0, drift_loss=0.08), Scores(1.0, 1.0, drift_loss=0.01)).accepted
True
>>> decide(Scores(1.0, 1.0, drift_loss=0.08), Scores(1.0, 1.0, drift_loss=0.07)).accepted
False

On the original holdout the challenger is judged on accuracy *and* macro-F1 when both are
known: on a plant where 95 % of windows are normal, accuracy hides a model that forgot a fault.
Macro-F1 gets its own margin (2 points): each fault's F1 rests on a few hundred windows, and
fine-tunes of one plant drift that recover the drifted macro-F1 equally well (0.88–0.90)
scored 0.781–0.810 on an original holdout where the champion scored 0.797 (offline, 8 runs).

>>> d = decide(Scores(0.7, 0.99, original_f1=0.90), Scores(0.9, 0.985, original_f1=0.75))
>>> d.accepted, d.reason.split(" (")[0]
(False, 'challenger loses 15.0 points of macro-F1 on the original holdout')
>>> decide(Scores(0.7, 0.99, original_f1=0.797), Scores(0.9, 0.99, original_f1=0.783)).accepted
True

The drift holdout's labels come from the label senders: one who flips them consistently makes a
challenger that "beats" the champion there, and, trained with replay, keeps the original holdout
too. So the gate also judges on data no label sender controls: the original holdout *moved to
the recent regime* (`moved_to`: each channel shifted by the difference of the recent windows'
and the holdout's median, labels from the original data). A challenger that learned the new
regime honestly classifies it about as well as the champion or better; one taught flipped
labels loses far more than `anchor_margin` (25 points) there.

>>> decide(Scores(0.6, 0.99, anchor=0.62), Scores(1.0, 0.99, anchor=0.05)).reason.split(" (")[0]
'challenger loses 57.0 points on the original holdout moved to the recent regime'
>>> decide(Scores(0.6, 0.99, anchor=0.62), Scores(1.0, 0.99, anchor=0.93)).accepted
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class Scores:
    """Accuracy on the held-out recent drift windows and on the original holdout, and mean
    log-loss on the drift windows (None when not measured)."""

    drift: float
    original: float
    drift_loss: float | None = None
    original_f1: float | None = None  # macro-F1 on the original holdout
    anchor: float | None = None  # accuracy on the original holdout moved to the recent regime


@dataclass(frozen=True, slots=True)
class GateConfig:
    """margin: accuracy (a fraction) the challenger may lose on the original holdout;
    f1_margin: macro-F1 it may lose there; min_gain: accuracy it must gain on drift data;
    min_loss_gain: relative log-loss drop that counts as beating the champion at equal drift
    accuracy."""

    margin: float = 0.01
    min_gain: float = 0.0
    min_loss_gain: float = 0.2
    f1_margin: float = 0.02
    anchor_margin: float = 0.25  # accuracy it may lose on the moved original holdout

    def __post_init__(self) -> None:
        values = (
            self.margin,
            self.min_gain,
            self.min_loss_gain,
            self.f1_margin,
            self.anchor_margin,
        )
        if not all(0 <= v < 1 for v in values):
            raise ValueError(
                "gate margin, f1_margin, anchor_margin, min_gain and min_loss_gain must be "
                "fractions in [0, 1)"
            )


@dataclass(frozen=True, slots=True)
class GateDecision:
    accepted: bool
    reason: str
    champion: Scores
    challenger: Scores


def macro_f1(y: npt.ArrayLike, pred: npt.ArrayLike, classes: int) -> float:
    """Mean F1 over the classes present in `y`; a class never predicted scores 0 (numpy: the
    gate needs no scikit-learn; bench/quality.py scores the plant with it too).

    >>> macro_f1([0, 0, 1, 1], [0, 0, 1, 0], 2)
    0.7333333333333334
    >>> macro_f1([0, 0, 1, 1], [0, 0, 0, 0], 2)  # always "normal": half the classes missed
    0.3333333333333333
    """
    y, pred = np.asarray(y), np.asarray(pred)
    f1s = []
    for c in range(classes):
        truth, guess = y == c, pred == c
        if not truth.any():
            continue
        tp = float((truth & guess).sum())
        f1s.append(2 * tp / (truth.sum() + guess.sum()))
    return float(np.mean(f1s)) if f1s else float("nan")


def moved_to(x: npt.ArrayLike, recent: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Windows `x` (N, T, C) with each channel shifted by the difference of the medians of
    `recent`'s and `x`'s window means: the original data as it would read in the recent regime
    (its labels stay right for an offset drift, and roughly for others).

    >>> x = np.zeros((3, 2, 2), np.float32); r = np.full((4, 2, 2), [5.0, -1.0], np.float32)
    >>> moved_to(x, r)[0].tolist()
    [[5.0, -1.0], [5.0, -1.0]]
    """
    xa = np.asarray(x, np.float32)
    ra = np.asarray(recent, np.float32)
    if not len(xa) or not len(ra):
        return xa
    shift = np.median(ra.mean(axis=1), axis=0) - np.median(xa.mean(axis=1), axis=0)
    out: npt.NDArray[np.float32] = (xa + shift[None, None, :]).astype(np.float32)
    return out


def _surer(champion: Scores, challenger: Scores, cfg: GateConfig) -> bool:
    return (
        abs(challenger.drift - champion.drift) < 1e-12
        and champion.drift_loss is not None
        and challenger.drift_loss is not None
        and challenger.drift_loss <= champion.drift_loss * (1 - cfg.min_loss_gain)
    )


def decide(champion: Scores, challenger: Scores, config: GateConfig | None = None) -> GateDecision:
    """Accept iff the challenger is better on drift data (more accurate by more than min_gain,
    or as accurate and surer) and loses at most `margin` on the original holdout."""
    cfg = config or GateConfig()
    gain = challenger.drift - champion.drift
    loss = champion.original - challenger.original
    more_accurate = gain > cfg.min_gain
    surer = _surer(champion, challenger, cfg)
    if not (more_accurate or surer):
        reason = (
            f"challenger does not beat the champion on recent drift data "
            f"({champion.drift:.3f} → {challenger.drift:.3f})"
        )
        return GateDecision(False, reason, champion, challenger)
    f1_loss = (
        champion.original_f1 - challenger.original_f1
        if champion.original_f1 is not None and challenger.original_f1 is not None
        else None
    )
    if f1_loss is not None and f1_loss > cfg.f1_margin + 1e-12:
        reason = (
            f"challenger loses {f1_loss * 100:.1f} points of macro-F1 on the original holdout "
            f"({champion.original_f1:.3f} → {challenger.original_f1:.3f}), more than the "
            f"{cfg.f1_margin * 100:.1f} allowed"
        )
        return GateDecision(False, reason, champion, challenger)
    anchor_loss = (
        champion.anchor - challenger.anchor
        if champion.anchor is not None and challenger.anchor is not None
        else None
    )
    if anchor_loss is not None and anchor_loss > cfg.anchor_margin + 1e-12:
        reason = (
            f"challenger loses {anchor_loss * 100:.1f} points on the original holdout moved to "
            f"the recent regime ({champion.anchor:.3f} → {challenger.anchor:.3f}), more than "
            f"the {cfg.anchor_margin * 100:.1f} allowed: the drift labels it learned disagree "
            "with the original data's (flipped labels?)"
        )
        return GateDecision(False, reason, champion, challenger)
    if loss > cfg.margin + 1e-12:
        reason = (
            f"challenger loses {loss * 100:.1f} points on the original holdout "
            f"({champion.original:.3f} → {challenger.original:.3f}), more than the "
            f"{cfg.margin * 100:.1f} allowed"
        )
        return GateDecision(False, reason, champion, challenger)
    how = (
        f"{champion.drift:.3f} → {challenger.drift:.3f}"
        if more_accurate
        else f"log-loss {champion.drift_loss:.3f} → {challenger.drift_loss:.3f} at equal "
        f"accuracy {challenger.drift:.3f}"
    )
    reason = (
        f"challenger beats champion on drift data ({how}), original "
        f"{champion.original:.3f} → {challenger.original:.3f}"
    )
    return GateDecision(True, reason, champion, challenger)
