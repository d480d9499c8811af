"""Drift detectors on seeded synthetic streams: quiet without drift, fast with it."""

from __future__ import annotations

import numpy as np
import pytest

from pi_edge.loop.drift import Cusum, DriftConfig, DriftMonitor, DriftState, Hysteresis
from protocol import CLASSES
from protocol.features import FeatureReference, feature_stats
from sensor_sim.physics import generate

N_MACHINES = 4


@pytest.fixture(scope="module")
def reference() -> FeatureReference:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 500)
    return FeatureReference(feature_stats(generate(y, rng), y, CLASSES), CLASSES)


def one_hot(y: np.ndarray, confidence: float = 0.99) -> np.ndarray:
    p = np.full((len(y), 4), (1 - confidence) / 3, np.float32)
    p[np.arange(len(y)), y] = confidence
    return p


def stream(
    monitor: DriftMonitor,
    rng: np.random.Generator,
    regime: str,
    steps: int,
    confidence: float = 0.99,
) -> list[DriftState]:
    """Feed `steps` rounds of one window per machine; return the overall state after each."""
    states = []
    machines = [f"m{i}" for i in range(N_MACHINES)]
    for _ in range(steps):
        y = rng.integers(0, 4, N_MACHINES)
        x = generate(y, rng, regime)
        monitor.observe(machines, x, one_hot(y, confidence), [None] * N_MACHINES)
        states.append(monitor.overall)
    return states


def test_stays_ok_on_long_drift_free_stream(reference: FeatureReference) -> None:
    monitor = DriftMonitor(reference, mean_confidence=0.99, accuracy=0.99)
    states = stream(monitor, np.random.default_rng(1), "standard", 2000)
    assert max(states) == DriftState.OK


def test_detects_seed_step_drift_within_a_few_windows(reference: FeatureReference) -> None:
    monitor = DriftMonitor(reference, mean_confidence=0.99, accuracy=0.99)
    rng = np.random.default_rng(2)
    assert max(stream(monitor, rng, "standard", 200)) == DriftState.OK
    after = stream(monitor, rng, "drift", 50)
    first = after.index(DriftState.DRIFT)
    assert first < 10, f"step drift took {first} rounds to detect"


def test_confidence_drop_alone_raises_drift(reference: FeatureReference) -> None:
    monitor = DriftMonitor(reference, mean_confidence=0.99, accuracy=0.99)
    rng = np.random.default_rng(3)
    states = stream(monitor, rng, "standard", 100, confidence=0.55)
    assert DriftState.DRIFT in states
    assert monitor.snapshot()["machines"]["m0"]["confidence_level"] >= 1.0


def test_wrong_labeled_windows_raise_pooled_accuracy_drift(reference: FeatureReference) -> None:
    monitor = DriftMonitor(reference, mean_confidence=0.99, accuracy=0.99)
    rng = np.random.default_rng(4)
    y = rng.integers(0, 4, 20)
    x = generate(y, rng)
    wrong = (y + 1) % 4
    monitor.observe([f"m{i % 3}" for i in range(20)], x, one_hot(y), [int(v) for v in wrong])
    snap = monitor.snapshot()
    assert snap["accuracy_state"] == "drift" and snap["labeled_wrong"] == 20


def test_ood_flag_fires_on_windows_far_from_every_class(reference: FeatureReference) -> None:
    monitor = DriftMonitor(reference, mean_confidence=0.99, accuracy=0.99)
    rng = np.random.default_rng(5)
    x = generate(np.zeros(4, np.int64), rng)
    far = x.copy()
    far[..., 0] += 100.0
    verdicts = monitor.observe(
        ["a", "b", "c", "d"],
        np.concatenate([x[:2], far[:2]]),
        one_hot(np.zeros(4, np.int64)),
        [None] * 4,
    )
    assert [v.ood for v in verdicts] == [False, False, True, True]
    assert verdicts[2].reason == "out_of_distribution" and verdicts[2].ood_score > 100


def test_low_confidence_window_is_flagged() -> None:
    ref = FeatureReference(
        {"per_class": {c: {"mean": [0.0] * 8, "std": [1.0] * 8} for c in CLASSES}}, CLASSES
    )
    monitor = DriftMonitor(ref, 0.99, 0.99, DriftConfig(confidence_floor=0.7))
    verdict = monitor.observe(
        ["m"], np.zeros((1, 60, 4), np.float32), one_hot(np.array([1]), 0.5), [None]
    )[0]
    assert verdict.reason == "low_confidence" and not verdict.ood


