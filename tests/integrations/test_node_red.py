"""Node-RED 4.1.8 itself running edgeloop's flow (deploy/node-red/) on the test's broker.

A real pi_edge's fault_start becomes a plant alarm and its fault_end clears it; a machine left in
a fault (retained state) before Node-RED started is alarmed at its start; an operator's form,
posted to the flow's HTTP endpoint, becomes a label event that protocol.labels decodes and the
node applies; a form with a class outside the vocabulary is refused with 400 and sends nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from protocol import Topics, Window, encode_window
from protocol.labels import LabelEvent
from protocol.machine_state import MachineState
from scripts.broker import Broker, _die_with_parent, free_port
from tests.pi_edge._model import EdgeModels
from tests.pi_edge.conftest import Listener, Publisher

from ._products import need
from .conftest import BEARING, NORMAL, Children, windows

pytestmark = [pytest.mark.broker, pytest.mark.product, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
FLOW_DIR = REPO / "deploy" / "node-red"
N = 3  # the node's --state-windows
ALARM_FIELDS = {
    "v", "source", "site", "machine", "node", "active", "severity", "condition", "text", "event",
    "previous", "confidence", "duration_s", "model_version", "ts",
}  # fmt: skip


@dataclass
class NodeRed:
    proc: subprocess.Popen[bytes]
    base: str
    log: Path

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])


@pytest.fixture
def node_red(broker: Broker, topics: Topics, tmp_path: Path) -> Iterator[NodeRed]:
    """Node-RED on deploy/node-red/settings.example.js and flows.json, for this test's prefix;
    the alarms go under `<prefix>-plant/alarms`."""
    tool = need("node-red")
    user = tmp_path / "node-red"
    user.mkdir()
    (user / "flows.json").write_bytes((FLOW_DIR / "flows.json").read_bytes())
    port = free_port()
    env = {
        **os.environ,
        "MQTT_HOST": broker.host,
        "MQTT_PORT": str(broker.port),
        "EDGELOOP_PREFIX": topics.prefix,
        "PLANT_ALARM_TOPIC": f"{topics.prefix}-plant/alarms",
        "NODE_RED_STATUS_TOPIC": f"{topics.prefix}-plant/node-red",
        "NODE_RED_PORT": str(port),
        "NODE_RED_USER_DIR": str(user),
        "NODE_RED_FLOWS": "flows.json",
    }
    log = tmp_path / "node-red.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                tool.paths["node"],
                tool.paths["red_js"],
                "--settings",
                str(FLOW_DIR / "settings.example.js"),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, safe before exec
        )
    made = NodeRed(proc, f"http://127.0.0.1:{port}", log)
    yield made
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def _post(url: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
    data = urllib.parse.urlencode(form).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_node_red_turns_faults_into_plant_alarms_and_an_operators_form_into_label_events(
    node_red: NodeRed,
    broker: Broker,
    topics: Topics,
    models: EdgeModels,
    children: Children,
) -> None:
    alarm_base, status_topic = f"{topics.prefix}-plant/alarms", f"{topics.prefix}-plant/node-red"
    feeder = Publisher(broker.address, f"feeder-{time.time_ns()}")
    # a machine an earlier node left in a fault: its retained state is all Node-RED will see
    earlier = MachineState("m09", "pi-old", "fault", "pump_fault", 0.91, 1.7e9, "ok", 1, 1.7e9 + 9)
    feeder.publish(topics.machine_state("m09", "pi-old"), earlier.to_json(), retain=True)
    seen = Listener(
        broker.address,
        [f"{alarm_base}/+", status_topic, topics.labels],
        f"plant-{time.time_ns()}",
    )
    try:

        def alarms(machine: str) -> list[dict[str, Any]]:
            return [json.loads(p) for p in seen.on(f"{alarm_base}/{machine}")]

        t0 = time.monotonic()
        assert seen.wait_for(lambda _: seen.on(status_topic)[-1:] == [b"online"], 30), (
            node_red.tail()
        )
        assert seen.wait_for(lambda _: len(alarms("m09")) == 1, 10), node_red.tail()
        print(f"Node-RED online and caught up in {time.monotonic() - t0:.1f} s")
        [m09] = alarms("m09")
        assert set(m09) == ALARM_FIELDS
        assert (m09["active"], m09["condition"], m09["event"], m09["node"]) == (
            True,
            "pump_fault",
            "state",
            "pi-old",
        )
        assert m09["site"] == topics.prefix and m09["severity"] == "major"

        node = "pi-nr"
        children.start(
            node,
            "pi_edge",
            *("run", "--broker", broker.address, "--prefix", topics.prefix, "--node", node),
            *("--public-key", str(models.public_key_path), "--model", str(models.bundle_path)),
            *("--state-dir", str(children.tmp / "state"), "--no-dashboard"),
            *("--status-interval", "0.5", "--state-windows", str(N)),
        )
        status = Listener(broker.address, [topics.status(node)], f"status-{time.time_ns()}")

        def node_status() -> dict[str, Any]:
            got = status.on(topics.status(node))
            return json.loads(got[-1]) if got and got[-1] else {}

        assert status.wait_for(lambda _: node_status().get("model_version") == 1, 60), (
            children.tails()
        )
        seq = 0

        def send(label: int, n: int, seed: int) -> None:
            nonlocal seq
            for x in windows(label, n, seed=seed):
                w = Window("m01", seq, time.time_ns(), x)
                feeder.publish(topics.window("m01"), encode_window(w))
                seq += 1

        send(NORMAL, 2 * N, 1)  # a first state, normal: no event, so no alarm
        send(BEARING, 2 * N, 2)  # fault_start
        assert seen.wait_for(lambda _: len(alarms("m01")) >= 1, 20), node_red.tail()
        send(NORMAL, 2 * N, 3)  # fault_end
        assert seen.wait_for(lambda _: len(alarms("m01")) >= 2, 20), node_red.tail()
        time.sleep(0.3)
        raised, cleared = alarms("m01")
        assert set(raised) == set(cleared) == ALARM_FIELDS
        assert (raised["active"], raised["condition"], raised["event"]) == (
            True,
            "bearing_fault",
            "fault_start",
        )
        assert raised["previous"] == "normal" and raised["node"] == node
        assert raised["confidence"] > 0.9 and raised["model_version"] == 1
        assert raised["text"].startswith("m01: bearing_fault (confidence ")
        assert (cleared["active"], cleared["condition"], cleared["event"]) == (
            False,
            "bearing_fault",
            "fault_end",
        )
        assert cleared["duration_s"] >= 0 and cleared["ts"] >= raised["ts"]
        assert cleared["text"].startswith("m01: bearing_fault ended after ")

        # the operator's form: a label event the contract decodes and the node applies
        page = urllib.request.urlopen(f"{node_red.base}/edgeloop/label", timeout=10)
        html = page.read().decode()
        assert page.status == 200 and "<form" in html and "<option>pump_fault</option>" in html
        form = {
            "machine": "m01",
            "class": "bearing_fault",
            "from": "2026-11-24T08:00:00Z",
            "to": "2026-11-24T09:30:00+01:00",
            "source": "Jürgen,\twork order 4711",
        }
        code, body = _post(f"{node_red.base}/edgeloop/label", form)
        assert code == 202, body
        assert seen.wait_for(lambda _: len(seen.on(topics.labels)) >= 1, 10), node_red.tail()
        [raw] = seen.on(topics.labels)
        event = LabelEvent.from_json(raw)
        assert (event.machine, event.cls) == ("m01", "bearing_fault")
        assert event.source == "Jürgen,work order 4711"  # the control character removed
        assert (event.start, event.end) == (1795507200.0, 1795509000.0)
        assert json.loads(raw) == body["sent"] and body["topic"] == topics.labels

        def applied() -> bool:
            labels = node_status().get("detail", {}).get("labels", {})
            return bool(labels.get("events", 0) >= 1)

        assert status.wait_for(lambda _: applied(), 10), node_status()

        code, body = _post(f"{node_red.base}/edgeloop/label", {**form, "class": "rust"})
        assert code == 400 and "rust" in body["error"], body
        time.sleep(0.5)
        assert len(seen.on(topics.labels)) == 1  # nothing was sent for it
        status.close()
        errors = [ln for ln in node_red.log.read_text().splitlines() if "[error]" in ln]
        assert errors == [], errors
    finally:
        feeder.publish(topics.machine_state("m09", "pi-old"), b"", retain=True)
        feeder.close()
        seen.close()
