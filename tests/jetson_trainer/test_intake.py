"""The daemon's intake keeps a drift batch it could not store and retries until it is stored,
and acknowledges it to the Pi only after its store committed it, before the broker."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jetson_trainer.daemon.serve import ServeConfig, TrainerDaemon
from nodekit.errors import StorageError
from nodekit.mqtt import connect, make_client
from protocol import Topics, Window
from protocol.batch_ack import BatchAck
from protocol.drift_batch import DriftBatch, Kept, encode_batch


def _payload(n: int = 3) -> bytes:
    rng = np.random.default_rng(0)
    records = tuple(
        Kept(
            Window(
                "m01",
                i,
                1_700_000_000_000_000_000 + i,
                rng.normal(size=(60, 4)).astype(np.float32),
                1,
            ),
            "labeled",
        )
        for i in range(n)
    )
    return encode_batch(DriftBatch(bytes(range(16)), "pi-1", 1, records))


def _daemon(tmp_path: Path, keypair: tuple[Path, Path]) -> TrainerDaemon:
    # never started: no broker, no training; only the intake's storing is exercised
    return TrainerDaemon(
        ServeConfig(broker="127.0.0.1:1", store=tmp_path / "trainer", private_key=keypair[0])
    )


def test_a_batch_the_store_cannot_commit_is_retried_until_stored(
    tmp_path: Path, keypair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = _daemon(tmp_path, keypair)
    real_add = daemon.store.add_batch
    failures = iter([True, True])

    def flaky(batch: DriftBatch, **kw: Any) -> tuple[int, int]:
        if next(failures, False):
            raise StorageError("could not write to the store: database or disk is full")
        return real_add(batch)

    monkeypatch.setattr(daemon.store, "add_batch", flaky)
    try:
        assert (
            daemon.intake.store_with_retry(
                _payload(3), daemon.topics.drift_batches("pi-1"), first_delay_s=0.01
            )
            is True
        )
        assert daemon.state.store_errors == 2
        assert daemon.state.batches == 1
        assert daemon.store.counts().windows == 3
    finally:
        daemon.store.close()


def test_stopping_ends_the_retries_without_storing(
    tmp_path: Path, keypair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = _daemon(tmp_path, keypair)

    def full(batch: DriftBatch, **kw: Any) -> tuple[int, int]:
        raise StorageError("could not write to the store: database or disk is full")

    monkeypatch.setattr(daemon.store, "add_batch", full)
    threading.Timer(0.3, daemon._stop.set).start()
    try:
        assert (
            daemon.intake.store_with_retry(
                _payload(), daemon.topics.drift_batches("pi-1"), first_delay_s=0.05
            )
            is False
        )
        assert daemon.state.store_errors >= 2
        assert daemon.state.batches == 0
    finally:
        daemon.store.close()


class _Recorder:
    """Stands in for the intake's paho client: notes publishes and acks, in order."""

    def __init__(self, calls: list[tuple[Any, ...]]) -> None:
        self.calls = calls

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> Any:
        self.calls.append(("publish", topic, BatchAck.from_json(payload), qos, retain))

    def ack(self, mid: int, qos: int) -> None:
        self.calls.append(("ack", mid))


def _recording(
    daemon: TrainerDaemon, monkeypatch: pytest.MonkeyPatch, failures: int = 0
) -> list[tuple[Any, ...]]:
    """Calls to the store (`stored` / `store_failed`), publishes and broker acks, in order."""
    calls: list[tuple[Any, ...]] = []
    real_add = daemon.store.add_batch
    left = [failures]

    def add_batch(batch: DriftBatch, **kw: Any) -> tuple[int, int]:
        if left[0]:
            left[0] -= 1
            calls.append(("store_failed",))
            raise StorageError("could not write to the store: database or disk is full")
        added, duplicates = real_add(batch, **kw)
        calls.append(("stored", daemon.store.counts().windows))
        return added, duplicates

    monkeypatch.setattr(daemon.store, "add_batch", add_batch)
    monkeypatch.setattr(daemon.intake, "client", _Recorder(calls))
    return calls


