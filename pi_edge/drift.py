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
              training statistics of the class the model predicted; ≈ 1 without drift.
  confidence  1 − top probability, against 1 − the manifest's mean validation confidence.
  accuracy    on labeled windows only: 1 if the prediction was wrong, against the validation
              error rate. Labels are rare, so this signal is pooled over all machines.

A statistic's level is S/h. State: ok → suspect at level ≥ ½, → drift at level ≥ 1; back to ok
only when every level has fallen below ¼ (hysteresis, so a state does not flap). S is clipped
at 2h so the detector recovers in bounded time once a drift is over.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from protocol.features import FeatureReference, window_features


class DriftState(enum.IntEnum):
    """Ordered, so the worst of several states is max()."""

    OK = 0
    SUSPECT = 1
    DRIFT = 2

    @property
    def label(self) -> str:
        return self.name.lower()


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
        s = self.statistic + x - self.reference - self.allowance
        self.statistic = min(max(s, 0.0), 2.0 * self.threshold)
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
        if level >= 1.0:
            self.state = DriftState.DRIFT
        elif level >= self.suspect_at:
            self.state = max(self.state, DriftState.SUSPECT)
        elif level < self.release_at:
            self.state = DriftState.OK
        return self.state


@dataclass(frozen=True, slots=True)
class DriftConfig:
    """Thresholds; defaults give < 1 false alarm per simulated hour (bench/drift_recovery)."""

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


@dataclass(slots=True)
class _MachineDetectors:
    input: Cusum
    confidence: Cusum
    state: Hysteresis = field(default_factory=Hysteresis)


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
    ) -> None:
        self.config = config or DriftConfig()
        self.reference = reference
        self.confidence_ref = 1.0 - min(max(mean_confidence, 0.0), 1.0)
        self.error_ref = max(1.0 - accuracy, 0.02)
        self._machines: dict[str, _MachineDetectors] = {}
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
        return cls(
            reference,
            float(metrics.get("mean_confidence", 0.95)),
            float(metrics.get("accuracy", 0.95)),
            config,
        )

    def _detectors(self, machine: str) -> _MachineDetectors:
        det = self._machines.get(machine)
        if det is None:
            cfg = self.config
            det = _MachineDetectors(
                Cusum(1.0, cfg.input_allowance, cfg.input_threshold),
                Cusum(self.confidence_ref, cfg.confidence_allowance, cfg.confidence_threshold),
            )
            self._machines[machine] = det
        return det

    def observe(
        self,
        machines: list[str],
        raw: npt.NDArray[np.float32],
        probabilities: npt.NDArray[np.float32],
        truth: list[int | None],
    ) -> list[WindowVerdict]:
        """Update with a micro-batch: raw (N, T, C) windows, (N, K) probabilities, labels."""
        n, k = probabilities.shape
        if self.reference is not None:
            features = window_features(raw)
            z2 = self.reference.z2(features, cap=self.config.z2_cap)
            distance = self.reference.z2(features)
        else:  # no statistics: the input signal stays at its reference, nothing is "far"
            z2 = distance = np.ones((n, k))
        predicted = probabilities.argmax(axis=1)
        confidence = probabilities.max(axis=1)
        cfg = self.config
        verdicts = []
        for i, machine in enumerate(machines):
            det = self._detectors(machine)
            input_score = float(z2[i, predicted[i]])
            ood_score = float(distance[i].min())
            level = max(
                det.input.update(input_score), det.confidence.update(1.0 - float(confidence[i]))
            )
            label = truth[i]
            if label is not None:
                wrong = int(label != predicted[i])
                self.labeled_seen += 1
                self.labeled_wrong += wrong
                self._accuracy_state.update(self.accuracy.update(float(wrong)))
            state = det.state.update(level)
            if ood_score > cfg.ood_threshold:
                reason: str | None = "out_of_distribution"
            elif confidence[i] < cfg.confidence_floor:
                reason = "low_confidence"
            else:
                reason = None
            verdicts.append(
                WindowVerdict(state, reason == "out_of_distribution", ood_score, reason)
            )
        return verdicts

    def machine_state(self, machine: str) -> DriftState:
        det = self._machines.get(machine)
        return det.state.state if det else DriftState.OK

    @property
    def overall(self) -> DriftState:
        """Worst of every machine's state and the pooled accuracy state."""
        states = [d.state.state for d in self._machines.values()]
        return max([self._accuracy_state.state, *states], default=DriftState.OK)

    def snapshot(self) -> dict[str, Any]:
        """Levels and states for status messages and dashboards."""
        return {
            "overall": self.overall.label,
            "accuracy_level": round(self.accuracy.level, 3),
            "accuracy_state": self._accuracy_state.state.label,
            "labeled_seen": self.labeled_seen,
            "labeled_wrong": self.labeled_wrong,
            "machines": {
                m: {
                    "state": d.state.state.label,
                    "input_level": round(d.input.level, 3),
                    "confidence_level": round(d.confidence.level, 3),
                }
                for m, d in sorted(self._machines.items())
            },
        }
