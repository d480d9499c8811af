"""pi_edge fixtures: MQTT helpers (the session's tiny trained model, `models`, is in
tests/conftest.py: the integration tests use it too)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from nodekit.mqtt import Credentials, connect, make_client
from protocol import Topics

from ._model import EdgeModels


class Listener:
    """A subscriber that records every message per topic (thread-safe)."""

    def __init__(
        self,
        address: str,
        filters: list[str],
        name: str,
        credentials: Credentials | None = None,
    ) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._cond = threading.Condition()
        self.client = make_client(name)
        self._filters = filters
        self._subscribed = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        connect(self.client, address, credentials=credentials)
        self.client.loop_start()
        assert self._subscribed.wait(10), "listener did not subscribe"

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        client.subscribe([(f, 1) for f in self._filters])

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._cond:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
            self._cond.notify_all()

    def wait_for(
        self, pred: Callable[[list[tuple[str, bytes, bool]]], bool], timeout: float = 15.0
    ) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not pred(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def on(self, topic: str) -> list[bytes]:
        with self._cond:
            return [p for t, p, _ in self.messages if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def listen(broker: Any) -> Iterator[Callable[..., Listener]]:
    made: list[Listener] = []

    def _make(*filters: str) -> Listener:
        lst = Listener(broker.address, list(filters), f"listener-{len(made)}-{time.time_ns()}")
        made.append(lst)
        return lst

    yield _make
    for lst in made:
        lst.close()


class Publisher:
    def __init__(self, address: str, name: str, credentials: Credentials | None = None) -> None:
        self.client = make_client(name)
        self._connected = threading.Event()
        self.client.on_connect = lambda *a: self._connected.set()
        connect(self.client, address, credentials=credentials)
        self.client.loop_start()
        assert self._connected.wait(10), "publisher did not connect"

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if qos:
            info.wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher(broker: Any) -> Iterator[Publisher]:
    pub = Publisher(broker.address, f"pub-{time.time_ns()}")
    yield pub
    pub.close()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


def clear_retained(pub: Publisher, topics: Topics) -> None:
    pub.publish(topics.model_current, b"", retain=True)


__all__ = ["EdgeModels", "Listener", "Publisher", "clear_retained", "mqtt"]
