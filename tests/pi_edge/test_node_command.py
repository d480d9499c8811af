"""An operator's node command over MQTT: pi_edge rolls back on its model thread, or says why not."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from nodekit.settings import build
from pi_edge import EdgeConfig, EdgeService
from protocol import Topics
from protocol.node_command import NodeCommand

from ._model import EdgeModels
from .conftest import Publisher

pytestmark = pytest.mark.broker


def _wait(cond: Any, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_rollback_by_command_refuses_bad_ones_and_rolls_back_when_it_can(
    broker: Any, topics: Topics, models: EdgeModels, publisher: Publisher, tmp_path: Path
) -> None:
    config = build(
        EdgeConfig,
        broker=broker.address,
        prefix=topics.prefix,
        node="pi-cmd",
        public_key=models.public_key_path,
        state_dir=tmp_path / "edge",
        dashboard=False,
        status_interval_s=0.3,
        model=models.bundle_path,
    )
    command_topic = topics.node_command("pi-cmd")
    with EdgeService(config, public_key=models.public_key) as svc:
        assert svc.wait_for_model(1, 20)
        assert _wait(lambda: svc.broker_state == "connected")
        time.sleep(0.3)  # subscribed
        publisher.publish(command_topic, b'{"v":1,"cmd":"reboot"}')
        publisher.publish(topics.node_command("someone-else"), NodeCommand("rollback").to_json())
        assert _wait(lambda: svc.status().errors.get("bad_field") == 1)
        publisher.publish(command_topic, NodeCommand("rollback", id="t@0").to_json())  # v1
        assert _wait(lambda: svc.status().errors.get("command_unaddressed") == 1)
        rollback_from_1 = NodeCommand("rollback", id="t@0", from_version=1)
        publisher.publish(command_topic, rollback_from_1.to_json())  # nothing to go to
        assert _wait(lambda: svc.status().errors.get("rollback_failed") == 1)
        assert svc.model_version == 1

        publisher.publish(topics.model_current, models.bundle(2, site=topics.prefix), retain=True)
        assert svc.wait_for_model(2, 20)
        publisher.publish(
            command_topic, NodeCommand("rollback", id="t@1", from_version=2).to_json()
        )
        assert svc.wait_for_model(1, 20), "the node did not roll back to v1"
        time.sleep(1.0)
        assert svc.model_version == 1, "the retained v2 came back after the rollback"
        assert svc.status().errors.get("rollback_failed") == 1
        commands = svc.status().detail["commands"]
        assert (commands["done"], commands["failed"], commands["unaddressed"]) == (1, 1, 1)
        assert commands["last"][-1]["id"] == "t@1" and commands["last"][-1]["result"] == "done"
    publisher.publish(topics.model_current, b"", retain=True)
