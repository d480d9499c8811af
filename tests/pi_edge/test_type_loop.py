"""The closed loop of every machine type a node serves, against a real Mosquitto and two real
models (the built-in type's and the made-up `press`, tests/pi_edge/_type_model.py): label events
in each type's class names, kept windows shipped as drift batches of their type, label requests
and the status's per-type loop."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pi_edge import EdgeService
from pi_edge.loop.buffer import DurableBuffer
from protocol import CLASSES, Status, Topics, Window, decode_batch, encode_window, window_id
from protocol.batch_ack import BatchAck
from protocol.drift_batch import Kept
from protocol.label_request import LabelRequests
from protocol.labels import LabelEvent
from protocol.status_detail import DetailReader, TypeLoops

from ._model import EdgeModels
from ._type_model import PRESS, TypeModel
from .conftest import Listener, Publisher
from .test_machine_types import node, site_file  # noqa: F401

pytestmark = pytest.mark.broker


def _send(pub: Publisher, topics: Topics, machine: str, xs: np.ndarray, start: int) -> list[int]:
    stamps = []
    for i, x in enumerate(xs):
        ts = time.time_ns()
        stamps.append(ts)
        window = Window(machine, start + i, ts, np.asarray(x, np.float32))
        pub.publish(topics.window(machine), encode_window(window), qos=1)
    return stamps


def _loops(status: Status) -> TypeLoops | None:
    return DetailReader(status.detail, status.role).get(TypeLoops)


def test_each_type_labels_keeps_and_ships_its_windows_in_its_own_classes(
    node: Callable[..., EdgeService],  # noqa: F811
    publisher: Publisher,
    listen: Callable[..., Listener],
    topics: Topics,
    models: EdgeModels,
    press_model: TypeModel,
    site_file: Path,  # noqa: F811
    state_dir: Path,
) -> None:
    lst = listen(topics.drift_batches, topics.statuses(), topics.label_requests)
    publisher.publish(topics.model_current, models.bundle(3, site=topics.prefix), retain=True)
    publisher.publish(
        topics.model_of("press"), press_model.bundle(5, site=topics.prefix), retain=True
    )
    svc = node(site=site_file, node="pi-loops", keep_flagged_per_s=0.0)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and [v.manager.version for v in svc.lanes.lanes] != [3, 5]:
        time.sleep(0.05)
    assert [lane.manager.version for lane in svc.lanes.lanes] == [3, 5]

    # a class press has not is refused, naming press's classes; the built-in type's still works
    t0 = time.time() - 1.0
    bad = LabelEvent("press-1", "bearing_fault", t0)
    publisher.publish(topics.labels, bad.to_json())
    publisher.publish(topics.labels, LabelEvent("press-1", "jam", t0, source="tech").to_json())
    publisher.publish(topics.labels, LabelEvent("m01", "pump_fault", t0).to_json())
    publisher.publish(topics.labels, LabelEvent("x-9", "jam", t0).to_json())  # of no type
    press_loop, default_loop = svc.lane_loops["press"], svc.lane_loops["default"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (
        press_loop.labeler is not None
        and press_loop.labeler.book.open_labels() == {"press-1": "jam"}
        and default_loop.labeler is not None
        and default_loop.labeler.book.open_labels() == {"m01": "pump_fault"}
    ):
        time.sleep(0.05)
    assert press_loop.stats()["refused"] == 1  # bearing_fault
    assert default_loop.stats()["refused"] == 1  # x-9: no type this node serves

    # windows in the open intervals come labeled: kept, and shipped as their type's batches
    jam = press_model.x_test[press_model.y_test == 1][:6]
    _send(publisher, topics, "press-1", jam, start=10)
    pump = models.x_test[models.y_test == 3][:5]
    _send(publisher, topics, "m01", pump, start=10)

    acked: set[bytes] = set()

    def both_came(msgs: list[tuple[str, bytes, bool]]) -> bool:
        kinds: dict[str, int] = {}
        for t, p, _ in msgs:
            if t != topics.drift_batches:
                continue
            batch = decode_batch(p)
            kinds[batch.machine_type] = kinds.get(batch.machine_type, 0) + len(batch.records)
            if batch.batch_id not in acked:
                acked.add(batch.batch_id)
                ack = BatchAck(batch.batch_id, stored=len(batch.records))
                publisher.publish(topics.drift_acks(batch.node), ack.to_json())
        return kinds.get("press", 0) >= 6 and kinds.get("default", 0) >= 5

    assert lst.wait_for(both_came, 20), "no drift batches of both types"
    raw = lst.on(topics.drift_batches)
    press_batches = [decode_batch(p) for p in raw if decode_batch(p).machine_type == "press"]
    default_batches = [decode_batch(p) for p in raw if decode_batch(p).machine_type == "default"]
    assert {p[2] for p in raw} == {1, 2}  # v1 for the built-in type, v2 naming press
    assert all(p[2] == 2 for p in raw if decode_batch(p).machine_type == "press")
    press_records = [k for b in press_batches for k in b.records]
    assert {b.model_version for b in press_batches} == {5}
    assert {b.model_version for b in default_batches} == {3}
    assert {k.window.machine for k in press_records} == {"press-1"}
    assert {k.window.label for k in press_records} == {PRESS.classes.index("jam")}
    assert {k.reason for k in press_records} == {"labeled"}
    assert all(k.window.data.shape == (32, 3) for k in press_records)
    predicted = [k.predicted for k in press_records]
    assert all(p is not None and 0 <= p < len(PRESS.classes) for p in predicted)
    default_records = [k for b in default_batches for k in b.records]
    assert {k.window.label for k in default_records} == {CLASSES.index("pump_fault")}

    # the status: each type's loop
    def loops_ok(msgs: list[tuple[str, bytes, bool]]) -> bool:
        for t, p, _ in reversed(msgs):
            if t == topics.status("pi-loops"):
                loops = _loops(Status.from_json(p))
                if loops is None:
                    return False
                by = {e.type: e for e in loops.entries}
                return (
                    by["press"].label_events == 1
                    and by["press"].labels_refused == 1
                    and by["press"].windows_labeled >= 6
                    and by["press"].accuracy_est is not None
                    and by["default"].label_events == 1
                    and by["press"].waiting == 0
                )
        return False

    assert lst.wait_for(loops_ok, 15), "the status's type_loops did not show both loops"


def test_a_type_asks_for_labels_with_its_class_names(
    node: Callable[..., EdgeService],  # noqa: F811
    publisher: Publisher,
    listen: Callable[..., Listener],
    topics: Topics,
    models: EdgeModels,
    press_model: TypeModel,
    site_file: Path,  # noqa: F811
) -> None:
    lst = listen(topics.label_requests)
    publisher.publish(topics.model_current, models.bundle(3, site=topics.prefix), retain=True)
    publisher.publish(
        topics.model_of("press"), press_model.bundle(5, site=topics.prefix), retain=True
    )
    # asked while the estimate is below 1.01: always (the press model is sure of its windows)
    svc = node(site=site_file, node="pi-asks", label_requests_below=1.0)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and svc.lanes.lanes[1].manager.version != 5:
        time.sleep(0.05)
    noisy = press_model.x_test[:12] * np.float32(0.6)  # shrunk: less sure windows
    _send(publisher, topics, "press-2", noisy, start=1)

    def asked(msgs: list[tuple[str, bytes, bool]]) -> bool:
        return any(
            r.machine == "press-2" for _, p, _ in msgs for r in LabelRequests.from_json(p).requests
        )

    assert lst.wait_for(asked, 20), "press never asked for labels"
    requests = [
        r for p in lst.on(topics.label_requests) for r in LabelRequests.from_json(p).requests
    ]
    press = [r for r in requests if r.machine == "press-2"]
    assert press and {r.predicted for r in press} <= set(PRESS.classes)
    assert svc.lane_loops["press"].asker.windows == len(press)


def test_the_buffer_ships_one_type_per_batch_and_a_stalled_type_holds_up_no_other(
    tmp_path: Path,
) -> None:
    buf = DurableBuffer(tmp_path / "b.sqlite")

    def kept(machine: str, i: int, shape: tuple[int, int]) -> Kept:
        window = Window(machine, i, i + 1, np.zeros(shape, np.float32), label=1)
        return Kept(window, "labeled", 0, 0.0)

    buf.add([kept("press-1", i, (32, 3)) for i in range(3)], machine_type="press")
    buf.add([kept("m01", i, (60, 4)) for i in range(2)])
    assert buf.pending_by_type() == {"press": 3, "default": 2}
    token, kind, records = buf.take_typed_batch(10)
    assert kind == "press" and len(records) == 3 and token > 0  # the oldest rows' type
    assert buf.take_typed_batch(10, skip=frozenset({"default"}))[2] == []
    _, kind2, records2 = buf.take_typed_batch(10)
    assert kind2 == "default" and [window_id(k.window) for k in records2] == ["m01:0:1", "m01:1:2"]
    buf.acknowledge(token)
    assert buf.pending_by_type() == {"default": 2}
    buf.close()


def test_a_buffer_of_before_machine_types_opens_with_its_rows_as_the_builtin_types(
    tmp_path: Path,
) -> None:
    path = tmp_path / "b.sqlite"
    buf = DurableBuffer(path)
    window = Window("m01", 1, 2, np.zeros((60, 4), np.float32), label=2)
    buf.add([Kept(window, "labeled", 2, 0.0)])
    buf.close()
    db = sqlite3.connect(path)  # as layout 1 left it: no kept_type
    db.executescript("DROP TRIGGER kept_type_gone; DROP TABLE kept_type; PRAGMA user_version=1;")
    db.close()
    again = DurableBuffer(path)
    assert again.moved_aside == []
    _, kind, records = again.take_typed_batch(10)
    assert kind == "default" and [k.window for k in records] == [window]
    again.close()
