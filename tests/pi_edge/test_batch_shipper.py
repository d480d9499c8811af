"""Shipper: every kept window reaches a QoS 1 subscriber; rows leave the buffer only on PUBACK."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pi_edge.buffer import DurableBuffer
from pi_edge.shipper import BatchShipper, ShipperConfig
from protocol import Topics, Window
from protocol.drift_batch import Kept, decode_batch, window_id
from protocol.mqtt import connect, make_client
from scripts.broker import Broker

pytestmark = pytest.mark.broker


def kept(i: int) -> Kept:
    return Kept(Window("m01", i, i, np.full((60, 4), i, np.float32), label=i % 4), "labeled")


class Receiver:
    def __init__(self, broker: Broker, topic: str) -> None:
        self.ids: list[str] = []
        self.lock = threading.Lock()
        # a persistent session, like the trainer's: nothing is lost while it reconnects
        self.client = make_client(f"recv-{time.monotonic_ns()}")
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.client.on_message = self._on_message
        connect(self.client, broker.address, clean_start=False, session_expiry_s=300)
        self.client.loop_start()
        wait(self.client.is_connected)
        time.sleep(0.2)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        batch = decode_batch(msg.payload)
        with self.lock:
            self.ids.extend(window_id(k.window) for k in batch.records)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def wait(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def shipper_for(broker: Broker, buffer: DurableBuffer, topic: str) -> BatchShipper:
    shipper = BatchShipper(
        buffer,
        broker.address,
        topic,
        f"pi-test-{time.monotonic_ns()}",
        lambda: 3,
        ShipperConfig(batch_size=16, max_inflight=2, poll_s=0.05),
    )
    return shipper.start()


def test_every_buffered_window_arrives_and_buffer_empties(
    broker: Broker, topics: Topics, tmp_path: Path
) -> None:
    buffer = DurableBuffer(tmp_path / "b.sqlite")
    buffer.add([kept(i) for i in range(100)])
    receiver = Receiver(broker, topics.drift_batches)
    shipper = shipper_for(broker, buffer, topics.drift_batches)
    try:
        wait(lambda: buffer.counts().pending + buffer.counts().inflight == 0)
        wait(lambda: len(receiver.ids) >= 100)
        assert sorted(set(receiver.ids)) == sorted(window_id(kept(i).window) for i in range(100))
        assert buffer.counts().acknowledged == 100
    finally:
        shipper.stop()
        receiver.close()


def test_windows_wait_in_the_buffer_while_the_broker_is_down(tmp_path: Path) -> None:
    buffer = DurableBuffer(tmp_path / "b.sqlite")
    with Broker(run_dir=tmp_path / "own-broker") as own:
        topic = Topics("test/shipper_down").drift_batches
        receiver = Receiver(own, topic)
        shipper = shipper_for(own, buffer, topic)
        try:
            own.stop()
            buffer.add([kept(i) for i in range(40)])
            time.sleep(1.0)
            assert buffer.counts().pending + buffer.counts().inflight == 40
            own.start()
            wait(lambda: buffer.counts().pending + buffer.counts().inflight == 0, timeout=30)
            wait(lambda: len(set(receiver.ids)) >= 40, timeout=30)
            assert set(receiver.ids) == {window_id(kept(i).window) for i in range(40)}
        finally:
            shipper.stop()
            receiver.close()
