"""The console on a real broker, driven headless by Textual's pilot.

Fake statuses, states and predictions go out with paho like any node's; the console's tables
must show them, and each confirmed key must put the right message on the wire (a separate
subscriber receives it). The rollback test runs a real pi_edge node serving v2 and checks that
it serves v1 after `b` + yes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable

from console.app import REFRESH_S, ConfirmScreen, ConsoleApp, LabelScreen
from console.mqtt import ConsoleLink
from nodekit.settings import build
from pi_edge import EdgeConfig, EdgeService
from protocol import CLASSES, Command, Prediction, Status, Topics
from protocol.labels import LabelEvent
from protocol.machine_state import MachineState
from protocol.node_command import NodeCommand
from protocol.status_detail import DriftDetail, MachineDrift

from .conftest import EdgeModels, Listener, Publisher

pytestmark = pytest.mark.broker

SIZE = (200, 50)


def _link(broker: Any, topics: Topics) -> ConsoleLink:
    link = ConsoleLink(broker.address, topics, client_id=f"console-test-{time.time_ns()}")
    link.start()
    assert link.subscribed.wait(10), "the console did not subscribe"
    return link


async def _until(pilot: Pilot[Any], cond: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out waiting on the console"
        await pilot.pause(0.1)


def _keys(app: ConsoleApp, table: str) -> list[str]:
    t = app.query_one(f"#{table}", DataTable)
    return [str(k.value) for k in t.rows]


def _cell(app: ConsoleApp, table: str, row: str, column: str) -> str:
    return str(app.query_one(f"#{table}", DataTable).get_cell(row, column))


def _site(pub: Publisher, topics: Topics) -> None:
    """Three nodes and three machines, as a running site would have them on the broker."""
    edge = Status(
        "pi-a",
        "edge",
        "online",
        "0.1.0",
        4,
        time.time(),
        {
            "windows_per_s": 30.0,
            "queue_depth": 1,
            "queue_capacity": 64,
            "drops": 5.0,
            "cpu_percent": 12.5,
            "rss_mb": 70.0,
            "latency_p99_ms": 6.0,
        },
        detail={
            "v": 1,
            "machines": ["m01", "m02", "m03"],
            "drift": DriftDetail(
                "drift", 0.0, "ok", 0, 0, {"m02": MachineDrift("drift", 1.2, 0.3)}, 3
            ).to_json_obj(),
        },
    )
    trainer = Status(
        "trainer-x",
        "trainer",
        "online",
        "0.1.0",
        4,
        time.time(),
        {"batches": 3.0},
        detail={"phase": "idle"},
    )
    sim = Status(
        "sim-1", "simulator", "online", "0.1.0", None, time.time(), {"windows_per_s": 30.0}
    )
    for s in (edge, trainer, sim):
        pub.publish(topics.status(s.node), s.to_json(), retain=True)
    state = MachineState(
        "m02", "pi-a", "fault", "drive_wear", 0.88, time.time() - 3, "drift", 4, time.time()
    )
    pub.publish(topics.machine_state("m02", "pi-a"), state.to_json(), retain=True)
    for m in ("m01", "m02", "m03"):
        p = Prediction(m, 7, "normal", 0.97, (0.97, 0.01, 0.01, 0.01), 4, latency_ms={"total": 2.5})
        pub.publish(topics.prediction(m), p.to_json(), qos=1)


def test_tables_show_the_site_and_confirmed_keys_publish_drift_and_labels(
    broker: Any, topics: Topics, publisher: Publisher, listen: Callable[..., Listener]
) -> None:
    wire = listen(topics.sim_control, topics.labels)
    link = _link(broker, topics)
    _site(publisher, topics)

    async def drive() -> None:
        app = ConsoleApp(link, topics)
        async with app.run_test(size=SIZE) as pilot:
            await _until(pilot, lambda: len(_keys(app, "machines")) == 3)
            await _until(pilot, lambda: len(_keys(app, "nodes")) == 3)
            assert _keys(app, "machines") == ["m01", "m02", "m03"]
            assert _cell(app, "machines", "m02", "class") == "drive_wear"
            assert _cell(app, "machines", "m02", "node") == "pi-a"
            assert _cell(app, "machines", "m01", "latency ms") == "2.5"
            assert _cell(app, "nodes", "pi-a", "CPU %") == "12"  # 12.5 rounds to even
            assert _cell(app, "nodes", "pi-a", "RSS MB") == "70"
            assert _cell(app, "nodes", "pi-a", "inbox") == "1/64"
            assert _cell(app, "nodes", "pi-a", "drops") == "5"
            assert _cell(app, "nodes", "trainer-x", "drift / phase") == "idle"
            assert _cell(app, "nodes", "pi-a", "model") == "v4"

            await pilot.press("down")  # m02
            assert app.selected("machines") == "m02"
            await pilot.press("d")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("y")
            await pilot.press("c", "y")
            await pilot.press("l")
            assert isinstance(app.screen, LabelScreen)
            await pilot.press("down", "enter")  # the default is m02's class, drive_wear
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("y")
            bar = app.query_one("#bar")  # the label's publish is confirmed asynchronously
            await _until(pilot, lambda: "sent: label m02" in str(bar.render()))
            await pilot.press("d", "n")  # cancelled: nothing goes out
            await pilot.pause(REFRESH_S)
            assert "cancelled: drift step on m02" in str(app.query_one("#bar").render())

    asyncio.run(drive())
    link.stop()
    assert wire.wait_for(lambda msgs: len(msgs) >= 3)
    time.sleep(0.5)  # the cancelled one would arrive by now
    got = [(t, p) for t, p, _ in wire.messages]
    assert [t for t, _ in got] == [topics.sim_control, topics.sim_control, topics.labels]
    step, off = Command.from_json(got[0][1]), Command.from_json(got[1][1])
    assert (step.cmd, step.mode, step.machines) == ("drift", "step", ("m02",))
    assert (off.cmd, off.mode, off.machines) == ("drift", "off", ("m02",))
    label = LabelEvent.from_json(got[2][1])
    assert (label.machine, label.cls, label.end) == ("m02", CLASSES[3], None)
    assert abs(label.start - time.time()) < 30


def test_the_label_dialog_speaks_the_machines_type_and_takes_a_typed_new_class(
    broker: Any, topics: Topics, publisher: Publisher, listen: Callable[..., Listener]
) -> None:
    """A fan (another machine type, served by an anomaly model that learned one fault) is
    labeled in its own classes, never `anomaly`; a class no model knows yet is typed in, and a
    name the protocol refuses is explained and never sent."""
    wire = listen(topics.labels)
    link = _link(broker, topics)
    now = time.time()
    state = MachineState(
        "fan-1", "pi-a", "normal", "ok", 0.9, now - 3, "ok", 2, now, machine_type="fan", normal="ok"
    )
    publisher.publish(topics.machine_state("fan-1", "pi-a"), state.to_json(), retain=True)
    classes = ("ok", "imbalance", "anomaly")
    p = Prediction("fan-1", 1, "ok", 0.9, (0.9, 0.05, 0.05), 2, classes=classes, machine_type="fan")
    publisher.publish(topics.prediction("fan-1"), p.to_json(), qos=1)

    async def drive() -> None:
        app = ConsoleApp(link, topics)
        async with app.run_test(size=SIZE) as pilot:
            await _until(pilot, lambda: app.site.label_choices("fan-1") == ("ok", "imbalance"))
            await _until(pilot, lambda: _keys(app, "machines") == ["fan-1"])
            await pilot.press("l")
            assert isinstance(app.screen, LabelScreen)
            assert app.screen.choices == ("ok", "imbalance")
            await pilot.press("down", "enter")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("y")
            bar = app.query_one("#bar")
            await _until(pilot, lambda: "sent: label fan-1 = imbalance" in str(bar.render()))

            await pilot.press("l")
            screen = app.screen
            assert isinstance(screen, LabelScreen)
            await pilot.click("#other")
            await pilot.press(*"a/b", "enter")
            assert app.screen is screen, "a refused name closed the dialog"
            assert "'/'" in str(screen.query_one("#problem").render())
            for _ in range(3):
                await pilot.press("backspace")
            await pilot.press(*"looseness", "enter")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("y")
            await _until(pilot, lambda: "sent: label fan-1 = looseness" in str(bar.render()))

    asyncio.run(drive())
    link.stop()
    assert wire.wait_for(lambda msgs: len(msgs) >= 2)
    time.sleep(0.3)
    labels = [LabelEvent.from_json(p) for _, p, _ in wire.messages]
    assert [(e.machine, e.cls) for e in labels] == [("fan-1", "imbalance"), ("fan-1", "looseness")]


def test_the_screen_shows_100_machines_changing_every_refresh(
    broker: Any, topics: Topics, publisher: Publisher
) -> None:
    """Every machine's row follows its newest prediction (the refresh's cost is measured in
    bench/console_refresh.py, `make bench`)."""
    link = _link(broker, topics)

    async def drive() -> None:
        app = ConsoleApp(link, topics)
        async with app.run_test(size=SIZE) as pilot:
            for round_ in range(6):
                for i in range(100):
                    label = CLASSES[(i + round_) % 4]
                    probs = tuple(0.97 if c == label else 0.01 for c in CLASSES)
                    p = Prediction(
                        f"m{i:03d}",
                        round_,
                        label,
                        0.97,
                        probs,
                        1,
                        latency_ms={"total": 1.0 + round_},
                    )
                    publisher.publish(topics.prediction(f"m{i:03d}"), p.to_json(), qos=1)
                await pilot.pause(0.3)
                app.refresh_site()
            await _until(pilot, lambda: _cell(app, "machines", "m099", "latency ms") == "6.0")
            assert len(_keys(app, "machines")) == 100

    asyncio.run(drive())
    link.stop()


def test_b_rolls_a_real_pi_edge_node_back_from_v2_to_v1(
    broker: Any,
    topics: Topics,
    models: EdgeModels,
    publisher: Publisher,
    listen: Callable[..., Listener],
    tmp_path: Path,
) -> None:
    wire = listen(topics.node_command("pi-roll"))
    config = build(
        EdgeConfig,
        broker=broker.address,
        prefix=topics.prefix,
        node="pi-roll",
        public_key=models.public_key_path,
        state_dir=tmp_path / "edge",
        dashboard=False,
        status_interval_s=0.3,
        model=models.bundle_path,
    )
    svc = EdgeService(config, public_key=models.public_key).start()
    link = _link(broker, topics)
    try:
        assert svc.wait_for_model(1, 20)
        publisher.publish(topics.model_current, models.bundle(2, site=topics.prefix), retain=True)
        assert svc.wait_for_model(2, 20), "the node did not take v2"

        async def drive() -> None:
            app = ConsoleApp(link, topics)
            async with app.run_test(size=SIZE) as pilot:
                await _until(pilot, lambda: _cell_or(app, "nodes", "pi-roll", "model") == "v2")
                await pilot.press("tab")  # to the nodes table
                assert app.selected("nodes") == "pi-roll"
                await pilot.press("b")
                assert isinstance(app.screen, ConfirmScreen)
                await pilot.press("y")
                await _until(pilot, lambda: _cell_or(app, "nodes", "pi-roll", "model") == "v1")
                await _until(pilot, lambda: any(e.kind == "rollback" for e in app.site.timeline))
                assert [e.text for e in app.site.timeline if e.kind == "rollback"] == [
                    "pi-roll rolled back model v2 → v1"
                ]

        asyncio.run(drive())
        assert svc.model_version == 1
        sent = NodeCommand.from_json(wire.on(topics.node_command("pi-roll"))[0])
        assert (sent.cmd, sent.from_version) == ("rollback", 2) and sent.id is not None
        time.sleep(1.0)  # the retained v2 is blocked now: the node stays on v1
        assert svc.model_version == 1
    finally:
        link.stop()
        svc.stop()
        publisher.publish(topics.model_current, b"", retain=True)


def _cell_or(app: ConsoleApp, table: str, row: str, column: str) -> str | None:
    return _cell(app, table, row, column) if row in _keys(app, table) else None


def test_a_bad_payload_is_counted_and_the_rest_still_shows(
    broker: Any, topics: Topics, publisher: Publisher
) -> None:
    publisher.publish(topics.status("pi-bad"), b'{"v":1,"node":"pi-bad"}', retain=True)
    good = Status("pi-good", "edge", "online", "0.1.0", 1, time.time())
    publisher.publish(topics.status("pi-good"), good.to_json(), retain=True)
    link = _link(broker, topics)
    publisher.publish(topics.prediction("m1"), b"\xff\xfe", qos=1)

    async def drive() -> None:
        app = ConsoleApp(link, topics)
        async with app.run_test(size=SIZE) as pilot:
            await _until(pilot, lambda: _keys(app, "nodes") == ["pi-good"])
            await _until(pilot, lambda: sum(link.bad_counts().values()) == 2)
            await pilot.pause(REFRESH_S * 2)
            assert "bad payloads 2" in str(app.query_one("#bar").render())

    asyncio.run(drive())
    link.stop()
    assert link.bad_counts() == {"bad_field": 1, "bad_utf8": 1}
