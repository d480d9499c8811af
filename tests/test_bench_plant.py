"""bench/quality.py and bench/plant.py's replay: the honest metrics on streams built by hand.

No model is trained here: the replay runs pi_edge's DriftMonitor and Debouncer behind a stub
classifier whose answers the test chooses, so every figure has a value worked out by hand.
"""

from __future__ import annotations

import doctest
import math
from typing import cast

import numpy as np
import numpy.typing as npt
import pytest

from bench import quality
from bench.plant import PERIOD_S, replay, score
from pi_edge.loop.drift import DriftMonitor
from pi_edge.model.classifier import Classifier
from pi_edge.report.debounce import Debouncer
from sensor_sim.plant import PlantStream


def test_quality_doctests_pass() -> None:
    failed, attempted = doctest.testmod(quality)
    assert attempted > 10 and failed == 0


def test_accuracy_hides_a_rare_fault_that_macro_f1_shows() -> None:
    true = np.r_[np.zeros(95, np.int64), np.ones(5, np.int64)]
    always_normal = np.zeros(100, np.int64)
    assert quality.accuracy(true, always_normal) == 0.95
    assert quality.macro_f1(true, always_normal, 4) == pytest.approx((2 * 95 / 195 + 0) / 2)
    assert quality.per_class_recall(true, always_normal, 4)[:2] == [1.0, 0.0]
    assert math.isnan(quality.per_class_recall(true, always_normal, 4)[3])


def test_episodes_are_per_machine_and_a_class_change_starts_a_new_one() -> None:
    true = [0, 1, 1, 2, 0, 0, 3, 3]
    machine = [0, 0, 0, 0, 1, 1, 1, 1]
    t = [0, 1, 2, 3, 0, 1, 2, 3]
    got = quality.episodes(true, machine, t)
    assert [(e.machine, e.cls, e.onset, e.end) for e in got] == [
        (0, 1, 1.0, 3.0),
        (1, 3, 2.0, math.inf),
        (0, 2, 3.0, math.inf),
    ]  # in order of onset


def test_false_fault_events_count_changes_to_a_fault_while_truly_normal_per_machine() -> None:
    # machine 0: unknown → normal → fault (false) → normal → fault while truly faulty (true)
    # machine 1: its first state is a fault while normal (false), then stays
    state = [-1, 0, 2, 0, 1, 3, 3]
    true = [0, 0, 0, 0, 1, 0, 0]
    machine = [0, 0, 0, 0, 0, 1, 1]
    assert quality.false_fault_events(state, true, machine) == 2


def _stream(true: list[list[int]]) -> PlantStream:
    """Machines × ticks of true classes, tick-major, one window per PERIOD_S."""
    arr = np.array(true, np.int64).T  # ticks × machines
    ticks, machines = arr.shape
    n = ticks * machines
    return PlantStream(
        tuple(f"m{i + 1:02d}" for i in range(machines)),
        np.random.default_rng(0).standard_normal((n, 60, 4)).astype(np.float32),
        np.tile(np.arange(machines, dtype=np.int16), ticks),
        np.repeat(np.arange(1, ticks + 1) * PERIOD_S, machines),
        arr.reshape(-1),
        (arr.reshape(-1) > 0).astype(np.float32),
        np.full(n, -1, np.int64),
        np.full(n, np.nan, np.float32),
        np.zeros(n, np.float32),
        np.zeros(n, np.uint8),
    )


class _Stub:
    """Answers one-hot probabilities of the classes it is given, in stream order."""

    def __init__(self, answers: npt.NDArray[np.int64]) -> None:
        self.answers = answers

    def predict(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        assert len(x) == len(self.answers)
        return np.eye(4, dtype=np.float32)[self.answers] * 0.97 + 0.0075


def test_replay_and_score_a_perfect_and_a_flickering_classifier() -> None:
    m1 = [0] * 10 + [2] * 12 + [0] * 8  # a fault of 12 windows
    m2 = [0] * 30
    stream = _stream([m1, m2])
    monitor = DriftMonitor(None, 0.97, 0.99)

    perfect = replay(cast(Classifier, _Stub(stream.true)), monitor, Debouncer(5), stream)
    row = score("perfect", stream, perfect, 0, 0.0, 0.0)
    assert row.accuracy == 1.0 and row.macro_f1 == 1.0
    assert (row.episodes, row.detected) == (1, 1)
    assert row.delays_s == [4 * PERIOD_S]  # 5 windows to confirm: onset + 4 periods
    assert row.false_fault_events == 0 and row.drift_alarms == 0
    assert row.machine_hours == pytest.approx(2 * 30 * PERIOD_S / 3600)

    # m02 is called pump_fault for 6 windows in a row while normal: one false fault event;
    # m01's fault is only seen for its last 3 windows: too few to confirm, so not detected
    answers = stream.true.copy()
    m2_rows = np.flatnonzero(stream.machine == 1)
    answers[m2_rows[5:11]] = 3
    m1_rows = np.flatnonzero(stream.machine == 0)
    answers[m1_rows[10:19]] = 0
    flicker = replay(
        cast(Classifier, _Stub(answers)), DriftMonitor(None, 0.97, 0.99), Debouncer(5), stream
    )
    row = score("flicker", stream, flicker, 0, 0.0, 0.0)
    assert (row.episodes, row.detected) == (1, 0) and row.delays_s == [None]
    assert row.false_fault_events == 1
    assert row.false_fault_events_per_machine_h == pytest.approx(1 / row.machine_hours)
    assert row.accuracy == pytest.approx(1 - 15 / 60)
    assert math.isnan(row.delay_median_s)


def test_a_stream_without_faults_reports_no_delay_rather_than_inventing_one() -> None:
    """A stream with no fault: no episodes, delays NaN, recall NaN for absent classes."""
    stream = _stream([[0] * 8])
    rep = replay(
        cast(Classifier, _Stub(stream.true)), DriftMonitor(None, 0.97, 0.99), Debouncer(5), stream
    )
    row = score("quiet", stream, rep, 0, 0.0, 0.0)
    assert row.episodes == 0 and math.isnan(row.delay_median_s)
    assert math.isnan(row.recall["bearing_fault"]) and row.recall["normal"] == 1.0
    assert row.macro_f1 == 1.0
