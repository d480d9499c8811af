"""Hostile statuses against the console (issue 23, item 6), driven by Textual's pilot.

A node (or anyone with a login that may write statuses) publishes text made to hurt the screen:
Rich markup that does not parse (`[/x]` raised MarkupError and ended the console, every start,
since statuses are retained), link markup (rendered a clickable link), 10 KB strings, control
characters, and a status naming another node than its topic. The console must stay up, show
every string literally and bounded, and refuse what lies about its sender.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from rich.text import Text
from textual.pilot import Pilot
from textual.widgets import DataTable

from console.app import REFRESH_S, ConsoleApp
from console.model import MachineRow, NodeRow
from console.mqtt import ConsoleLink, Drained
from console.safe import MAX_CELL, MAX_LINE
from protocol import Status, Topics
from protocol.machine_state import MachineState

from .conftest import Publisher

pytestmark = pytest.mark.broker

SIZE = (200, 50)
LINK = "[link=https://evil.example]click[/link]"


def _link(broker: Any, topics: Topics) -> ConsoleLink:
    link = ConsoleLink(broker.address, topics, client_id=f"console-hostile-{time.time_ns()}")
    link.start()
    assert link.subscribed.wait(10), "the console did not subscribe"
    return link


async def _until(pilot: Pilot[Any], cond: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out waiting on the console"
        await pilot.pause(0.1)


def _keys(app: ConsoleApp, table: str) -> list[str]:
    return [str(k.value) for k in app.query_one(f"#{table}", DataTable).rows]


def _cell(app: ConsoleApp, table: str, row: str, column: str) -> Any:
    return app.query_one(f"#{table}", DataTable).get_cell(row, column)


def _no_markup(cell: Any) -> str:
    """The cell is a Text without any style span (nothing was parsed); its plain text."""
    assert isinstance(cell, Text), f"a cell of type {type(cell).__name__} may be parsed"
    assert cell.spans == [] and not cell.style, f"markup was parsed: {cell.spans} {cell.style}"
    return cell.plain


def _raw_status(node: str, **fields: Any) -> bytes:
    """A status JSON as any client may write it (not through Status, which checks fields)."""
    obj: dict[str, Any] = {
        "v": 1,
        "node": node,
        "role": "edge",
        "state": "online",
        "software_version": "0.1.0",
        "model_version": 1,
        "timestamp": time.time(),
        "metrics": {},
        "errors": {},
    }
    obj.update(fields)
    return json.dumps(obj).encode()


def test_hostile_statuses_are_shown_literally_bounded_or_refused(
    broker: Any, topics: Topics, publisher: Publisher
) -> None:
    pub = publisher.publish
    # retained before the console starts: what killed every console start
    pub(topics.status("pi-markup"), _raw_status("pi-markup", drift="[/x]"), retain=True)
    pub(
        topics.status("pi-link"),
        _raw_status("pi-link", state="degraded", drift=LINK[:32], reason=f"{LINK} [bold red]x"),
        retain=True,
    )
    pub(topics.status("pi-big"), _raw_status("pi-big", drift="x" * 10_240), retain=True)
    pub(topics.status("pi-ctl"), _raw_status("pi-ctl", drift="ok\x1b[2J\r\n"), retain=True)
    # a status for pi-victim on pi-liar's topic: no node speaks for another
    pub(topics.status("pi-liar"), _raw_status("pi-victim", state="offline"), retain=True)
    now = time.time()
    state = MachineState("m01", "pi-link", "fault", "[/]", 0.9, now, "drift", 1, now)
    pub(topics.machine_state("m01", "pi-link"), state.to_json(), retain=True)
    liars = [
        topics.machine_state("m02", "pi-link"),  # m01's state on m02's topic
        topics.machine_state("m01", "pi-liar"),  # pi-link's state on pi-liar's topic
    ]
    for topic in liars:
        pub(topic, state.to_json(), retain=True)
    link = _link(broker, topics)

    async def drive() -> None:
        app = ConsoleApp(link, topics)
        async with app.run_test(size=SIZE) as pilot:
            await _until(pilot, lambda: len(_keys(app, "nodes")) == 2)
            await _until(pilot, lambda: sum(link.bad_counts().values()) >= 5)
            await _until(pilot, lambda: _keys(app, "machines") == ["m01"])
            await pilot.pause(REFRESH_S * 2)
            assert sorted(_keys(app, "nodes")) == ["pi-link", "pi-markup"]
            assert _no_markup(_cell(app, "nodes", "pi-markup", "drift / phase")) == "[/x]"
            assert _no_markup(_cell(app, "nodes", "pi-link", "drift / phase")) == LINK[:32]
            assert _no_markup(_cell(app, "nodes", "pi-link", "state")) == "degraded"
            assert _no_markup(_cell(app, "machines", "m01", "class")) == "[/]"
            # the reason reaches the timeline literally: no link, no style from it
            texts = [e.text for e in app.site.timeline]
            assert f"pi-link (edge) degraded: {LINK} [bold red]x" in texts
            shot = app.export_screenshot()
            assert LINK in shot and 'href="https://evil.example' not in shot
            # the bar says what was refused
            assert "bad payloads" in str(app.query_one("#bar").render())

    asyncio.run(drive())
    link.stop()
    bad = link.bad_counts()
    # the 10 KB and the control-character drift fail the protocol's checks; the three liars
    # (a status and two machine states naming another sender than their topic) are refused
    assert bad.get("topic_mismatch") == 3, bad
    assert sum(bad.values()) == 5, bad
    for node in ("pi-markup", "pi-link", "pi-big", "pi-ctl", "pi-liar"):
        pub(topics.status(node), b"", retain=True)
    for topic in (topics.machine_state("m01", "pi-link"), *liars):
        pub(topic, b"", retain=True)


def test_the_screen_bounds_and_cleans_whatever_reaches_it() -> None:
    """The screen's own defence, whatever the decoders let through one day: 10 KB of markup
    and control characters in every field end up literal, printable and bounded."""
    nasty = ("[/x][link=https://evil.example]\x1b[31m\x00\u202e" * 300)[:10_240]

    async def drive() -> None:
        app = ConsoleApp(None, Topics("test/hostile"))
        async with app.run_test(size=SIZE) as pilot:
            app.site.nodes["pi-1"] = NodeRow("pi-1", nasty, nasty, detail=nasty, seen=time.time())
            app.site.machines["m01"] = MachineRow("m01", nasty, nasty, drift=nasty, node=nasty)
            app.site.action(time.time(), nasty)
            app._say(nasty, "warning")
            await pilot.pause(REFRESH_S * 2)
            for table, row in (("nodes", "pi-1"), ("machines", "m01")):
                t = app.query_one(f"#{table}", DataTable)
                for column in t.columns:
                    text = _no_markup(t.get_cell(row, column))
                    assert len(text) <= MAX_CELL and text.isprintable(), (table, column, text)
            entry = app.site.timeline[-1].text
            assert len(entry) <= MAX_LINE and entry.isprintable()
            assert entry.startswith("[/x][link=https://evil.example]?[31m??")
            shot = app.export_screenshot()
            assert 'href="https://evil.example' not in shot

    asyncio.run(drive())


class _OneStatusLink:
    """A link that hands the screen one status per drain (no broker: the model's fault)."""

    broker = "fake"
    state = "connected"

    def drain(self) -> Drained:
        status = Status("pi-1", "edge", "online", "0.1.0", 1, time.time())
        return Drained([(status, time.time())], [], [])

    def bad_counts(self) -> dict[str, int]:
        return {}


def test_a_message_the_model_raises_on_is_counted_and_the_console_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def boom(status: Status, now: float) -> None:
        raise RuntimeError("a bug in the model")

    async def drive() -> None:
        app = ConsoleApp(_OneStatusLink(), Topics("test/hostile"))  # type: ignore[arg-type]
        app.site.status = boom  # type: ignore[method-assign]
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause(REFRESH_S * 3)
            assert app.is_running and app.faults["boom"] >= 2
            assert "messages not shown (faults)" in str(app.query_one("#bar").render())

    asyncio.run(drive())
    assert caplog.text.count("could not show a message") == 1  # once a minute, not per message
