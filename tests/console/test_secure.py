"""The console in the secure profile: it logs in as identity `operator`, sees the nodes, and its
node command reaches the edge node it names (the ACL's `%u` pattern) and no other login."""

from __future__ import annotations

import time
from typing import Any

import pytest

from console.mqtt import ConsoleLink
from protocol import Status, Topics
from protocol.node_command import NodeCommand
from scripts.secure_profile import SecureProfile

from .conftest import Listener, Publisher

pytestmark = pytest.mark.broker


def test_the_operator_console_sees_statuses_and_commands_reach_edge_only(
    secure_broker: Any, secure_profile: SecureProfile, topics: Topics
) -> None:
    edge_ear = Listener(
        secure_broker.address,
        [topics.node_command("edge")],  # identity `edge` is node `edge`
        f"edge-ear-{time.time_ns()}",
        secure_profile.credentials("edge"),
    )
    sensor_ear = Listener(
        secure_broker.address,
        [f"{topics.prefix}/nodes/+/command"],
        f"sensor-ear-{time.time_ns()}",
        secure_profile.credentials("sensor"),
    )
    trainer = Publisher(  # one connection per login: the client id is the login
        secure_broker.address,
        f"trainer-pub-{time.time_ns()}",
        secure_profile.credentials("trainer"),
    )
    link = ConsoleLink(
        secure_broker.address,
        topics,
        client_id=f"console-{time.time_ns()}",
        credentials=secure_profile.credentials("operator"),
    ).start()
    try:
        assert link.subscribed.wait(10), link.state
        status = Status("trainer", "trainer", "online", "0.1.0", 2, time.time())
        trainer.publish(topics.status("trainer"), status.to_json(), retain=True)
        deadline = time.monotonic() + 10
        seen: list[Status] = []
        while not seen and time.monotonic() < deadline:
            seen = [s for s, _ in link.drain().statuses]
            time.sleep(0.05)
        assert [s.node for s in seen] == ["trainer"]
        assert link.send(
            topics.node_command("edge"),
            NodeCommand("rollback", id="op@1", from_version=2).to_json(),
        )
        assert edge_ear.wait_for(lambda msgs: len(msgs) == 1, timeout=10)
        assert NodeCommand.from_json(edge_ear.messages[0][1]).cmd == "rollback"
        time.sleep(0.5)
        assert sensor_ear.messages == []  # no read grant for sensors
    finally:
        link.stop()
        trainer.publish(topics.status("trainer"), b"", retain=True)
        for c in (edge_ear, sensor_ear, trainer):
            c.close()
