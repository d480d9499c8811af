"""Bounded per-machine state: a flood of machine ids keeps every structure at the cap.

No broker and no TensorFlow: the node's pure parts (message callback, inbox, classify step with a
stand-in classifier, drift monitor, keeper, telemetry, status) run on the test's thread.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from nodekit.settings import build
from pi_edge import EdgeConfig, EdgeService
from pi_edge.intake.machine_cap import STATUS_MACHINES, MachineTracker
from pi_edge.loop.drift import DriftMonitor, DriftState
from protocol import CLASSES, Topics, Window, encode_window


class _Classifier:
    runtime = "stand-in"
    reallocations = 0

    def predict(self, x: np.ndarray) -> np.ndarray:
        probs = np.full((len(x), len(CLASSES)), 0.01, np.float32)
        probs[:, 0] = 0.97
        return probs


class _Client:
    """What nodekit.mqtt.publish_many needs of a paho client; counts the bytes handed over."""

    protocol = 5  # MQTTv5

    def __init__(self) -> None:
        self._sock = object()
        self._out_packet: list[bytes] = []
        self.handed = 0
        self.cleared = 0

    def _packet_queue(self, command: int, data: bytes, mid: int, qos: int, info: Any) -> int:
        self.handed += len(data)
        return 0

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> Any:
        """Retained states and their clearing (an empty payload) go here."""
        self.cleared += retain and not payload
        return SimpleNamespace(rc=0)


def _service(tmp_path: Path, **kw: Any) -> EdgeService:
    config = build(
        EdgeConfig,
        broker="127.0.0.1:1",
        prefix="test/cap",
        node="edge-cap",
        insecure_dev=True,
        state_dir=tmp_path / "state",
        dashboard=False,
        **kw,
    )
    svc = EdgeService(config, public_key=None)
    manifest = SimpleNamespace(
        version=1, classes=CLASSES, train_stats={}, metrics={"accuracy": 0.95}, created=0.0
    )
    svc.drift.model_changed(manifest)  # type: ignore[arg-type]
    svc.models._model = SimpleNamespace(  # type: ignore[assignment]
        version=1,
        classifier=_Classifier(),
        bundle=SimpleNamespace(manifest=manifest),
        classes=CLASSES,
        anomaly=None,  # a classifier, not an anomaly model
        head=None,  # without an anomaly head
    )
    svc._client = _Client()
    return svc


def _feed(svc: EdgeService, topics: Topics, ids: range, data: np.ndarray) -> None:
    """One window per machine id through the paho callback, classified batch by batch."""
    for i in ids:
        machine = f"m{i:06d}"
        payload = encode_window(Window(machine, 0, time.time_ns(), data))
        svc._on_message(None, None, SimpleNamespace(topic=topics.window(machine), payload=payload))
        if len(svc.inbox) >= svc.config.intake.batch_max:
            svc._classify(svc.inbox.get_batch(svc.policy, timeout=0))
    while len(svc.inbox):
        svc._classify(svc.inbox.get_batch(svc.policy, timeout=0))


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _tracked(svc: EdgeService) -> dict[str, int]:
    monitor = svc.drift.monitor
    assert monitor is not None
    return {
        "telemetry": len(svc.telemetry._machines),
        "drift": monitor.machines,
        "drift_slots": len(monitor._state),
        "keeper": len(svc.kept.keeper),
        "topics": len(svc._topics_by_machine),
        "machine_states": len(svc.machine_states),
    }


def test_20000_machine_ids_keep_every_structure_at_the_cap_and_rss_flat(tmp_path: Path) -> None:
    cap = 256
    svc = _service(tmp_path, max_machines=cap, low_confidence=0.99)  # every window is flagged
    topics = Topics("test/cap")
    data = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
    try:
        _feed(svc, topics, range(0, 2_000), data)  # warm up: allocators, SQLite, caches
        small = len(svc.status().to_json())
        before = _rss()
        _feed(svc, topics, range(2_000, 22_000), data)
        grown = _rss() - before
        sizes = _tracked(svc)
        status = svc.status()
        payload = status.to_json()
    finally:
        svc.history.close()
        svc.kept.stop()
    assert max(v for k, v in sizes.items() if k != "drift_slots") <= cap, sizes
    assert sizes["drift_slots"] <= 2 * cap  # grown by doubling, then slots are reused
    assert status.metrics["machines_tracked"] == cap
    assert status.metrics["machines_evicted"] == 22_000 - cap
    assert status.metrics["classified"] == 22_000
    assert len(status.detail["machines"]) == STATUS_MACHINES
    assert len(status.detail["drift"]["machines"]) == STATUS_MACHINES
    assert status.detail["drift"]["machines_total"] == cap
    assert len(payload) < 16 * 1024 and len(payload) < small + 1024, (len(payload), small)
    # before the cap each id cost ~5 KiB (20,000 ids: +104 MB); allow 10 MB of noise
    assert grown < 10 * 2**20, f"RSS grew {grown / 2**20:.1f} MiB for 20,000 machine ids"
    snap = svc.snapshot()
    assert len(snap.machines) == cap and snap.machines_evicted == 22_000 - cap
    # each evicted machine's retained state is cleared (tests/pi_edge/test_retained_cleanup.py)
    assert svc.retained_cleared == 22_000 - cap


def test_windows_outside_the_machines_allow_list_are_refused_and_counted(tmp_path: Path) -> None:
    svc = _service(tmp_path, machines=("m01", "m02"))
    topics = Topics("test/cap")
    data = np.zeros((60, 4), np.float32)
    try:
        for machine in ("m01", "m03", "m02", "m03"):
            payload = encode_window(Window(machine, 0, 0, data))
            msg = SimpleNamespace(topic=topics.window(machine), payload=payload)
            svc._on_message(None, None, msg)
        assert [item.window.machine for item in svc.inbox.get_batch(svc.policy, 0)] == [
            "m01",
            "m02",
        ]
        assert svc.status().errors == {"not_allowed": 2}
    finally:
        svc.history.close()
        svc.kept.stop()


def test_drift_monitor_forgets_machines_and_reuses_their_slots() -> None:
    monitor = DriftMonitor(None, mean_confidence=0.95, accuracy=0.95)
    low = np.full((1, 4), 0.25, np.float32)  # confidence 0.25: the confidence CUSUM climbs
    raw = np.zeros((1, 60, 4), np.float32)
    for _ in range(40):
        monitor.observe(["bad"], raw, low, [None])
    for i in range(20):
        monitor.observe([f"m{i}"], raw, np.eye(4, dtype=np.float32)[:1], [None])
    assert monitor.machine_state("bad") == DriftState.DRIFT and monitor.overall == DriftState.DRIFT
    slots = len(monitor._state)
    monitor.forget(["bad", *(f"m{i}" for i in range(10))])
    assert monitor.machines == 10 and monitor.overall == DriftState.OK
    assert monitor.machine_state("bad") == DriftState.OK
    for i in range(20, 31):
        monitor.observe([f"m{i}"], raw, np.eye(4, dtype=np.float32)[:1], [None])
    assert monitor.machines == 21 and len(monitor._state) == slots  # freed slots were reused
    snap = monitor.snapshot(top=5)
    assert len(snap["machines"]) == 5 and snap["machines_total"] == 21


def test_a_status_lists_the_worst_drifting_machines_first() -> None:
    monitor = DriftMonitor(None, mean_confidence=0.95, accuracy=0.95)
    raw = np.zeros((1, 60, 4), np.float32)
    for i in range(50):
        monitor.observe([f"m{i:02d}"], raw, np.eye(4, dtype=np.float32)[:1], [None])
    for _ in range(40):
        monitor.observe(["m33"], raw, np.full((1, 4), 0.25, np.float32), [None])
    assert list(monitor.snapshot(top=3)["machines"]) == ["m00", "m01", "m33"]  # worst + ties
    assert list(monitor.snapshot(top=1)["machines"]) == ["m33"]


@pytest.mark.parametrize("cap", [0, -1])
def test_a_cap_below_one_is_refused(cap: int) -> None:
    with pytest.raises(ValueError, match="must be ≥ 1"):
        MachineTracker(cap)
