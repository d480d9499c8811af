"""The trainer's intake outlives any message, and a dead thread turns the daemon degraded.

Real Mosquitto, no TensorFlow: the daemon starts without data or models (no champion), so only
its intake, status and watchdog run.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jetson_trainer.daemon.intake import MAX_PIS, STATUS_INBOX_MAX
from jetson_trainer.daemon.serve import ServeConfig, TrainerDaemon
from nodekit.mqtt import connect, make_client
from protocol import Status, Topics

from .test_intake import _payload

# finding 1: Python refuses to parse an int of more than 4300 digits (ValueError)
POISON_STATUS = (
    b'{"v":1,"node":"edge-poison","role":"edge","state":"online","software_version":"1",'
    b'"model_version":' + b"9" * 5000 + b"}"
)


class _Client:
    """A plain paho client that publishes and records what it receives (thread-safe)."""

    def __init__(self, address: str, name: str, subscribe: str | None = None) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = make_client(name)
        self.client.on_connect = lambda c, *a: (
            c.subscribe(subscribe, 1) if subscribe else self._ready.set()
        )
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.on_message = self._on_message
        connect(self.client, address)
        self.client.loop_start()
        assert self._ready.wait(10), "test client did not connect"

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def states(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(p) for _, p, _ in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _wait(cond: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


@pytest.fixture
def daemon_factory(
    broker: Any, topics: Topics, tmp_path: Path, keypair: tuple[Path, Path]
) -> Iterator[Callable[..., TrainerDaemon]]:
    made: list[TrainerDaemon] = []

    def _make(client_id: str | None = None) -> TrainerDaemon:
        config = ServeConfig(
            broker=broker.address,
            prefix=topics.prefix,
            store=tmp_path / "trainer",
            private_key=keypair[0],
            client_id=client_id or f"trainer-{time.time_ns()}",
            dashboard=False,
        )
        daemon = TrainerDaemon(config).start()
        made.append(daemon)
        assert _wait(lambda: daemon.state.connected), "trainer did not connect"
        return daemon

    yield _make
    for daemon in made:
        if not daemon._stop.is_set():
            daemon.stop()


@pytest.mark.broker
def test_a_status_with_a_5000_digit_number_does_not_stop_the_batch_intake(
    daemon_factory: Callable[..., TrainerDaemon], broker: Any, topics: Topics
) -> None:
    client_id = f"trainer-{time.time_ns()}"
    daemon = daemon_factory(client_id)
    pub = _Client(broker.address, f"pub-{time.time_ns()}")
    try:
        for _ in range(30):  # more than Mosquitto's in-flight window of unacknowledged messages
            pub.publish(topics.status("edge-poison"), POISON_STATUS)
        pub.publish(topics.drift_batches("pi-1"), _payload(3))
        good = Status("edge-good", "edge", "online", "1", model_version=2, drift="drift")
        pub.publish(topics.status("edge-good"), good.to_json())
        assert _wait(lambda: daemon.state.batches == 1), daemon.state
        assert _wait(lambda: "edge-good" in daemon.state.pis), daemon.state.pis
    finally:
        pub.close()
    assert daemon.store.counts().windows == 3
    assert daemon.state.pis["edge-good"] == {"state": "online", "drift": "drift", "model": 2}
    assert "edge-poison" not in daemon.state.pis
    assert daemon.watch.dead() == [] and not daemon.watchdog()
    status = daemon.status()
    assert status.state == "online"
    # refused as a typed error once the decoder is hardened; counted as a fault before that
    assert all(
        k.startswith(("fault:trainer-intake:", "fault:trainer-status-intake:"))
        for k in status.errors
        if "fault" in k
    )
    assert status.errors.get("intake_crashed", 0) == sum(
        n for k, n in status.errors.items() if k.startswith("fault:")
    )
    daemon.stop()
    # the poison statuses were acknowledged: the persistent session does not send them again
    again = daemon_factory(client_id)
    time.sleep(1.0)
    assert again.state.intake_crashes == 0 and again.faults.counts() == {}
    assert again.state.batches == 0  # the batch, too, was acknowledged once stored


@pytest.mark.broker
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_intake_thread_turns_the_daemon_degraded(
    daemon_factory: Callable[..., TrainerDaemon],
    broker: Any,
    topics: Topics,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    daemon = daemon_factory()
    topic = topics.status(daemon.config.client_id)
    watcher = _Client(broker.address, f"watch-{time.time_ns()}", subscribe=topic)
    try:

        def dies(item: Any) -> bool:
            raise SystemExit("the intake thread ends: not an Exception, the guard lets it pass")

        monkeypatch.setattr(daemon.intake, "_step", dies)
        pub = _Client(broker.address, f"pub-{time.time_ns()}")
        pub.publish(topics.drift_batches("pi-1"), _payload(1))
        pub.close()
        assert _wait(lambda: daemon.watch.dead() == ["trainer-intake"])
        assert daemon.watchdog() and daemon.failed.is_set()
        assert daemon.status().state == "degraded"
        daemon.stop()
        late = _Client(broker.address, f"late-{time.time_ns()}", subscribe=topic)
        try:
            assert _wait(lambda: bool(late.states()), 5)
            last = late.states()[-1]
            assert last["state"] == "degraded"
            assert last["detail"]["dead_threads"] == ["trainer-intake"]
        finally:
            late.close()
        assert any(s["state"] == "degraded" for s in watcher.states())
    finally:
        watcher.close()


def test_the_nodes_heard_from_are_capped_least_recently_heard_first(
    tmp_path: Path, keypair: tuple[Path, Path]
) -> None:
    daemon = TrainerDaemon(  # never started: no broker
        ServeConfig(broker="127.0.0.1:1", store=tmp_path / "trainer", private_key=keypair[0])
    )
    try:
        for i in range(MAX_PIS + 100):
            status = Status(f"edge-{i}", "edge", "online", "1")
            daemon.intake._note_status(daemon.topics.status(status.node), status.to_json())
            if i == 10:
                edge0 = Status("edge-0", "edge", "online", "1").to_json()
                daemon.intake._note_status(daemon.topics.status("edge-0"), edge0)
        pis = daemon.state.pis
    finally:
        daemon.store.close()
    assert len(pis) == MAX_PIS
    assert "edge-0" not in pis and f"edge-{MAX_PIS + 99}" in pis  # edge-0 heard at 10, not since
    assert "edge-100" in pis and "edge-99" not in pis


def test_a_status_is_taken_only_from_its_nodes_own_topic_with_the_role_it_had(
    tmp_path: Path, keypair: tuple[Path, Path]
) -> None:
    daemon = TrainerDaemon(  # never started: no broker
        ServeConfig(broker="127.0.0.1:1", store=tmp_path / "trainer", private_key=keypair[0])
    )
    seen: list[Status] = []
    daemon.intake._on_status = seen.append
    topics = daemon.topics
    b = Status("pi-b", "edge", "online", "1", model_version=2, detail={"rollbacks": []})
    try:
        daemon.intake._note_status(topics.status("pi-a"), b.to_json())  # B's status on A's topic
        sim = Status("sim-1", "simulator", "online", "1")
        daemon.intake._note_status(topics.status("sim-1"), sim.to_json())
        as_edge = Status("sim-1", "edge", "online", "1", model_version=2)
        daemon.intake._note_status(topics.status("sim-1"), as_edge.to_json())  # role changed
        own = Status(daemon.config.client_id, "edge", "online", "1", model_version=2)
        daemon.intake._note_status(topics.status(own.node), own.to_json())  # the trainer's id
        daemon.intake._note_status(topics.status("pi-b"), b.to_json())  # the real one
        state = daemon.state
        status = daemon.status()
    finally:
        daemon.store.close()
    assert [s.node for s in seen] == ["pi-b"] and list(state.pis) == ["pi-b"]
    assert state.statuses_refused == 3 and status.errors["status_refused"] == 3


def test_a_status_flood_drops_the_oldest_statuses_and_never_fills_the_batch_queue(
    tmp_path: Path, keypair: tuple[Path, Path]
) -> None:
    daemon = TrainerDaemon(  # never started: no broker, nothing reads the queues
        ServeConfig(broker="127.0.0.1:1", store=tmp_path / "trainer", private_key=keypair[0])
    )
    try:
        intake = daemon.intake
        for i in range(STATUS_INBOX_MAX + 250):
            intake._enqueue_status((daemon.topics.status(f"flood-{i}"), i, 0, b"{}"))
        batch = (daemon.topics.drift_batches("pi-1"), 99_999, 0, b"batch")
        intake._enqueue(batch)  # returns at once: the batch queue is its own
        oldest = intake._statuses.get_nowait()
        assert intake.counts().statuses_dropped == 250
        assert oldest[1] == 250  # the oldest 250 went, the newest stayed
        assert intake._inbox.get_nowait() == batch
    finally:
        daemon.store.close()
