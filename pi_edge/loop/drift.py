"""Drift detection on the Pi: three signals, one CUSUM each, states ok → suspect → drift.

Why CUSUM: the model manifest tells us what "no drift" looks like — class-conditional feature
statistics, validation confidence and validation accuracy — so each signal has a *known*
reference. Page's one-sided CUSUM is the optimal sequential test for a shift away from a known
reference (Lorden 1971, Moustakides 1986): it reacts within a few windows to a large shift, it
integrates a small one until it is certain, and its false-alarm rate is set by the threshold h.
Page-Hinkley estimates the reference online and ADWIN compares two unknown windows; both would
throw away the reference we already have and would slowly absorb a sustained drift as normal.

Signals, per window unless noted:
  input       mean squared z-score of the window's features (protocol.features) against the
              training statistics of the class the model predicted; ≈ 1 without drift. A
              window with a flat-lined channel (one value for all its samples: a stuck sensor)
              where training windows of its class always varied counts as no evidence either
              way, here and for confidence, and is counted per machine instead: a stuck
              sensor is a sensor fault, not process drift (on the realistic plant it caused 5
              of the 12 machine-level false drift alarms in 24 plant hours).
  confidence  1 − top probability, against 1 − the manifest's mean validation confidence of
              the predicted class (`metrics.mean_confidence_per_class`; else the overall
              mean): on a plant a developing fault is predicted less surely than a normal
              window, and one overall reference made every developing fault a drift alarm.
  accuracy    on labeled windows only: 1 if the prediction was wrong, against the validation
              error rate. Labels are rare, so this signal is pooled over all machines.

A statistic's level is S/h. State: ok → suspect at level ≥ ½, → drift at level ≥ 1; back to ok
only when every level has fallen below ¼ (hysteresis, so a state does not flap). S is clipped
at 2h so the detector recovers in bounded time once a drift is over.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from protocol.features import FeatureReference, window_features
from protocol.status_detail import DriftDetail, MachineDrift


class DriftState(enum.IntEnum):
    """Ordered, so the worst of several states is max()."""

    OK = 0
    SUSPECT = 1
    DRIFT = 2

    @property
    def label(self) -> str:
        return self.name.lower()


_OK, _SUSPECT, _DRIFT = (int(s) for s in DriftState)  # plain ints: numpy is slow on IntEnum


def cusum_step(statistic: Any, x: Any, reference: Any, allowance: float, threshold: float) -> Any:
    """S ← clip(S + x − (reference + allowance), 0, 2·threshold), for floats or arrays."""
    return np.minimum(np.maximum(statistic + x - reference - allowance, 0.0), 2.0 * threshold)


def hysteresis_step(state: Any, level: Any, suspect_at: float, release_at: float) -> Any:
    """Next state(s) for level(s): drift at ≥ 1, suspect at ≥ suspect_at, ok below release_at."""
    return np.where(
        level >= 1.0,
        _DRIFT,
        np.where(
            level >= suspect_at,
            np.maximum(state, _SUSPECT),
            np.where(level < release_at, _OK, state),
        ),
    )


class Cusum:
    """One-sided CUSUM for a rise of a stream's mean above a known reference.

    S ← clip(S + x − (reference + allowance), 0, 2·threshold); `level` = S / threshold.

    >>> det = Cusum(reference=1.0, allowance=0.5, threshold=4.0)
    >>> [round(det.update(x), 2) for x in (1, 1, 4, 4, 1, 1)]
    [0.0, 0.0, 0.62, 1.25, 1.12, 1.0]
    """

    def __init__(self, reference: float, allowance: float, threshold: float) -> None:
        if allowance < 0 or threshold <= 0:
            raise ValueError("CUSUM needs allowance ≥ 0 and threshold > 0")
        self.reference = reference
        self.allowance = allowance
        self.threshold = threshold
        self.statistic = 0.0

    def update(self, x: float) -> float:
        """Add one observation; return the level S / threshold."""
        self.statistic = float(
            cusum_step(self.statistic, x, self.reference, self.allowance, self.threshold)
        )
        return self.statistic / self.threshold

    @property
    def level(self) -> float:
        return self.statistic / self.threshold

    def reset(self) -> None:
        self.statistic = 0.0


class Hysteresis:
    """ok → suspect at level ≥ suspect_at, → drift at ≥ 1; back to ok below release_at.

    >>> h = Hysteresis()
    >>> [h.update(x).label for x in (0.1, 0.6, 1.2, 0.5, 0.2)]
    ['ok', 'suspect', 'drift', 'drift', 'ok']
    """

    def __init__(self, suspect_at: float = 0.5, release_at: float = 0.25) -> None:
        self.suspect_at = suspect_at
        self.release_at = release_at
        self.state = DriftState.OK

    def update(self, level: float) -> DriftState:
        self.state = DriftState(
            int(hysteresis_step(self.state, level, self.suspect_at, self.release_at))
        )
        return self.state


@dataclass(frozen=True, slots=True)
class DriftConfig:
    """Thresholds; defaults gave 0 false alarms in a simulated hour (bench/drift_detection)."""

    input_allowance: float = 2.0
    input_threshold: float = 40.0
    confidence_allowance: float = 0.10
    confidence_threshold: float = 4.0
    accuracy_allowance: float = 0.15
    accuracy_threshold: float = 3.0
    z2_cap: float = 50.0
    ood_threshold: float = 12.0
    confidence_floor: float = 0.6

    def __post_init__(self) -> None:
        for name in (
            "input_threshold",
            "confidence_threshold",
            "accuracy_threshold",
            "ood_threshold",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"drift config {name} must be > 0")
        if not 0 < self.confidence_floor < 1:
            raise ValueError("drift config confidence_floor must be within (0, 1)")


@dataclass(frozen=True, slots=True)
class WindowVerdict:
    """Per-window output: machine drift state, out-of-distribution flag and its score."""

    state: DriftState
    ood: bool
    ood_score: float
    reason: str | None  # "out_of_distribution" / "low_confidence" when the window is flagged


_REASONS = (None, "out_of_distribution", "low_confidence")


class Verdicts:
    """One batch's verdicts as arrays (cheap on the hot path); `[i]` gives a WindowVerdict."""

    __slots__ = ("flags", "ood_score", "states")

    def __init__(
        self,
        states: npt.NDArray[np.int8],
        ood_score: npt.NDArray[np.float64],
        flags: npt.NDArray[np.int8],
    ) -> None:
        self.states = states  # DriftState per window
        self.ood_score = ood_score
        self.flags = flags  # index into _REASONS: 0 none, 1 out of distribution, 2 low conf.

    def __len__(self) -> int:
        return len(self.states)

    def __getitem__(self, i: int) -> WindowVerdict:
        flag = int(self.flags[i])
        return WindowVerdict(
            DriftState(int(self.states[i])), flag == 1, float(self.ood_score[i]), _REASONS[flag]
        )

    def __iter__(self) -> Iterator[WindowVerdict]:
        return (self[i] for i in range(len(self)))

    @classmethod
    def quiet(cls, n: int) -> Verdicts:
        """Verdicts for a batch seen without a monitor: all ok, nothing flagged."""
        return cls(np.zeros(n, np.int8), np.zeros(n), np.zeros(n, np.int8))


