"""The gate: publish a challenger only if it beats the champion where drift happened and does
not forget the original conditions.

>>> decide(Scores(drift=0.74, original=1.0), Scores(drift=0.98, original=0.995)).accepted
True
>>> decide(Scores(drift=0.74, original=1.0), Scores(drift=0.98, original=0.95)).reason
'challenger loses 5.0 points on the original holdout (1.000 → 0.950), more than the 1.0 allowed'
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Scores:
    """Accuracy on the held-out recent drift windows and on the original holdout."""

    drift: float
    original: float


@dataclass(frozen=True, slots=True)
class GateConfig:
    """margin: accuracy points (as a fraction) the challenger may lose on the original data."""

    margin: float = 0.01
    min_gain: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.margin < 1 or not 0 <= self.min_gain < 1:
            raise ValueError("gate margin and min_gain must be fractions in [0, 1)")


@dataclass(frozen=True, slots=True)
class GateDecision:
    accepted: bool
    reason: str
    champion: Scores
    challenger: Scores


def decide(champion: Scores, challenger: Scores, config: GateConfig | None = None) -> GateDecision:
    """Accept iff the challenger is strictly better on drift data (by more than min_gain) and
    loses at most `margin` on the original holdout."""
    cfg = config or GateConfig()
    gain = challenger.drift - champion.drift
    loss = champion.original - challenger.original
    if gain <= cfg.min_gain:
        reason = (
            f"challenger does not beat the champion on recent drift data "
            f"({champion.drift:.3f} → {challenger.drift:.3f})"
        )
        return GateDecision(False, reason, champion, challenger)
    if loss > cfg.margin + 1e-12:
        reason = (
            f"challenger loses {loss * 100:.1f} points on the original holdout "
            f"({champion.original:.3f} → {challenger.original:.3f}), more than the "
            f"{cfg.margin * 100:.1f} allowed"
        )
        return GateDecision(False, reason, champion, challenger)
    reason = (
        f"challenger beats champion on drift data {champion.drift:.3f} → "
        f"{challenger.drift:.3f}, original {champion.original:.3f} → "
        f"{challenger.original:.3f}"
    )
    return GateDecision(True, reason, champion, challenger)
