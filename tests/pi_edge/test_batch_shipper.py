"""Shipper: every kept window reaches the trainer; rows leave the buffer only on the TRAINER's
acknowledgement (never on the broker's PUBACK), unacknowledged batches are resent, and a
refused publish keeps its rows."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nodekit.mqtt import Credentials, connect, make_client
from pi_edge.loop.buffer import DurableBuffer
from pi_edge.loop.shipper import BatchShipper, ShipperConfig
from protocol import Topics, Window
from protocol.batch_ack import BatchAck
from protocol.drift_batch import Kept, decode_batch, window_id
from scripts.broker import Broker
from scripts.secure_profile import SecureProfile

pytestmark = pytest.mark.broker

FAST = ShipperConfig(batch_size=16, max_inflight=2, poll_s=0.05)


def kept(i: int) -> Kept:
    return Kept(Window("m01", i, i, np.full((60, 4), i, np.float32), label=i % 4), "labeled")


def ids(n: int) -> set[str]:
    return {window_id(kept(i).window) for i in range(n)}


class Trainer:
    """Stands in for the trainer: a persistent session on `…/drift/batches` that notes every
    batch and, while `acking`, acknowledges each on `…/drift/acks/<node>` as the trainer does
    after its store committed it (duplicates dropped by window id)."""

    def __init__(
        self,
        broker: Broker,
        topics: Topics,
        acking: bool = True,
        credentials: Credentials | None = None,
        client_id: str | None = None,
    ) -> None:
        self.topics = topics
        self.acking = acking
        self.stored: set[str] = set()
        self.copies: list[bytes] = []  # batch id of every batch received, in order
        self.acked: list[bytes] = []
        self.lock = threading.Lock()
        self.client = make_client(client_id or f"trainer-{time.monotonic_ns()}")
        self.client.on_connect = lambda c, *a: c.subscribe(topics.all_drift_batches(), qos=1)
        self.client.on_message = self._on_message
        connect(
            self.client, broker.address, credentials=credentials, clean_start=False,
            session_expiry_s=300,
        )  # fmt: skip
        self.client.loop_start()
        wait(self.client.is_connected)
        time.sleep(0.2)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        batch = decode_batch(msg.payload)
        with self.lock:
            self.copies.append(batch.batch_id)
            if not self.acking:
                return
            new = {window_id(k.window) for k in batch.records} - self.stored
            self.stored |= new
            self.acked.append(batch.batch_id)
        ack = BatchAck(batch.batch_id, len(new), len(batch.records) - len(new))
        client.publish(self.topics.drift_acks(batch.node), ack.to_json(), qos=1)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def wait(cond: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def shipper_for(
    broker: Broker,
    buffer: DurableBuffer,
    topics: Topics,
    config: ShipperConfig = FAST,
    credentials: Credentials | None = None,
    node: str | None = None,
) -> BatchShipper:
    node = node or f"pi-test-{time.monotonic_ns()}"
    return BatchShipper(
        buffer,
        broker.address,
        topics.drift_batches(node),
        node,
        lambda: 3,
        config,
        credentials=credentials,
        ack_topic=topics.drift_acks(node),
    ).start()


def left(buffer: DurableBuffer) -> int:
    c = buffer.counts()
    return c.pending + c.inflight


def test_every_buffered_window_arrives_and_buffer_empties(
    broker: Broker, topics: Topics, tmp_path: Path
) -> None:
    buffer = DurableBuffer(tmp_path / "b.sqlite")
    buffer.add([kept(i) for i in range(100)])
    trainer = Trainer(broker, topics)
    shipper = shipper_for(broker, buffer, topics)
    try:
        wait(lambda: left(buffer) == 0)
        assert trainer.stored == ids(100)
        assert buffer.counts().acknowledged == 100
        stats = shipper.stats()
        assert stats["batches_acked"] == stats["batches_sent"] == 7  # 100 windows / 16
        assert stats["awaiting_ack"] == 0 and stats["refused"] == {}
    finally:
        shipper.stop()
        trainer.close()


def test_rows_stay_after_the_brokers_puback_until_the_trainer_acknowledges(
    broker: Broker, topics: Topics, tmp_path: Path
) -> None:
    buffer = DurableBuffer(tmp_path / "b.sqlite")
    buffer.add([kept(i) for i in range(20)])
    trainer = Trainer(broker, topics, acking=False)
    shipper = shipper_for(broker, buffer, topics)
    try:
        wait(lambda: shipper.stats()["batches_delivered"] == 2 and len(trainer.copies) == 2)
        time.sleep(0.5)  # PUBACKs are in: the rows must still be there
        assert left(buffer) == 20 and buffer.counts().inflight == 20
        assert buffer.counts().acknowledged == 0
        assert shipper.stats()["awaiting_ack"] == 2
        assert shipper.stats()["awaiting_ack_windows"] == 20
        first, second = trainer.copies
        node = shipper.node
        trainer.client.publish(topics.drift_acks(node), BatchAck(first, 16).to_json(), qos=1)
        wait(lambda: buffer.counts().acknowledged == 16)
        assert left(buffer) == 4
        trainer.client.publish(topics.drift_acks(node), BatchAck(second, 4).to_json(), qos=1)
        wait(lambda: left(buffer) == 0)
        assert shipper.stats()["batches_acked"] == 2 and shipper.stats()["batches_resent"] == 0
    finally:
        shipper.stop()
        trainer.close()


def test_a_batch_the_trainer_does_not_acknowledge_is_resent_with_backoff(
    broker: Broker, topics: Topics, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    buffer = DurableBuffer(tmp_path / "b.sqlite")
    buffer.add([kept(i) for i in range(10)])
    trainer = Trainer(broker, topics, acking=False)
    config = ShipperConfig(batch_size=16, ack_timeout_s=0.4, max_resend_wait_s=60, poll_s=0.05)
    caplog.set_level(logging.WARNING, logger="pi_edge.loop.shipper")
    shipper = shipper_for(broker, buffer, topics, config)
    try:
        wait(lambda: len(trainer.copies) >= 3)  # sent, resent after 0.4 s, again after 0.8 s
        time.sleep(1.0)
        copies = list(trainer.copies)
        assert len(set(copies)) == 1, "a resend is the same batch (same id, same rows)"
        # waits double: 0.4 + 0.8 + 1.6 … so about 4 copies in the first ~2.5 s, not 6+
        assert 3 <= len(copies) <= 5, copies
        assert shipper.stats()["batches_resent"] in (len(copies) - 1, len(copies))
        assert shipper.stats()["awaiting_ack"] == 1
        assert shipper.stats()["oldest_unacked_s"] >= 2.0
        assert left(buffer) == 10 and buffer.counts().acknowledged == 0
        silent = [r for r in caplog.records if "wait for the trainer's ack" in r.getMessage()]
        assert len(silent) == 1, "a silent trainer is reported once (then every 10 min)"
        trainer.acking = True  # the trainer is back: the next copy is stored and acknowledged
        wait(lambda: left(buffer) == 0, timeout=10)
        assert trainer.stored == ids(10)
    finally:
        shipper.stop()
        trainer.close()


def test_a_broker_kill9_before_its_autosave_loses_no_window(tmp_path: Path) -> None:
    """The trainer is away; the broker acknowledges the batches queued for its session, then is
    killed before it saved them. The Pi still holds every row and sends them again once the
    broker is back (after `reconnect_grace_s`, not after `ack_timeout_s`)."""
    buffer = DurableBuffer(tmp_path / "b.sqlite")
    topics = Topics("test/kill9")
    with Broker(run_dir=tmp_path / "own-broker") as own:
        trainer_id = f"trainer-{time.monotonic_ns()}"
        trainer = Trainer(own, topics, client_id=trainer_id)
        trainer.close()  # away: its persistent session queues the batches
        config = ShipperConfig(batch_size=16, max_inflight=4, ack_timeout_s=120, poll_s=0.05,
                               max_resend_wait_s=600, reconnect_grace_s=0.5)  # fmt: skip
        shipper = shipper_for(own, buffer, topics, config)
        try:
            buffer.add([kept(i) for i in range(40)])
            shipper.wake()
            wait(lambda: shipper.stats()["batches_delivered"] == 3)
            assert left(buffer) == 40  # the broker has them; the Pi keeps them
            own.kill9()
            own.start()
            back = time.monotonic()
            trainer = Trainer(own, topics, client_id=trainer_id)
            wait(lambda: left(buffer) == 0, timeout=15)
            took = time.monotonic() - back
            assert trainer.stored == ids(40)
            assert took < 15 < config.ack_timeout_s
        finally:
            shipper.stop()
            trainer.close()


def test_windows_wait_in_the_buffer_while_the_broker_is_down(tmp_path: Path) -> None:
    buffer = DurableBuffer(tmp_path / "b.sqlite")
    with Broker(run_dir=tmp_path / "own-broker") as own:
        topics = Topics("test/shipper_down")
        trainer = Trainer(own, topics)
        shipper = shipper_for(own, buffer, topics)
        try:
            own.stop()
            buffer.add([kept(i) for i in range(40)])
            time.sleep(1.0)
            assert left(buffer) == 40
            own.start()
            wait(lambda: left(buffer) == 0, timeout=30)
            assert trainer.stored == ids(40)
        finally:
            shipper.stop()
            trainer.close()


def test_a_publish_the_acl_refuses_keeps_its_rows_and_is_logged_once(
    secure_broker: Broker,
    secure_profile: SecureProfile,
    topics: Topics,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A sensor's login may not publish drift batches: the broker answers PUBACK 0x87, which
    must not delete anything (it did: the reason code was ignored)."""
    buffer = DurableBuffer(tmp_path / "b.sqlite")
    buffer.add([kept(i) for i in range(20)])
    config = ShipperConfig(batch_size=16, max_inflight=2, refused_backoff_s=0.1, poll_s=0.05)
    with caplog.at_level(logging.ERROR, logger="pi_edge.loop.shipper"):
        # the sensor identity's own login (it has no `~batches` one): the ACL must refuse
        sensor = dataclasses.replace(secure_profile.credentials("sensor"), per_connection=False)
        shipper = shipper_for(secure_broker, buffer, topics, config, sensor)
        try:
            wait(lambda: shipper.stats()["refused"].get("not_authorized", 0) >= 4)
            time.sleep(0.3)
        finally:
            shipper.stop()
    assert left(buffer) == 20 and buffer.counts().acknowledged == 0
    assert buffer.counts().pending == 20  # released, not stuck in flight
    stats = shipper.stats()
    assert stats["batches_delivered"] == 0 and stats["batches_acked"] == 0
    refusals = [r for r in caplog.records if "PUBACK 0x87" in r.getMessage()]
    assert len(refusals) == 1, [r.getMessage() for r in refusals]
    assert "ACL" in refusals[0].getMessage() and "--mqtt-user" in refusals[0].getMessage()
    # backoff: 0.1, 0.2, 0.4 … s between rounds, not one refusal per poll (0.05 s)
    assert stats["refused"]["not_authorized"] <= 2 * 8


def test_the_acl_lets_the_edge_ship_and_the_trainer_acknowledge(
    secure_broker: Broker, secure_profile: SecureProfile, topics: Topics, tmp_path: Path
) -> None:
    buffer = DurableBuffer(tmp_path / "b.sqlite")
    buffer.add([kept(i) for i in range(20)])
    trainer = Trainer(secure_broker, topics, credentials=secure_profile.credentials("trainer"))
    edge = secure_profile.credentials("edge")  # ships as `edge~batches`, acks on …/acks/edge
    shipper = shipper_for(secure_broker, buffer, topics, FAST, edge, node="edge")
    try:
        wait(lambda: left(buffer) == 0)
        assert trainer.stored == ids(20)
        assert shipper.stats()["refused"] == {} and shipper.stats()["subscribe_refused"] == 0
    finally:
        shipper.stop()
        trainer.close()
