"""Ships kept windows from the durable buffer to `…/drift/batches` at QoS 1.

It owns its MQTT connection (client id `<node>-batches`), so QoS 1 batches never queue behind
the predictions on the node's main connection. Its own thread takes a batch from the buffer,
publishes it, and deletes it from the buffer only when the broker's PUBACK arrives. paho
callbacks only enqueue (`on_publish`, `on_disconnect`): no disk I/O on the network thread.
A batch unacknowledged after a disconnect or `ack_timeout_s` goes back to pending and is sent
again; the trainer drops the duplicates by window id.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from protocol.drift_batch import DriftBatch, encode_batch
from protocol.mqtt import connect, make_client

from .buffer import DurableBuffer

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ShipperConfig:
    batch_size: int = 64
    max_inflight: int = 4
    ack_timeout_s: float = 30.0
    poll_s: float = 0.2

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_inflight < 1 or self.ack_timeout_s <= 0:
            raise ValueError("shipper batch_size, max_inflight ≥ 1 and ack_timeout_s > 0")


class BatchShipper:
    """Buffer → MQTT at-least-once, over its own connection to `broker`."""

    def __init__(
        self,
        buffer: DurableBuffer,
        broker: str,
        topic: str,
        node: str,
        model_version: Callable[[], int | None],
        config: ShipperConfig | None = None,
    ) -> None:
        self.buffer = buffer
        self.broker = broker
        self.client: Any = make_client(f"{node}-batches")
        self.client.on_publish = lambda c, u, mid, *a: self.on_publish(mid)
        self.client.on_disconnect = lambda *a: self.on_disconnect()
        self.topic = topic
        self.node = node
        self.model_version = model_version
        self.config = config or ShipperConfig()
        self._events: queue.SimpleQueue[tuple[str, int]] = queue.SimpleQueue()
        self._inflight: dict[int, tuple[int, float]] = {}  # mid → (token, sent at)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="edge-shipper", daemon=True)
        self.batches_sent = 0
        self.batches_acked = 0
        self.batches_resent = 0

    def start(self) -> BatchShipper:
        """Connect in the background (paho reconnects by itself) and start shipping."""
        connect(self.client, self.broker)
        self.client.loop_start()
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._events.put(("wake", 0))
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.client.disconnect()
        self.client.loop_stop()

    # -- paho callbacks: enqueue only --------------------------------------------------
    def on_publish(self, mid: int) -> None:
        self._events.put(("ack", mid))

    def on_disconnect(self) -> None:
        self._events.put(("disconnected", 0))

    def wake(self) -> None:
        """New rows are in the buffer: ship them now instead of at the next poll."""
        self._events.put(("wake", 0))

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    # -- shipper thread ----------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                kind, mid = self._events.get(timeout=self.config.poll_s)
            except queue.Empty:
                kind, mid = "tick", 0
            try:
                self._handle(kind, mid)
                self._expire()
                self._send()
            except Exception:  # the shipper must outlive a bad moment (disk full, lost socket)
                log.exception("batch shipper hiccup; retrying in %.1f s", self.config.poll_s)
                time.sleep(self.config.poll_s)

    def _handle(self, kind: str, mid: int) -> None:
        if kind == "ack":
            entry = self._inflight.pop(mid, None)
            if entry is not None:
                self.buffer.acknowledge(entry[0])
                self.batches_acked += 1
        elif kind == "disconnected":
            self._release_all()

    def _release_all(self) -> None:
        for token, _ in self._inflight.values():
            self.buffer.release(token)
            self.batches_resent += 1
        self._inflight.clear()

    def _expire(self) -> None:
        now = time.monotonic()
        for mid, (token, sent) in list(self._inflight.items()):
            if now - sent > self.config.ack_timeout_s:
                log.warning(
                    "drift batch (mid %d) unacknowledged after %.0f s; resending",
                    mid,
                    self.config.ack_timeout_s,
                )
                del self._inflight[mid]
                self.buffer.release(token)
                self.batches_resent += 1

    def _send(self) -> None:
        while len(self._inflight) < self.config.max_inflight and self.client.is_connected():
            token, records = self.buffer.take_batch(self.config.batch_size)
            if not records:
                return
            batch = DriftBatch(os.urandom(16), self.node, self.model_version() or 0, tuple(records))
            info = self.client.publish(self.topic, encode_batch(batch), qos=1)
            if info.rc != 0:
                self.buffer.release(token)
                return
            self._inflight[info.mid] = (token, time.monotonic())
            self.batches_sent += 1
