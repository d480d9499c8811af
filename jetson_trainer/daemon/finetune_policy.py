"""When the trainer daemon fine-tunes: a small state machine over what the store and the Pis say.

    watching ──(champion accuracy on the newest labels < trigger_accuracy,
                or a Pi reports drift)──▶ collecting
    collecting ──(≥ labels_needed labeled windows arrived after the trigger, or, with
                  per_class, ≥ per_class of every class)──▶ train

Training uses only labels that arrived after the trigger, so windows from before the drift do
not dilute the few labels a fine-tune gets. After an attempt the policy watches again; a Pi's
drift report triggers again only once the model it runs has changed (a rejected challenger does
not loop on the same report), while low accuracy on fresh labels always does.

>>> p = TrainPolicy(PolicyConfig(labels_needed=4, check_labels=4))
>>> p.update(Observation(store_seqno=10, new_labels=4, recent_accuracy=1.0, pi_drift=False))
'watching: champion accuracy 1.000 on the newest labels'
>>> p.update(Observation(store_seqno=20, new_labels=8, recent_accuracy=0.5, pi_drift=False))
'collecting: 0/4 labels since trigger (champion accuracy 0.500 on the newest labels)'
>>> p.labels_after
20
>>> p.update(Observation(store_seqno=30, new_labels=4, recent_accuracy=0.5, pi_drift=True))
'train'

With `per_class`, a handful of labels do — as soon as each class has that many (2 per class: 8
labels); `labels_needed` stays the cap, so a class the plant never shows does not block it:

>>> p = TrainPolicy(PolicyConfig(labels_needed=48, per_class=2))
>>> p.update(Observation(10, 0, None, pi_drift=True))
'collecting: 0/48 labels since trigger (a Pi reports drift)'
>>> p.update(Observation(20, 7, None, True, class_counts=(4, 1, 2, 0)))
'collecting: 7/48 labels since trigger, per class 4/1/2/0 of 2 (a Pi reports drift)'
>>> p.update(Observation(30, 9, None, True, class_counts=(4, 2, 2, 2)))
'train'
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    labels_needed: int = 48
    check_labels: int = 24
    trigger_accuracy: float = 0.9
    per_class: int = 0  # > 0: train once every class has this many new labels

    def __post_init__(self) -> None:
        if self.labels_needed < 4 or self.check_labels < 1:
            raise ValueError("policy labels_needed must be ≥ 4 and check_labels ≥ 1")
        if self.per_class < 0:
            raise ValueError("policy per_class must be ≥ 0 (0: off)")
        if not 0 < self.trigger_accuracy <= 1:
            raise ValueError("policy trigger_accuracy must be within (0, 1]")


@dataclass(frozen=True, slots=True)
class Observation:
    """What the daemon sees now.

    store_seqno:      highest store position so far
    new_labels:       labeled windows after `labels_after` (while collecting) or in total
    recent_accuracy:  champion accuracy on the newest `check_labels` labels (None if too few)
    pi_drift:         a Pi running the champion reports drift
    class_counts:     new labels per class after `labels_after` (for per_class; None: unknown)
    """

    store_seqno: int
    new_labels: int
    recent_accuracy: float | None
    pi_drift: bool
    class_counts: tuple[int, ...] | None = None


class TrainPolicy:
    def __init__(self, config: PolicyConfig | None = None) -> None:
        self.config = config or PolicyConfig()
        self.collecting = False
        self.labels_after = 0
        self.trigger_reason = ""
        self._pi_drift_spent = False

    def update(self, obs: Observation) -> str:
        """'train' when a fine-tune should start now, else a line saying what it waits for."""
        cfg = self.config
        acc = obs.recent_accuracy
        acc_text = (
            "no labels yet" if acc is None else f"champion accuracy {acc:.3f} on the newest labels"
        )
        if not self.collecting:
            low_accuracy = acc is not None and acc < cfg.trigger_accuracy
            pi_drift = obs.pi_drift and not self._pi_drift_spent
            if not (low_accuracy or pi_drift):
                return f"watching: {acc_text}"
            self.collecting = True
            self.labels_after = obs.store_seqno
            self.trigger_reason = acc_text if low_accuracy else "a Pi reports drift"
            return f"collecting: 0/{cfg.labels_needed} labels since trigger ({self.trigger_reason})"
        counts = obs.class_counts
        if cfg.per_class and counts and min(counts) >= cfg.per_class:
            return "train"
        if obs.new_labels < cfg.labels_needed:
            per_class = (
                f", per class {'/'.join(map(str, counts))} of {cfg.per_class}"
                if cfg.per_class and counts
                else ""
            )
            return (
                f"collecting: {obs.new_labels}/{cfg.labels_needed} labels since trigger"
                f"{per_class} ({self.trigger_reason})"
            )
        return "train"

    def attempted(self, *, accepted: bool) -> None:
        """A fine-tune finished: watch again. A rejected one spends the current drift report."""
        self.collecting = False
        self._pi_drift_spent = not accepted

    def model_changed(self) -> None:
        """The Pis run a new model: their drift reports count again."""
        self._pi_drift_spent = False
