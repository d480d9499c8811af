"""`--answer-label-requests`: the simulator answers a node's label request for a window it
published with a label event carrying that window's true class and exactly the request's span;
a request for a window it never published is counted, not answered."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from nodekit.mqtt import connect, make_client
from protocol import Command, Topics, Window
from protocol.label_request import LabelRequest, LabelRequests
from protocol.labels import LabelEvent

from .conftest import running_sim, subscribed, wait_for

pytestmark = pytest.mark.broker


def test_the_simulator_answers_label_requests_with_the_true_class(
    broker: Any, topics: Topics
) -> None:
    labels: list[LabelEvent] = []
    ready = threading.Event()
    client = make_client(f"asker-{time.time_ns()}")
    client.on_connect = lambda c, *a: c.subscribe(topics.labels, qos=1)
    client.on_subscribe = lambda *a: ready.set()
    client.on_message = lambda c, u, msg: labels.append(LabelEvent.from_json(msg.payload))
    connect(client, broker.address)
    client.loop_start()
    assert ready.wait(10)
    try:
        with subscribed(broker, topics) as (got, _), running_sim(
            broker, topics, machines=3, hz=10.0, answer_label_requests=True,
            label_answer_delay_s=0.5,
        ) as run:  # fmt: skip
            run.sim.send_command(Command("fault", machines=("m02",), state="pump_fault"))
            assert wait_for(lambda: run.sim.snapshot().machines[1].state == "pump_fault")
            time.sleep(0.5)
            seen = [w for w in got.snapshot() if w.machine == "m02"]
            assert seen, "no window of m02 came"
            w: Window = seen[-1]
            ts = w.timestamp_ns / 1e9
            asked = LabelRequests(
                "pi-1",
                time.time(),
                (
                    LabelRequest("m02", ts, ts + 1e-6, "normal", 0.4, w.seq),
                    LabelRequest("m03", ts, ts + 1e-6, "normal", 0.4, 10**9),  # never published
                ),
            )
            # pi-9 asking in pi-1's name on its own topic: refused (a node asks as itself)
            forged = client.publish(topics.label_requests("pi-9"), asked.to_json(), qos=1)
            forged.wait_for_publish(5)
            sent_at = time.monotonic()
            mine = client.publish(topics.label_requests("pi-1"), asked.to_json(), qos=1)
            mine.wait_for_publish(5)
            assert wait_for(lambda: len(labels) >= 1, timeout=10)
            waited = time.monotonic() - sent_at
            assert wait_for(lambda: run.sim.status().detail["label_answers"]["unknown"] == 1)
            counts = run.sim.status().detail["label_answers"]
    finally:
        client.disconnect()
        client.loop_stop()
    assert [(e.machine, e.cls, e.start, e.end) for e in labels] == [
        ("m02", "pump_fault", ts, ts + 1e-6)
    ]
    assert waited >= 0.45  # the technician's delay
    assert counts == {
        "requests": 1, "asked": 2, "answered": 1, "unknown": 1, "refused": 1, "dropped": 0
    }  # fmt: skip