def test_cusum_clips_and_recovers() -> None:
    det = Cusum(reference=0.0, allowance=1.0, threshold=5.0)
    for _ in range(100):
        det.update(50.0)
    assert det.level == 2.0
    levels = [det.update(0.0) for _ in range(10)]
    assert levels[-1] == 0.0


def test_hysteresis_does_not_flap_around_the_suspect_level() -> None:
    h = Hysteresis()
    assert [h.update(x).label for x in (0.6, 0.4, 0.6, 0.4, 0.1)] == [
        "suspect",
        "suspect",
        "suspect",
        "suspect",
        "ok",
    ]


def test_a_stuck_sensor_is_counted_not_taken_for_drift(reference: FeatureReference) -> None:
    """Normal windows whose pressure channel holds one value (a stuck sensor, as the realistic
    plant makes them), on which the model is unsure, leave the machine ok and are counted on
    it; a real drift on the same machine is still found."""
    monitor = DriftMonitor(reference, mean_confidence=0.99, accuracy=0.99)
    plain = DriftMonitor(reference, mean_confidence=0.99, accuracy=0.99)
    rng = np.random.default_rng(5)
    pressure = 2  # CHANNELS: temperature, vibration, pressure, power
    for _ in range(300):
        y = np.zeros(1, np.int64)
        x = generate(y, rng)
        x[0, :, pressure] = 11.0
        monitor.observe(["m01"], x, one_hot(y, 0.5), [None])  # the model unsure on it, too
        x[0, -1, pressure] = 11.01  # the same, but not quite flat: the drift shows
        plain.observe(["m01"], x, one_hot(y, 0.5), [None])
    assert monitor.machine_state("m01") == DriftState.OK
    assert plain.machine_state("m01") == DriftState.DRIFT  # the test can fail
    assert monitor.snapshot()["machines"]["m01"]["stuck_windows"] == 300
    assert "stuck_windows" not in plain.snapshot()["machines"]["m01"]
    for _ in range(50):
        y = rng.integers(0, 4, 1)
        monitor.observe(["m01"], generate(y, rng, "drift"), one_hot(y), [None])
    assert monitor.machine_state("m01") == DriftState.DRIFT


def test_a_class_predicted_less_surely_is_judged_by_its_own_confidence(
    reference: FeatureReference,
) -> None:
    """On a plant a developing fault is predicted at ~0.7: with the class's own validation
    confidence as reference (metrics.mean_confidence_per_class) that is no drift; against the
    overall 0.99 it is."""
    per_class = DriftMonitor(reference, 0.99, 0.99, class_confidence=[0.99, 0.7, None, None])
    overall = DriftMonitor(reference, 0.99, 0.99)
    rng = np.random.default_rng(6)
    for _ in range(200):
        y = np.ones(1, np.int64)  # bearing_fault, predicted at 0.7
        x = generate(y, rng)
        for monitor in (per_class, overall):
            monitor.observe(["m01"], x, one_hot(y, 0.7), [None])
    assert per_class.machine_state("m01") == DriftState.OK
    assert overall.machine_state("m01") == DriftState.DRIFT
    # a class without its own reference (None) still uses the overall one
    for _ in range(200):
        y = np.full(1, 2, np.int64)
        per_class.observe(["m02"], generate(y, rng), one_hot(y, 0.7), [None])
    assert per_class.machine_state("m02") == DriftState.DRIFT


def test_a_channel_flat_in_training_too_is_not_a_stuck_sensor() -> None:
    """A slow signal forward-filled into windows (pi_edge --signals) is flat in training as
    well: its flat windows stay ordinary evidence, and a drift on such a plant is found."""
    rng = np.random.default_rng(7)
    y = np.repeat(np.arange(4), 500)
    x = generate(y, rng)
    x[:, :, 0] = x[:, :1, 0]  # temperature: one reading per window
    monitor = DriftMonitor(
        FeatureReference(feature_stats(x, y, CLASSES), CLASSES), mean_confidence=0.99, accuracy=0.99
    )
    for _ in range(200):
        y1 = rng.integers(0, 4, 1)
        w = generate(y1, rng)
        w[:, :, 0] = w[:, :1, 0]
        monitor.observe(["m01"], w, one_hot(y1), [None])
    assert monitor.machine_state("m01") == DriftState.OK
    assert "stuck_windows" not in monitor.snapshot()["machines"]["m01"]
    for _ in range(50):
        y1 = rng.integers(0, 4, 1)
        w = generate(y1, rng, "drift")
        w[:, :, 0] = w[:, :1, 0]
        monitor.observe(["m01"], w, one_hot(y1), [None])
    assert monitor.machine_state("m01") == DriftState.DRIFT
