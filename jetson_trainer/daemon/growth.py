"""The daemon's cold start: while its champion knows fewer classes than the machine type declares
(an anomaly model, or a classifier grown from one), labels of a class it lacks grow the class
list (build/class_growth.py) instead of the ordinary fine-tune, which needs the type's whole list.

The store keeps every label as an index into the type's declared classes (what the drift
batches carry), so a label of a class no model knows is there like any other. Each tick of the
policy loop, `ClassGrowth.attempt` looks at every labeled window in the store (at most
`MAX_LABELS`, newest); once a declared class the champion lacks has `min_labels` of them it
trains the grown classifier on them and the original (normal) data, gates it on the old
classes' holdout and returns the new champion, signed, for the daemon to publish like any
accepted challenger. A refused growth is tried again only when new labels came in.

>>> pending(("normal", "a", "b"), ("normal",), np.array([1, 1, 2, 0, 1]), min_labels=3)
('a',)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from protocol import decode_bundle
from protocol.machine_type import MachineType

from ..build.class_growth import Growth, grow
from .retrain import Champion

__all__ = ["MAX_LABELS", "MIN_NEW_LABELS", "ClassGrowth", "GrowthAttempt", "pending"]

log = logging.getLogger(__name__)

MAX_LABELS = 4096  # labeled windows a growth looks at (the newest)
MIN_NEW_LABELS = 4  # labels of a new class before the class list grows by it


def pending(
    declared: tuple[str, ...],
    known: tuple[str, ...],
    y: npt.NDArray[np.int64],
    min_labels: int = MIN_NEW_LABELS,
) -> tuple[str, ...]:
    """The declared classes `known` lacks that have at least `min_labels` labels in `y`."""
    counts = np.bincount(y[(y >= 0) & (y < len(declared))], minlength=len(declared))
    return tuple(c for i, c in enumerate(declared) if c not in known and counts[i] >= min_labels)


@dataclass(frozen=True, slots=True)
class GrowthAttempt:
    """What one attempt did: the new champion (None: none), the growth, and why."""

    challenger: Champion | None
    growth: Growth | None
    reason: str
    labels: int


class ClassGrowth:
    """The cold start's state in the daemon: when it last tried (the store's label position)."""

    def __init__(self, kind: MachineType, min_labels: int = MIN_NEW_LABELS) -> None:
        self.kind = kind
        self.min_labels = min_labels
        self._tried_at = -1  # latest labeled seqno at the last attempt

    @staticmethod
    def needed(champion: Champion, kind: MachineType) -> bool:
        """The champion knows fewer classes than the type declares: a cold start's model."""
        return tuple(champion.manifest.classes) != kind.classes

    def attempt(
        self,
        champion: Champion,
        store: Any,
        original: Any,
        *,
        models_dir: Path,
        private_key: Path | None,
        site: str,
        version: int,
    ) -> GrowthAttempt | None:
        """Grow `champion` if labels of a new class are there (None: nothing to do yet)."""
        latest = int(store.latest_labeled_seqno())
        if latest <= self._tried_at:
            return None
        kind = self.kind
        x, y, _ = store.recent_labeled(MAX_LABELS, after=0, shape=kind.input_shape)
        new = pending(kind.classes, tuple(champion.manifest.classes), y, self.min_labels)
        if not new:
            return None
        self._tried_at = latest
        normal = kind.classes.index(kind.normal)
        if original is not None:
            hist_x = original.train[0][original.train[1] == normal]
            hold_x, hold_y = original.holdout
        else:  # no original data: the healthy windows technicians labeled
            hist_x, hold_x, hold_y = x[y == normal], x[:0], y[:0]
        grows_to = set(champion.manifest.classes) | set(new)  # fewer labels than min: not yet
        keep = np.array([i != normal and kind.classes[i] in grows_to for i in y.tolist()], bool)
        names = [kind.classes[i] for i in y[keep]]
        holdout_names = [kind.classes[i] for i in hold_y]
        old = set(champion.manifest.classes)
        lab_old = [i for i, n in enumerate(names) if n in old]  # old faults' labels join it
        hx = np.concatenate([hold_x, x[keep][lab_old]]) if lab_old else hold_x
        hn = holdout_names + [names[i] for i in lab_old]
        if not len(hist_x) or not any(n == kind.normal for n in hn):
            return GrowthAttempt(None, None, "no healthy windows to train or gate on", len(names))
        log.info(
            "cold start: labels of %s, which v%d does not know: growing its classes",
            ", ".join(new),
            champion.version,
        )
        growth = grow(
            kind,
            decode_bundle(champion.bundle, None, allow_unsigned=True),
            hist_x,
            (hx, hn),
            (x[keep], names),
            models_dir / f"v{version:04d}",
            version=version,
            site=site,
            private_key=private_key,
        )
        gate = growth.gate
        reason = (
            f"class growth {list(champion.manifest.classes)} → {list(growth.classes)}: "
            f"{gate.measure} {gate.old_score:.4f} → {gate.new_score:.4f}"
        )
        if growth.bundle_path is None:
            return GrowthAttempt(None, growth, reason + " (refused)", len(names))
        import keras

        path = growth.bundle_path
        raw = path.read_bytes()
        bundle = decode_bundle(raw, None, allow_unsigned=True)
        net = keras.models.load_model(path.parent / "model.keras")
        challenger = Champion(version, raw, bundle.model, bundle.manifest, net, path)
        return GrowthAttempt(challenger, growth, reason, len(names))
