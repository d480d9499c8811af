"""Broker-side helpers: a window collector and a simulator running on a background thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from nodekit.mqtt import connect, make_client
from protocol import PayloadError, Topics, Window, decode_window
from sensor_sim import FleetConfig, RunReport, SimConfig, Simulator


@dataclass
class Collector:
    """Windows (decoded) and raw retained status payloads seen by a plain paho subscriber."""

    windows: list[Window] = field(default_factory=list)
    undecodable: list[bytes] = field(default_factory=list)
    statuses: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> list[Window]:
        with self.lock:
            return list(self.windows)


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


@contextmanager
def subscribed(broker: Any, topics: Topics) -> Iterator[tuple[Collector, Any]]:
    """A paho client subscribed to all windows and statuses under `topics` (acked)."""
    got = Collector()
    ready = threading.Event()

    def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any = None) -> None:
        client.subscribe([(topics.windows(), 0), (topics.statuses(), 1)])

    def on_subscribe(client: Any, userdata: Any, mid: Any, reasons: Any, props: Any) -> None:
        ready.set()

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        with got.lock:
            if msg.topic.endswith("/status"):
                got.statuses.append(msg.payload)
                return
            try:
                got.windows.append(decode_window(msg.payload))
            except PayloadError:  # tests assert this list stays empty
                got.undecodable.append(msg.payload)

    client = make_client(f"test-sub-{time.monotonic_ns()}")
    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    connect(client, broker.address)
    client.loop_start()
    try:
        assert ready.wait(5), "test subscriber could not subscribe"
        yield got, client
    finally:
        client.disconnect()
        client.loop_stop()


@dataclass
class Running:
    sim: Simulator
    stop: threading.Event
    thread: threading.Thread
    reports: list[RunReport]


@contextmanager
def running_sim(broker: Any, topics: Topics, **fleet: Any) -> Iterator[Running]:
    """A Simulator on its own thread, faults off and no labels unless asked, until exit."""
    sim_keys = ("hz", "duration_s", "max_rate", "seed", "answer_label_requests")
    sim_kwargs = {k: fleet.pop(k) for k in (*sim_keys, "label_answer_delay_s") if k in fleet}
    fleet.setdefault("mtbf_s", 0.0)
    fleet.setdefault("label_fraction", 0.0)
    cfg = SimConfig(
        broker=broker.address,
        prefix=topics.prefix,
        fleet=FleetConfig(**fleet),
        status_interval_s=0.5,
        **{"seed": 1, **sim_kwargs},
    )
    sim = Simulator(cfg).start()
    stop = threading.Event()
    reports: list[RunReport] = []
    thread = threading.Thread(target=lambda: reports.append(sim.run(stop)), daemon=True)
    thread.start()
    try:
        yield Running(sim, stop, thread, reports)
    finally:
        stop.set()
        thread.join(10)
        sim.close()


@pytest.fixture
def sub(broker: Any, topics: Topics) -> Iterator[tuple[Collector, Any]]:
    with subscribed(broker, topics) as pair:
        yield pair