def test_the_pi_is_acknowledged_after_the_store_commit_and_before_the_broker(
    tmp_path: Path, keypair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = _daemon(tmp_path, keypair)
    calls = _recording(daemon, monkeypatch, failures=2)
    item = (daemon.topics.drift_batches("pi-1"), 7, 1, _payload(3))
    try:
        with monkeypatch.context() as m:  # no real backoff waits
            m.setattr(daemon._stop, "wait", lambda delay: False)
            assert daemon.intake._step(item) is True
    finally:
        daemon.store.close()
    ack = BatchAck(bytes(range(16)), stored=3, duplicates=0)
    assert calls == [
        ("store_failed",),
        ("store_failed",),
        ("stored", 3),  # committed first …
        ("publish", daemon.topics.drift_acks("pi-1"), ack, 1, False),  # … the Pi told …
        ("ack", 7),  # … and only then the broker
    ]
    assert daemon.intake.counts().acks == 1


def test_a_store_that_never_commits_publishes_no_ack_and_acks_nothing(
    tmp_path: Path, keypair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = _daemon(tmp_path, keypair)
    calls = _recording(daemon, monkeypatch, failures=1_000_000)
    threading.Timer(0.3, daemon._stop.set).start()
    try:
        assert daemon.intake._step((daemon.topics.drift_batches("pi-1"), 7, 1, _payload())) is False
    finally:
        daemon.store.close()
    assert calls and {c[0] for c in calls} == {"store_failed"}
    assert daemon.intake.counts().acks == 0


def test_a_batch_of_duplicates_is_acknowledged_all_the_same(
    tmp_path: Path, keypair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = _daemon(tmp_path, keypair)
    calls = _recording(daemon, monkeypatch)
    try:
        for mid in (1, 2):  # the Pi resent the batch: same id, same windows
            assert daemon.intake._step((daemon.topics.drift_batches("pi-1"), mid, 1, _payload(3)))
    finally:
        daemon.store.close()
    acks = [c[2] for c in calls if c[0] == "publish"]
    assert [(a.stored, a.duplicates) for a in acks] == [(3, 0), (0, 3)]
    assert [c for c in calls if c[0] == "ack"] == [("ack", 1), ("ack", 2)]


def test_a_malformed_batch_is_acknowledged_to_the_broker_but_not_to_the_pi(
    tmp_path: Path, keypair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = _daemon(tmp_path, keypair)
    calls = _recording(daemon, monkeypatch)
    newer = bytearray(_payload(3))
    newer[2] = 2  # a batch version this trainer cannot read: the Pi keeps the windows
    try:
        assert daemon.intake._step((daemon.topics.drift_batches("pi-1"), 5, 1, bytes(newer)))
    finally:
        daemon.store.close()
    assert calls == [("ack", 5)]
    assert daemon.state.bad_batches == 1


def test_a_batch_naming_another_node_than_its_topic_is_refused_and_never_stored(
    tmp_path: Path, keypair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """pi-9 ships on its own topic a batch that says it is pi-1's: not stored, pi-1 is not
    acknowledged (its real windows stay with it), the broker's copy is done with, counted."""
    daemon = _daemon(tmp_path, keypair)
    calls = _recording(daemon, monkeypatch)
    try:
        assert daemon.intake._step((daemon.topics.drift_batches("pi-9"), 4, 1, _payload(3)))
        assert daemon.store.counts().windows == 0
        status = daemon.status()
    finally:
        daemon.store.close()
    assert calls == [("ack", 4)]  # the broker's copy only: no store, no ack to any Pi
    assert daemon.state.batches_refused == 1 and daemon.state.batches == 0
    assert status.errors["batch_sender_refused"] == 1


def test_a_batch_on_the_legacy_shared_topic_is_stored_for_its_payloads_node_and_counted(
    tmp_path: Path, keypair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = _daemon(tmp_path, keypair)
    calls = _recording(daemon, monkeypatch)
    try:
        assert daemon.intake._step((daemon.topics.legacy_drift_batches, 3, 1, _payload(3)))
        status = daemon.status()
    finally:
        daemon.store.close()
    assert ("stored", 3) in calls and ("ack", 3) in calls
    assert any(c[0] == "publish" and c[1] == daemon.topics.drift_acks("pi-1") for c in calls)
    assert status.errors["legacy_batch_topic"] == 1


@pytest.mark.broker
def test_a_running_trainer_acknowledges_a_batch_on_the_nodes_topic_once_stored(
    broker: Any,
    topics: Topics,
    tmp_path: Path,
    keypair: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    daemon = TrainerDaemon(
        ServeConfig(
            broker=broker.address,
            prefix=topics.prefix,
            store=tmp_path / "trainer",
            private_key=keypair[0],
            client_id=f"trainer-{time.time_ns()}",
            dashboard=False,
        )
    )
    failing = threading.Event()
    failing.set()
    real_add = daemon.store.add_batch

    def add_batch(batch: DriftBatch, **kw: Any) -> tuple[int, int]:
        if failing.is_set():
            raise StorageError("could not write to the store: database or disk is full")
        return real_add(batch)

    monkeypatch.setattr(daemon.store, "add_batch", add_batch)
    got: list[tuple[BatchAck, int]] = []  # each ack and the store's row count when it came
    pi = make_client(f"pi-1-{time.time_ns()}")
    pi.on_connect = lambda c, *a: c.subscribe(topics.drift_acks("pi-1"), qos=1)
    pi.on_message = lambda c, u, msg: got.append(
        (BatchAck.from_json(msg.payload), daemon.store.counts().windows)
    )
    connect(pi, broker.address)
    pi.loop_start()
    daemon.start()
    try:
        _wait_for(lambda: daemon.state.connected and pi.is_connected())
        time.sleep(0.3)
        pi.publish(topics.drift_batches("pi-1"), _payload(3), qos=1).wait_for_publish(5)
        _wait_for(lambda: daemon.state.store_errors >= 2)
        assert got == []  # not stored: no acknowledgement
        failing.clear()
        _wait_for(lambda: len(got) == 1)
        ((ack, rows_then),) = got
        assert ack == BatchAck(bytes(range(16)), stored=3) and rows_then == 3
        assert daemon.status().metrics["batch_acks"] == 1
    finally:
        daemon.stop()
        pi.loop_stop()
        pi.disconnect()


def _wait_for(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)
