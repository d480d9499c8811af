"""The pure step from a classified batch to its outputs: payloads, typed history rows, latencies."""

from __future__ import annotations

import numpy as np

from pi_edge.loop.drift import DriftState, Verdicts
from pi_edge.report.outputs import Clock, HistoryRow, batch_outputs
from pi_edge.report.telemetry import ModelInfo, NodeTelemetry, Queue
from protocol import CLASSES, Prediction, Window

MS = 1_000_000


def window(machine: str, seq: int, ts_ns: int, label: int | None = None) -> Window:
    return Window(machine, seq, ts_ns, np.zeros((60, 4), np.float32), label=label)


def classified() -> tuple[list[Window], list[int], np.ndarray, np.ndarray, Verdicts]:
    windows = [window("m01", 1, 100 * MS, label=2), window("m02", 9, 0)]
    received = [103 * MS, 104 * MS]
    probs = np.array([[0.1, 0.2, 0.6, 0.1], [0.05, 0.05, 0.1, 0.8]], np.float32)
    verdicts = Verdicts(
        np.array([DriftState.OK, DriftState.DRIFT], np.int8),
        np.array([1.2345, 20.0]),
        np.array([2, 1], np.int8),  # low confidence, out of distribution
    )
    return windows, received, probs, probs.argmax(axis=1), verdicts


def test_payloads_carry_class_truth_drift_and_latency_spans() -> None:
    windows, received, probs, top, verdicts = classified()
    clock = Clock(start_ns=105 * MS, inferred_ns=107 * MS, published_ns=110 * MS)
    out = batch_outputs(
        windows, received, probs, top, verdicts, CLASSES, 7, clock, lambda m: f"t/{m}/prediction"
    )
    assert [t for t, _ in out.messages] == ["t/m01/prediction", "t/m02/prediction"]
    first, second = (Prediction.from_json(p) for _, p in out.messages)
    assert (first.machine, first.seq, first.label, first.model_version) == ("m01", 1, CLASSES[2], 7)
    assert first.truth == CLASSES[2] and second.truth is None
    assert abs(first.confidence - 0.6) < 1e-6
    # sensor-stamped window: total from the sensor time, transport from sensor to arrival
    assert first.latency_ms == {
        "queue": 2.0,
        "inference": 2.0,
        "publish": 3.0,
        "total": 10.0,
        "transport": 3.0,
    }
    # unstamped window: total from arrival, no transport span
    assert second.latency_ms["total"] == 6.0 and "transport" not in second.latency_ms
    assert out.latencies_ms == [10.0, 6.0]


def test_history_rows_are_typed_and_in_the_history_column_order() -> None:
    from pi_edge.report.history_store import COLUMNS

    windows, received, probs, top, verdicts = classified()
    out = batch_outputs(
        windows, received, probs, top, verdicts, CLASSES, 3, Clock(0, 0, 2_000_000_000), str
    )
    assert HistoryRow._fields == COLUMNS
    a, b = out.history
    assert (a.machine, a.seq, a.label, a.truth, a.drift, a.ood) == (
        "m01",
        1,
        "drive_wear",
        "drive_wear",
        "ok",
        False,
    )
    assert (b.machine, b.label, b.drift, b.ood, b.model_version, b.ts) == (
        "m02",
        "pump_fault",
        "drift",
        True,
        3,
        2.0,
    )


def test_telemetry_takes_a_batch_and_shows_it_in_status_and_snapshot() -> None:
    windows, received, probs, top, verdicts = classified()
    out = batch_outputs(windows, received, probs, top, verdicts, CLASSES, 3, Clock(0, 0, 0), str)
    telemetry = NodeTelemetry("pi-1", "edge", "x", log_interval_s=10)
    telemetry.add_batch(out.history, out.latencies_ms)
    assert telemetry.count_error("bad_json") == (True, 0)
    status = telemetry.status(ModelInfo(version=3), Queue(1, 8, 0), "connected", "ok", {})
    assert status.metrics["classified"] == 2.0 and status.metrics["mean_batch"] == 2.0
    assert status.errors == {"bad_json": 1}
    assert status.detail["machines"] == ["m01", "m02"]
    snap = telemetry.snapshot(
        ModelInfo(), Queue(1, 8, 0), "connected", "ok", {"m02": "drift"}, {}, 0.6
    )
    assert [(r.machine, r.last_class, r.drift) for r in snap.machines] == [
        ("m01", "drive_wear", "ok"),
        ("m02", "pump_fault", "drift"),
    ]
    assert snap.bad_payloads == {"bad_json": 1}
