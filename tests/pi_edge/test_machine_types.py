"""One pi_edge serving two machine types at once, against a real Mosquitto and two real converted
models of different shapes: the session's built-in-type model (60 × 4, 4 classes) and the made-up
type `press` (32 × 3, 3 classes, tests/pi_edge/_type_model.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nodekit.cli import EXIT_FAILED
from nodekit.settings import build
from pi_edge import EdgeConfig, EdgeService, ModelStore
from pi_edge.__main__ import main
from pi_edge.model.machine_types import Lanes
from protocol import (
    CLASSES,
    ConfigError,
    Status,
    Topics,
    Window,
    decode_bundle,
    encode_window,
)
from protocol.machine_state import MachineEvent, MachineState
from protocol.machine_type import DEFAULT_TYPE, MachineType
from protocol.status_detail import DetailReader, TypeModels

from ._model import EdgeModels
from ._type_model import PRESS, TypeModel
from .conftest import Listener, Publisher

pytestmark = pytest.mark.broker

SITE = """
version = 1

[[types]]
builtin = "default"
machines = ["m*"]

[[types]]
name = "press"
sample_hz = 50.0
window_length = 32
classes = ["ok", "jam", "overload"]
normal = "ok"
machines = ["press-*"]
channels = [
  { name = "force", unit = "kN" },
  { name = "stroke", unit = "mm" },
  { name = "current", unit = "A" },
]
"""


@pytest.fixture
def site_file(tmp_path: Path) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(SITE)
    return path


@pytest.fixture
def node(
    broker: Any, topics: Topics, models: EdgeModels, state_dir: Path
) -> Iterator[Callable[..., EdgeService]]:
    made: list[EdgeService] = []

    def _make(**kw: Any) -> EdgeService:
        config = build(
            EdgeConfig,
            broker=broker.address,
            prefix=topics.prefix,
            node=kw.pop("node", f"edge-{time.time_ns()}"),
            public_key=models.public_key_path,
            state_dir=kw.pop("state_dir", state_dir),
            dashboard=False,
            status_interval_s=0.3,
            batch_wait_ms=1.0,
            batch_max=16,
            state_windows=3,
            **kw,
        )
        svc = EdgeService(config, public_key=models.public_key)
        made.append(svc)
        return svc.start()

    yield _make
    for svc in made:
        svc.stop()


def _predictions(listener: Listener, topics: Topics, machine: str) -> list[dict[str, Any]]:
    return [json.loads(p) for p in listener.on(topics.prediction(machine))]


def _status(
    listener: Listener, topics: Topics, node: str, cond: Callable[[Status], bool]
) -> Status:
    found: list[Status] = []

    def pred(msgs: list[tuple[str, bytes, bool]]) -> bool:
        for t, p, _ in reversed(msgs):
            if t == topics.status(node):
                status = Status.from_json(p)
                if cond(status):
                    found.append(status)
                    return True
        return False

    assert listener.wait_for(pred, 15), f"no status of {node} as expected"
    return found[0]


def _types(status: Status) -> TypeModels | None:
    return DetailReader(status.detail, status.role).get(TypeModels)


def _send(pub: Publisher, topics: Topics, machine: str, xs: np.ndarray, start: int = 0) -> None:
    for i, x in enumerate(xs):
        window = Window(machine, start + i, time.time_ns(), np.asarray(x, np.float32))
        pub.publish(topics.window(machine), encode_window(window), qos=1)


def test_one_node_routes_each_machine_to_its_types_model_and_speaks_its_classes(
    node: Callable[..., EdgeService],
    publisher: Publisher,
    listen: Callable[..., Listener],
    topics: Topics,
    models: EdgeModels,
    press_model: TypeModel,
    site_file: Path,
    state_dir: Path,
) -> None:
    lst = listen(f"{topics.prefix}/#")
    publisher.publish(topics.model_current, models.bundle(3, site=topics.prefix), retain=True)
    svc = node(site=site_file, node="pi-types")
    assert [lane.name for lane in svc.lanes.lanes] == ["default", "press"]
    assert svc.wait_for_model(3)
    # press has no model yet: its windows are counted, not classified
    _send(publisher, topics, "press-1", press_model.x_test[:4])
    status = _status(
        lst,
        topics,
        "pi-types",
        lambda s: (t := _types(s)) is not None and t.entries[1].unclassified == 4,
    )
    assert status.detail["v"] == 2 and status.model_version == 3
    types = _types(status)
    assert types is not None and types.version_of("default") == 3
    assert types.version_of("press") is None and types.entries[1].classes == 0
    assert not _predictions(lst, topics, "press-1")

    # the press model comes on its own retained topic; model/current is untouched
    publisher.publish(
        topics.model_of("press"), press_model.bundle(5, site=topics.prefix), retain=True
    )
    _status(
        lst,
        topics,
        "pi-types",
        lambda s: (t := _types(s)) is not None and t.version_of("press") == 5,
    )
    n_press, n_default = len(press_model.x_test), 40
    _send(publisher, topics, "press-1", press_model.x_test, start=100)
    _send(publisher, topics, "m01", models.x_test[:n_default])
    _send(publisher, topics, "x-9", models.x_test[:1])  # no type of this node names it
    # runs of one class, so that each machine's debounced state changes at least once
    ok, jam = (press_model.x_test[press_model.y_test == k][:4] for k in (0, 1))
    _send(publisher, topics, "press-1", np.concatenate([ok, jam]), start=200)
    normal = models.x_test[models.y_test == 0][:4]
    _send(publisher, topics, "m01", normal, start=200)
    assert lst.wait_for(
        lambda _: (
            len(_predictions(lst, topics, "press-1")) == n_press + 8
            and len(_predictions(lst, topics, "m01")) == n_default + 4
        )
    ), "not every window was classified"

    press = _predictions(lst, topics, "press-1")
    assert {p["machine_type"] for p in press} == {"press"}
    assert {tuple(p["classes"]) for p in press} == {("ok", "jam", "overload")}
    assert {p["model_version"] for p in press} == {5}
    assert all(len(p["probabilities"]) == 3 for p in press)
    by_seq = {p["seq"]: p["label"] for p in press if p["seq"] < 200}
    truth = [PRESS.classes[k] for k in press_model.y_test]
    right = sum(by_seq[100 + i] == t for i, t in enumerate(truth))
    assert right / n_press >= 0.9, f"press model right on {right}/{n_press}"

    default = _predictions(lst, topics, "m01")
    assert all("machine_type" not in p for p in default)  # the built-in type: as before
    assert {tuple(p["classes"]) for p in default} == {CLASSES}
    assert {p["model_version"] for p in default} == {3}
    right = sum(p["label"] == CLASSES[models.y_test[p["seq"]]] for p in default if p["seq"] < 200)
    assert right / n_default >= 0.75

    # states of a press machine carry its type and healthy class
    assert lst.wait_for(lambda _: bool(lst.on(topics.machine_state("press-1", "pi-types"))))
    assert lst.wait_for(lambda _: bool(lst.on(topics.machine_state("m01", "pi-types"))))
    states = [
        MachineState.from_json(p) for p in lst.on(topics.machine_state("press-1", "pi-types"))
    ]
    assert states and all(s.machine_type == "press" and s.normal == "ok" for s in states)
    assert {s.cls for s in states} <= set(PRESS.classes)
    events = [MachineEvent.from_json(p) for p in lst.on(topics.machine_event("press-1"))]
    assert all(e.machine_type == "press" for e in events)
    m01_states = [
        MachineState.from_json(p) for p in lst.on(topics.machine_state("m01", "pi-types"))
    ]
    assert m01_states and all(s.machine_type is None for s in m01_states)

    status = _status(
        lst,
        topics,
        "pi-types",
        lambda s: (
            (t := _types(s)) is not None
            and t.entries[1].windows == n_press + 8
            and t.entries[0].windows == n_default + 4
        ),
    )
    assert status.errors.get("no_type") == 1
    types = _types(status)
    assert (
        types is not None and types.entries[1].classes == 3 and types.entries[1].unclassified == 4
    )
    # each type keeps its last good model in its own state dir
    assert (state_dir / "models" / "current.bundle").is_file()
    assert (state_dir / "types" / "press" / "models" / "current.bundle").read_bytes() == (
        press_model.bundle(5, site=topics.prefix)
    )

    # both types have traffic: a light-rate batch gathers twice as long, so each type's share
    # of it is what one type's batch would be (intake/inbox.py, BatchPolicy.spread_over)
    base = svc.config.intake.batch_policy().low_rate_wait_s
    assert svc.policy.low_rate_wait_s in (base, 2 * base)
    deadline, seq = time.monotonic() + 15, 300
    while svc.policy.low_rate_wait_s != pytest.approx(2 * base) and time.monotonic() < deadline:
        _send(publisher, topics, "press-1", press_model.x_test[:1], start=seq)
        _send(publisher, topics, "m01", models.x_test[:1], start=seq)
        seq += 1
        time.sleep(0.5)
    assert svc.policy.low_rate_wait_s == pytest.approx(2 * base)


def test_a_bundle_of_another_type_on_a_types_topic_is_refused_and_counted(
    node: Callable[..., EdgeService],
    publisher: Publisher,
    listen: Callable[..., Listener],
    topics: Topics,
    models: EdgeModels,
    press_model: TypeModel,
    site_file: Path,
) -> None:
    lst = listen(topics.status("pi-mixup"))
    # a press bundle on model/current, a default bundle on press's topic: both refused
    publisher.publish(topics.model_current, press_model.bundle(2, site=topics.prefix), retain=True)
    publisher.publish(topics.model_of("press"), models.bundle(2, site=topics.prefix), retain=True)
    svc = node(site=site_file, node="pi-mixup")
    status = _status(lst, topics, "pi-mixup", lambda s: s.errors.get("bundle_incompatible", 0) >= 2)
    assert svc.model_version is None
    types = _types(status)
    assert types is not None and [e.model_version for e in types.entries] == [None, None]


def test_a_node_learns_a_type_it_has_no_site_file_for_from_its_verified_model(
    node: Callable[..., EdgeService],
    publisher: Publisher,
    listen: Callable[..., Listener],
    topics: Topics,
    models: EdgeModels,
    press_model: TypeModel,
    state_dir: Path,
) -> None:
    lst = listen(f"{topics.prefix}/machines/+/prediction")
    publisher.publish(topics.model_current, models.bundle(1, site=topics.prefix), retain=True)
    publisher.publish(
        topics.model_of("press"), press_model.bundle(1, site=topics.prefix), retain=True
    )
    svc = node(types=("default", "press"))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(
        lane.manager.version is None for lane in svc.lanes.lanes
    ):
        time.sleep(0.05)
    press_lane = svc.lanes.lanes[1]
    assert press_lane.manager.version == 1
    kind = press_lane.machine_type  # from the manifest: vocabulary, units, members
    assert kind is not None and kind.classes == PRESS.classes and kind.unit_of("force") == "kN"
    _send(publisher, topics, "press-7", press_model.x_test[:3])
    _send(publisher, topics, "m02", models.x_test[:3])
    assert lst.wait_for(
        lambda _: (
            len(_predictions(lst, topics, "press-7")) == 3
            and len(_predictions(lst, topics, "m02")) == 3
        )
    )
    assert {p.get("machine_type") for p in _predictions(lst, topics, "press-7")} == {"press"}
    assert {p.get("machine_type") for p in _predictions(lst, topics, "m02")} == {None}

    # a restart serves both types from the state dir before any broker message
    svc.stop()
    publisher.publish(topics.model_current, b"", retain=True)
    publisher.publish(topics.model_of("press"), b"", retain=True)
    again = node(types=("default", "press"))  # start() loads the state dir's models
    assert [lane.manager.version for lane in again.lanes.lanes] == [1, 1]
    assert (state_dir / "types" / "press" / "models" / "current.bundle").is_file()


def test_a_default_only_node_writes_the_status_detail_of_version_1(
    node: Callable[..., EdgeService],
    publisher: Publisher,
    listen: Callable[..., Listener],
    topics: Topics,
    models: EdgeModels,
) -> None:
    lst = listen(topics.status("pi-plain"))
    publisher.publish(topics.model_current, models.bundle(1, site=topics.prefix), retain=True)
    node(node="pi-plain")
    status = _status(lst, topics, "pi-plain", lambda s: s.model_version == 1)
    assert status.detail["v"] == 1 and "types" not in status.detail


def test_the_config_refuses_a_type_the_site_file_does_not_declare(site_file: Path) -> None:
    with pytest.raises(ConfigError, match="does not declare"):
        build(EdgeConfig, site=site_file, types=("default", "fan"))


def test_routing_takes_the_most_specific_pattern_and_none_for_an_unnamed_machine() -> None:
    wide = MachineType("wide", PRESS.channels, window_length=32, machines=("press*",))
    lanes = Lanes(
        [_Kind("default", DEFAULT_TYPE), _Kind("press", PRESS), _Kind("wide", wide)],
        route_all=False,
    )
    assert [getattr(lanes.route(m), "name", None) for m in ("press-1", "pressX", "m01")] == [
        "press",
        "wide",
        "default",
    ]
    only = Lanes([_Kind("press", PRESS)], route_all=False)
    assert only.route("m01") is None and only.route("press-2") is not None


class _Kind:
    def __init__(self, name: str, machine_type: MachineType | None) -> None:
        self.name = name
        self.machine_type = machine_type


def test_rollback_of_another_type_touches_only_its_state_dir(
    tmp_path: Path, models: EdgeModels, press_model: TypeModel
) -> None:
    default = ModelStore(tmp_path)
    press = ModelStore(tmp_path / "types" / "press")
    default.save(decode_bundle(models.bundle(1), models.public_key))
    for v in (1, 2):
        press.save(decode_bundle(press_model.bundle(v), models.public_key))
    assert main(["rollback", "--type", "press", "--state-dir", str(tmp_path)]) == 0
    assert press.current_path.read_bytes() == press_model.bundle(1)
    assert press.blocked() == [2]
    assert default.current_path.read_bytes() == models.bundle(1) and default.blocked() == []
    assert main(["rollback", "--state-dir", str(tmp_path)]) == EXIT_FAILED  # default: no previous