class DriftMonitor:
    """Per-machine and overall drift state from one model's manifest statistics.

    Build a new monitor whenever the model changes: its references come from that manifest.
    Without feature statistics (`reference` None, an older bundle) the input signal and the
    out-of-distribution distance are off; confidence and accuracy still work.
    """

    def __init__(
        self,
        reference: FeatureReference | None,
        mean_confidence: float,
        accuracy: float,
        config: DriftConfig | None = None,
        class_confidence: Sequence[float | None] = (),
    ) -> None:
        """`class_confidence`: mean validation confidence per class index (None or absent:
        the overall `mean_confidence`)."""
        self.config = config or DriftConfig()
        self.reference = reference
        self._never_flat = (
            None if reference is None else never_flat(reference, reference.mean.shape[1] // 2)
        )
        self.confidence_ref = 1.0 - min(max(mean_confidence, 0.0), 1.0)
        # per predicted class, padded with the overall reference (any class index has one)
        self._confidence_refs = np.array(
            [
                self.confidence_ref if c is None else 1.0 - min(max(float(c), 0.0), 1.0)
                for c in class_confidence
            ]
            + [self.confidence_ref] * 64  # MAX_NAMES classes at most (protocol.manifest)
        )
        self.error_ref = max(1.0 - accuracy, 0.02)
        self._slots: dict[str, int] = {}
        self._free: list[int] = []  # slots of forgotten machines, reused before growing
        self._input = np.zeros(0)  # per-machine CUSUM statistics, indexed by slot
        self._confidence = np.zeros(0)
        self._state = np.zeros(0, np.int8)
        self._stuck = np.zeros(0, np.int64)  # per machine: windows with a flat-lined channel
        cfg = self.config
        self.accuracy = Cusum(self.error_ref, cfg.accuracy_allowance, cfg.accuracy_threshold)
        self._accuracy_state = Hysteresis()
        self.labeled_seen = 0
        self.labeled_wrong = 0

    @classmethod
    def from_manifest(cls, manifest: Any, config: DriftConfig | None = None) -> DriftMonitor:
        """Monitor for a protocol.Manifest (train_stats["features"], metrics)."""
        features = manifest.train_stats.get("features")
        reference = FeatureReference(features, tuple(manifest.classes)) if features else None
        metrics = manifest.metrics
        per_class = metrics.get("mean_confidence_per_class") or {}
        return cls(
            reference,
            float(metrics.get("mean_confidence", 0.95)),
            float(metrics.get("accuracy", 0.95)),
            config,
            [per_class.get(c) for c in manifest.classes],
        )

    def _slot_of(self, machine: str) -> int:
        slot = self._slots.get(machine)
        if slot is None and self._free:
            slot = self._slots[machine] = self._free.pop()
        elif slot is None:
            slot = self._slots[machine] = len(self._slots)
            if slot >= len(self._state):  # grow the per-machine arrays by doubling
                grow = max(16, len(self._state))
                self._input = np.concatenate([self._input, np.zeros(grow)])
                self._confidence = np.concatenate([self._confidence, np.zeros(grow)])
                self._state = np.concatenate([self._state, np.zeros(grow, np.int8)])
                self._stuck = np.concatenate([self._stuck, np.zeros(grow, np.int64)])
        return slot

    def observe(
        self,
        machines: list[str],
        raw: npt.NDArray[np.float32],
        probabilities: npt.NDArray[np.float32],
        truth: list[int | None],
        predicted: npt.NDArray[np.int64] | None = None,
    ) -> Verdicts:
        """Update with a micro-batch: raw (N, T, C) windows, (N, K) probabilities, labels, and
        the argmax of the probabilities if the caller has it already.

        Vectorised over the batch; a machine seen twice in one batch is updated in order.
        """
        n, k = probabilities.shape
        cfg = self.config
        if self.reference is not None:
            z2, distance = self.reference.z2_both(window_features(raw), cfg.z2_cap)
        else:  # no statistics: the input signal stays at its reference, nothing is "far"
            z2 = distance = np.ones((n, k))
        rows = np.arange(n)
        if predicted is None:
            predicted = probabilities.argmax(axis=1)
        confidence = probabilities[rows, predicted].astype(np.float64)
        input_score = z2[rows, predicted]
        if self._never_flat is not None and raw.shape[2] == self._never_flat.shape[1]:
            stuck = (flat_lined(raw) & self._never_flat[predicted]).any(axis=1)
        else:  # no statistics: no way to tell a stuck sensor from a quiet one
            stuck = np.zeros(n, bool)
        if stuck.any():  # a stuck sensor: no evidence of drift either way (module docstring)
            input_score = np.where(stuck, 1.0, input_score)
            evidence = np.where(stuck, 1.0 - self._confidence_refs[predicted], confidence)
        else:
            evidence = confidence
        ood_score = distance.min(axis=1)
        get = self._slots.get
        known = [get(m) for m in machines]
        slot_list = [
            s if s is not None else self._slot_of(m) for s, m in zip(known, machines, strict=True)
        ]
        slots = np.array(slot_list, np.int64)
        if stuck.any():
            np.add.at(self._stuck, slots[stuck], 1)
        states = np.empty(n, np.int8)
        rounds = [rows] if len(set(slot_list)) == n else _rounds(slots)
        for idx in rounds:
            s = slots[idx]
            self._input[s] = cusum_step(
                self._input[s], input_score[idx], 1.0, cfg.input_allowance, cfg.input_threshold
            )
            self._confidence[s] = cusum_step(
                self._confidence[s],
                1.0 - evidence[idx],
                self._confidence_refs[predicted[idx]],
                cfg.confidence_allowance,
                cfg.confidence_threshold,
            )
            level = np.maximum(
                self._input[s] / cfg.input_threshold, self._confidence[s] / cfg.confidence_threshold
            )
            self._state[s] = hysteresis_step(self._state[s], level, 0.5, 0.25)
            states[idx] = self._state[s]
        for i, label in enumerate(truth):
            if label is not None:
                wrong = int(label != predicted[i])
                self.labeled_seen += 1
                self.labeled_wrong += wrong
                self._accuracy_state.update(self.accuracy.update(float(wrong)))
        flags = np.where(
            ood_score > cfg.ood_threshold, 1, np.where(confidence < cfg.confidence_floor, 2, 0)
        ).astype(np.int8)
        return Verdicts(states, ood_score, flags)

    def forget(self, machines: list[str]) -> None:
        """Drop the detectors of `machines` (evicted by the node's machine cap); their slots
        are zeroed and reused, so the arrays stay as large as the most machines held at once.
        """
        for m in machines:
            slot = self._slots.pop(m, None)
            if slot is not None:
                self._input[slot] = self._confidence[slot] = 0.0
                self._state[slot] = _OK
                self._stuck[slot] = 0
                self._free.append(slot)

    @property
    def machines(self) -> int:
        """How many machines have detectors now."""
        return len(self._slots)

    def machine_state(self, machine: str) -> DriftState:
        slot = self._slots.get(machine)
        return DriftState.OK if slot is None else DriftState(int(self._state[slot]))

    @property
    def overall(self) -> DriftState:
        """Worst of every machine's state and the pooled accuracy state."""
        worst = int(self._state.max(initial=0))  # unused and freed slots are zero (ok)
        return DriftState(max(worst, self._accuracy_state.state))

    def snapshot(self, top: int | None = None) -> dict[str, Any]:
        """Levels and states for status messages and dashboards.

        With `top`, only the `top` machines of highest level are listed (worst first), and
        `machines_total` says how many there are, so a status stays bounded in size.
        """
        cfg = self.config
        slots = sorted(self._slots.items())
        if top is not None and len(slots) > top:
            level = np.maximum(
                self._input / cfg.input_threshold, self._confidence / cfg.confidence_threshold
            )
            worst = sorted(slots, key=lambda ms: (-int(self._state[ms[1]]), -level[ms[1]], ms[0]))
            slots = sorted(worst[:top])
        return {
            "overall": self.overall.label,
            "accuracy_level": round(self.accuracy.level, 3),
            "accuracy_state": self._accuracy_state.state.label,
            "labeled_seen": self.labeled_seen,
            "labeled_wrong": self.labeled_wrong,
            "machines": {
                m: {
                    "state": DriftState(int(self._state[i])).label,
                    "input_level": round(float(self._input[i]) / cfg.input_threshold, 3),
                    "confidence_level": round(
                        float(self._confidence[i]) / cfg.confidence_threshold, 3
                    ),
                    **({"stuck_windows": int(self._stuck[i])} if self._stuck[i] else {}),
                }
                for m, i in slots
            },
            "machines_total": len(self._slots),
        }

    def detail(self, top: int) -> DriftDetail:
        """`detail.drift` of the status: `snapshot(top)` through its contract type
        (protocol.status_detail.DriftDetail), which bounds what a status may list."""
        s = self.snapshot(top)
        return DriftDetail(
            s["overall"],
            s["accuracy_level"],
            s["accuracy_state"],
            s["labeled_seen"],
            s["labeled_wrong"],
            {m: MachineDrift(**row) for m, row in s["machines"].items()},
            s["machines_total"],
        )


def flat_lined(raw: npt.NDArray[np.float32]) -> npt.NDArray[np.bool_]:
    """Per window and channel (N, T, C) → (N, C): one value for all T samples?

    >>> w = np.random.default_rng(0).normal(size=(3, 60, 4)).astype(np.float32)
    >>> w[1, :, 2] = 11.0
    >>> flat_lined(w).any(axis=1).tolist()
    [False, True, False]
    """
    if raw.shape[1] < 2:
        return np.zeros(raw.shape[::2], bool)
    return np.asarray(raw.max(axis=1) == raw.min(axis=1))


def never_flat(reference: FeatureReference, channels: int) -> npt.NDArray[np.bool_]:
    """Per class and channel (K, C): did that channel vary in (nearly) every training window
    of that class — its spread's mean more than 3 of its stds above 0? Only then is a flat
    window a stuck sensor; a slow signal forward-filled into windows (pi_edge --signals) is
    flat in training too, and stays ordinary evidence."""
    spread_mean = reference.mean[:, channels : 2 * channels]
    spread_std = reference.std[:, channels : 2 * channels]
    return np.asarray(spread_mean > 3.0 * spread_std)


def _rounds(slots: npt.NDArray[np.int64]) -> list[npt.NDArray[np.int64]]:
    """Index groups in which each machine slot appears at most once, in arrival order.

    >>> [r.tolist() for r in _rounds(np.array([3, 5, 3, 7, 3]))]
    [[0, 1, 3], [2], [4]]
    """
    if len(np.unique(slots)) == len(slots):
        return [np.arange(len(slots))]
    seen: dict[int, int] = {}
    occurrence = np.empty(len(slots), np.int64)
    for i, slot in enumerate(slots.tolist()):
        occurrence[i] = seen.get(slot, 0)
        seen[slot] = occurrence[i] + 1
    return [np.flatnonzero(occurrence == r) for r in range(int(occurrence.max()) + 1)]
