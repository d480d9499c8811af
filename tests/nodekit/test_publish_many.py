"""publish_many: a batch of QoS 0 messages handed to paho as one write, through a real broker."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from nodekit.mqtt import connect, make_client, publish_many, publish_packets
from protocol import Topics
from scripts.broker import Broker


def _connected(client: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not client.is_connected():
        assert time.monotonic() < deadline, "client did not connect to the test broker"
        time.sleep(0.01)


def test_every_message_of_a_batch_arrives_intact_and_in_order(
    broker: Broker, topics: Topics
) -> None:
    got: list[tuple[str, bytes]] = []
    subscribed = threading.Event()
    done = threading.Event()
    # sizes either side of the 1-, 2- and 3-byte remaining-length boundaries
    sizes = [0, 1, 120, 127, 128, 700, 16_383, 16_384, 70_000]
    batch = [
        (topics.prediction(f"m{i:02d}"), bytes([i % 256]) * n) for i, n in enumerate(sizes * 3)
    ]

    sub = make_client(f"pm-sub-{time.monotonic_ns()}")
    sub.on_connect = lambda c, *a: c.subscribe(topics.predictions(), qos=0)
    sub.on_subscribe = lambda *a: subscribed.set()

    def on_message(c: Any, u: Any, msg: Any) -> None:
        got.append((msg.topic, bytes(msg.payload)))
        if len(got) == len(batch):
            done.set()

    sub.on_message = on_message
    connect(sub, broker.address)
    sub.loop_start()
    pub = make_client(f"pm-pub-{time.monotonic_ns()}")
    connect(pub, broker.address)
    pub.loop_start()
    try:
        _connected(pub)
        assert subscribed.wait(10)
        assert publish_many(pub, batch[:10]) is True
        assert publish_many(pub, batch[10:]) is True
        assert publish_many(pub, []) is True
        assert done.wait(10), f"received {len(got)} of {len(batch)}"
        assert got == batch
    finally:
        for c in (pub, sub):
            c.loop_stop()
            c.disconnect()


def test_a_client_without_a_connection_reports_failure() -> None:
    client = make_client(f"pm-offline-{time.monotonic_ns()}")
    assert publish_many(client, [("edgeloop/v1/machines/m1/prediction", b"{}")]) is False


@pytest.mark.parametrize("topic", ["", "a/+/b", "a/#"])
def test_wildcard_or_empty_topics_are_refused(topic: str) -> None:
    with pytest.raises(ValueError, match="cannot publish"):
        publish_packets([(topic, b"x")])


def test_a_hung_broker_makes_it_refuse_instead_of_queueing_without_bound(tmp_path: Any) -> None:
    with Broker(run_dir=tmp_path / "broker") as hung:
        client = make_client(f"pm-hung-{time.monotonic_ns()}")
        connect(client, hung.address)
        client.loop_start()
        try:
            _connected(client)
            batch = [("edgeloop/v1/machines/m1/prediction", b"x" * 16_000)]
            hung.pause()
            accepted = 0
            while publish_many(client, batch, max_pending=64):
                accepted += 1
                assert accepted < 3000, "still queueing 48 MB into a broker that reads nothing"
            assert len(client._out_packet) >= 64  # refused because paho holds 64 unsent writes
            hung.resume()
            deadline = time.monotonic() + 10
            while not publish_many(client, batch, max_pending=64):
                assert time.monotonic() < deadline, "no recovery after the broker woke up"
                time.sleep(0.05)
        finally:
            hung.resume()
            client.loop_stop()
            client.disconnect()
