"""The closed loop of every machine type a node serves, against a real Mosquitto and two real
models (the built-in type's and the made-up `press`, tests/pi_edge/_type_model.py): label events
in each type's class names, kept windows shipped as drift batches of their type, label requests
and the status's per-type loop."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from nodekit.guard import Faults
from nodekit.storage import WriteFailures
from pi_edge import EdgeService
from pi_edge.loop.kept_windows import KeptConfig, KeptWindows
from pi_edge.report.prometheus import edge_families
from protocol import CLASSES, Status, Topics, Window, decode_batch, encode_window
from protocol.batch_ack import BatchAck
from protocol.drift_batch import Kept
from protocol.label_request import LabelRequests
from protocol.labels import LabelEvent
from protocol.status_detail import DetailReader, TypeLoops
from scripts.broker import Broker

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
    lst = listen(topics.drift_batches("pi-loops"), topics.statuses())
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
            if t != topics.drift_batches("pi-loops"):
                continue
            batch = decode_batch(p)
            kinds[batch.machine_type] = kinds.get(batch.machine_type, 0) + len(batch.records)
            if batch.batch_id not in acked:
                acked.add(batch.batch_id)
                ack = BatchAck(batch.batch_id, stored=len(batch.records))
                publisher.publish(topics.drift_acks(batch.node), ack.to_json())
        return kinds.get("press", 0) >= 6 and kinds.get("default", 0) >= 5

    assert lst.wait_for(both_came, 20), "no drift batches of both types"
    raw = lst.on(topics.drift_batches("pi-loops"))
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
    families = edge_families(svc.status(), svc.snapshot(), svc.inbox.arrived)
    events = {
        sample.labels["type"]: sample.value
        for fam in families
        if fam.name == "edgeloop_type_label_events"
        for sample in fam.samples
    }
    assert events == {"default": 1.0, "press": 1.0}


def test_a_type_asks_for_labels_with_its_class_names(
    node: Callable[..., EdgeService],  # noqa: F811
    publisher: Publisher,
    listen: Callable[..., Listener],
    topics: Topics,
    models: EdgeModels,
    press_model: TypeModel,
    site_file: Path,  # noqa: F811
) -> None:
    lst = listen(topics.label_requests("pi-asks"))
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
        r
        for p in lst.on(topics.label_requests("pi-asks"))
        for r in LabelRequests.from_json(p).requests
    ]
    press = [r for r in requests if r.machine == "press-2"]
    assert press and {r.predicted for r in press} <= set(PRESS.classes)
    assert svc.lane_loops["press"].asker.windows == len(press)


def test_a_type_whose_trainer_is_away_holds_up_no_other(
    broker: Broker,
    topics: Topics,
    publisher: Publisher,
    listen: Callable[..., Listener],
    tmp_path: Path,
) -> None:
    lst = listen(topics.drift_batches("pi-away"))
    log = logging.getLogger("test")
    config = KeptConfig(tmp_path, broker.address, "pi-away", topics, types=("press",))
    kept = KeptWindows(config, lambda: 3, WriteFailures(log, tmp_path), Faults(log), lambda k: 5)
    assert (tmp_path / "types" / "press" / "buffer.sqlite").is_file()

    def record(machine: str, i: int, shape: tuple[int, int]) -> Kept:
        return Kept(Window(machine, i, i + 1, np.zeros(shape, np.float32), label=1), "labeled", 0)

    # more press windows than max_inflight (4) batches of 64 hold: press's trainer never acks
    kept.keep_records([record("press-1", i, (32, 3)) for i in range(400)], "press")
    kept.keep_records([record("m01", i, (60, 4)) for i in range(20)])
    kept.start()
    try:

        def default_stored(msgs: list[tuple[str, bytes, bool]]) -> bool:
            for _, p, _ in msgs:  # the built-in type's trainer acknowledges its batches
                batch = decode_batch(p)
                if batch.machine_type == "default":
                    ack = BatchAck(batch.batch_id, stored=len(batch.records))
                    publisher.publish(topics.drift_acks(batch.node), ack.to_json())
            return kept.buffer.counts().acknowledged == 20

        assert lst.wait_for(default_stored, 20), "the built-in type's windows were held up"
        batches = [decode_batch(p) for p in lst.on(topics.drift_batches("pi-away"))]
        press = [b for b in batches if b.machine_type == "press"]
        assert len({b.batch_id for b in press}) == 4  # max_inflight of press, waiting
        assert {b.model_version for b in press} == {5}
        assert all(len(b.records) == 64 for b in press)
        assert {k.window.machine for b in press for k in b.records} == {"press-1"}
        assert {b.model_version for b in batches if b.machine_type == "default"} == {3}
        assert kept.waiting_by_type() == {"default": 0, "press": 400}
    finally:
        kept.stop()
