"""Home Assistant 2025.4.4 itself against real pi_edge processes, read back through its REST API.

HA runs headless with its MQTT integration on the test's Mosquitto (tests/integrations/
_home_assistant.py seeds what onboarding would). A node started with `--ha-discovery` must show
up in HA as a device per machine with state, class, confidence and drift sensors holding the
values the node published, follow a fault and a drift, become unavailable when the node dies,
and disappear with `python -m pi_edge ha-remove`. Two sites (two prefixes) whose nodes and
machines have the same ids keep separate entities and devices, and an older node's unscoped
entities give way to the scoped ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pi_edge.report.home_assistant import FIELDS, entity_slug, site_node_id
from protocol import Topics, Window, encode_window
from protocol.machine_state import MachineState
from scripts.broker import Broker, BrokerError
from tests.faults._kit import Child, child_env
from tests.pi_edge._model import EdgeModels
from tests.pi_edge.conftest import Listener, Publisher

from ._home_assistant import HomeAssistant
from ._products import need
from .conftest import BEARING, NORMAL, Children, windows

pytestmark = [pytest.mark.broker, pytest.mark.product, pytest.mark.timeout(300)]

N = 3  # --state-windows
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ha(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HomeAssistant]:
    """One Home Assistant for the module, on the session broker; its discovery prefix is its own,
    so no retained config of another test reaches it."""
    tool = need("home-assistant")
    home = HomeAssistant(
        tool.path("hass"),
        tmp_path_factory.mktemp("home-assistant"),
        broker.host,
        broker.port,
        f"test/ha-{os.getpid()}/homeassistant",
    )
    try:
        home.start()
    except BaseException:
        home.stop()
        raise
    print(f"Home Assistant up in {home.started_s:.1f} s")
    yield home
    home.stop()


def edge(
    children: Children,
    name: str,
    broker: Broker,
    prefix: str,
    node: str,
    ha: HomeAssistant,
    models: EdgeModels,
) -> Child:
    """`python -m pi_edge run --ha-discovery` as a plant runs it, serving the test model."""
    return children.start(
        name,
        "pi_edge",
        *("run", "--broker", broker.address, "--prefix", prefix, "--node", node),
        *("--public-key", str(models.public_key_path), "--model", str(models.bundle_path)),
        *("--state-dir", str(children.tmp / f"state-{name}"), "--no-dashboard"),
        *("--status-interval", "0.5", "--state-windows", str(N)),
        *("--ha-discovery", "--ha-prefix", ha.discovery_prefix),
    )


class Feeder:
    """Windows onto one site's machines, as a sensor gateway would send them."""

    def __init__(self, broker: Broker, topics: Topics) -> None:
        self.topics = topics
        self.pub = Publisher(broker.address, f"feeder-{time.time_ns()}")
        self.seq = 0

    def send(self, machine: str, data: np.ndarray) -> None:
        for x in data:
            window = Window(machine, self.seq, time.time_ns(), x)
            self.pub.publish(self.topics.window(machine), encode_window(window))
            self.seq += 1

    def close(self) -> None:
        self.pub.close()


def entity(prefix: str, machine: str, field: str) -> str:
    return f"sensor.{entity_slug(prefix, machine, field)}"


def wait_online(broker: Broker, topics: Topics, node: str, children: Children) -> None:
    status = Listener(broker.address, [topics.status(node)], f"status-{time.time_ns()}")
    try:

        def serving(msgs: list[tuple[str, bytes, bool]]) -> bool:
            last = json.loads(msgs[-1][1]) if msgs and msgs[-1][1] else {}
            return last.get("state") == "online" and last.get("model_version") == 1

        assert status.wait_for(serving, timeout=60), f"{node} not serving\n{children.tails()}"
    finally:
        status.close()


def ha_remove(broker: Broker, prefix: str, node: str, ha: HomeAssistant) -> None:
    args = ["ha-remove", "--broker", broker.address, "--prefix", prefix, "--node", node]
    done = subprocess.run(
        [sys.executable, "-m", "pi_edge", *args, "--ha-prefix", ha.discovery_prefix],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_home_assistant_shows_machines_follows_fault_and_drift_loses_them_offline_and_on_ha_remove(
    ha: HomeAssistant,
    broker: Broker,
    topics: Topics,
    models: EdgeModels,
    children: Children,
) -> None:
    node, machines = "pi-ha", ("m01", "m02")
    prefix = topics.prefix
    states = Listener(broker.address, [topics.machine_states()], f"states-{time.time_ns()}")
    feeder = Feeder(broker, topics)
    proc = edge(children, node, broker, prefix, node, ha, models)
    try:
        wait_online(broker, topics, node, children)
        for machine in machines:
            feeder.send(machine, windows(NORMAL, 2 * N))
        ids = {m: {f: entity(prefix, m, f) for f in FIELDS} for m in machines}
        status_id = f"sensor.{entity_slug(prefix, node, 'status')}"

        def published(machine: str) -> MachineState | None:
            got = states.on(topics.machine_state(machine, node))
            return MachineState.from_json(got[-1]) if got else None

        def shows(machine: str, state: str, cls: str, drift: tuple[str, ...] = ("ok",)) -> bool:
            want = published(machine)
            if want is None or (want.state, want.cls) != (state, cls):
                return False
            got = {f: ha.state(e) for f, e in ids[machine].items()}
            if any(s is None for s in got.values()):
                return False
            assert want.confidence is not None
            return (
                got["state"]["state"] == state  # type: ignore[index]
                and got["class"]["state"] == cls  # type: ignore[index]
                and got["confidence"]["state"] == str(round(want.confidence * 100, 1))  # type: ignore[index]
                and got["drift"]["state"] == want.drift  # type: ignore[index]
                and want.drift in drift
            )

        for machine in machines:
            ha.wait(lambda m=machine: shows(m, "normal", "normal"), 30, f"{machine} normal in HA")
        m01 = {f: ha.state(e) for f, e in ids["m01"].items()}
        state = m01["state"]
        assert state is not None
        assert state["attributes"]["friendly_name"] == "m01 State"
        assert state["attributes"]["node"] == node and state["attributes"]["model_version"] == 1
        assert m01["confidence"]["attributes"]["unit_of_measurement"] == "%"  # type: ignore[index]
        assert ha.wait(lambda: (ha.state(status_id) or {}).get("state") == "online", 10, "status")
        # HA's device registry: a device per machine, scoped by site, routed via the node's
        device = f"device_id('{ids['m01']['state']}')"
        registry = ha.template(
            f"{{{{ device_attr({device}, 'name') }}}}|"
            f"{{{{ device_attr({device}, 'identifiers') | list }}}}|"
            f"{{{{ device_attr({device}, 'via_device_id') == device_id('{status_id}') }}}}|"
            f"{{{{ device_entities({device}) | sort | join(',') }}}}"
        )
        name, identifiers, via, entities = registry.split("|")
        assert name == "m01" and via == "True", registry
        assert f"edgeloop:{prefix}:{node}:m01" in identifiers, registry
        assert entities.split(",") == sorted(ids["m01"].values())

        feeder.send("m01", windows(BEARING, N + 2, seed=1))  # a fault on m01 only
        ha.wait(lambda: shows("m01", "fault", "bearing_fault"), 30, "m01's fault in HA")
        assert shows("m02", "normal", "normal")

        for _ in range(40):  # m01 drifts while its fault holds: HA's drift sensor follows
            feeder.send("m01", windows(BEARING, 10, "drift", seed=2 + feeder.seq))
            if (ha.state(ids["m01"]["drift"]) or {}).get("state") in ("suspect", "drift"):
                break
            time.sleep(0.3)
        ha.wait(
            lambda: shows("m01", "fault", "bearing_fault", ("suspect", "drift")),
            15,
            "m01's drift in HA",
        )

        proc.kill9()  # the node dies: its Last Will makes every machine entity unavailable
        everything = [e for m in machines for e in ids[m].values()]

        def unavailable() -> bool:
            return all((ha.state(e) or {}).get("state") == "unavailable" for e in everything)

        ha.wait(unavailable, 20, "every machine entity unavailable")
        assert ha.wait(lambda: (ha.state(status_id) or {}).get("state") == "offline", 10, "offline")

        ha_remove(broker, prefix, node, ha)
        gone = [*everything, status_id]
        ha.wait(lambda: all(ha.state(e) is None for e in gone), 20, "entities removed")
        left = [e for e in ha.states() if entity_slug(prefix) in e]
        assert left == [], left
    finally:
        feeder.close()
        states.close()


def test_two_sites_with_the_same_node_and_machine_ids_stay_apart_and_older_entities_move(
    ha: HomeAssistant,
    broker: Broker,
    topics: Topics,
    models: EdgeModels,
    children: Children,
    tmp_path: Path,
) -> None:
    """Site a's node `pi-1` on HA's broker, site b's node `pi-1` on its own broker bridged to it
    (one broker cannot hold two clients of one id); both serve a machine `m01`. Before, site a
    ran an older edgeloop, whose unscoped config made `sensor.m01_state`."""
    a, b = f"{topics.prefix}/a", f"{topics.prefix}/b"
    node, machine = "pi-1", "m01"
    bridge = "\n".join(
        [
            f"connection site-b-{os.getpid()}",
            f"address {broker.address}",
            "bridge_protocol_version mqttv311",
            "try_private true",
            "cleansession true",
            "restart_timeout 1 2",
            f"topic {b}/# both 1",
            f"topic {ha.discovery_prefix}/# both 1",
        ]
    )
    try:
        site_b = Broker(run_dir=tmp_path / "site-b", extra_conf=bridge).start()
    except BrokerError as exc:
        pytest.fail(f"cannot start site b's broker: {exc}")
    old_topic = f"{ha.discovery_prefix}/sensor/{node}/{machine}_state/config"
    old = {
        "name": "State",
        "unique_id": f"edgeloop:{node}:{machine}:state",
        "state_topic": Topics(a).legacy_machine_state(machine),  # an older node's config
        "value_template": "{{ value_json.state }}",
        "device": {"identifiers": [f"edgeloop:{node}:{machine}"], "name": machine},
    }
    feeders = [Feeder(broker, Topics(a)), Feeder(site_b, Topics(b))]
    try:
        feeders[0].pub.publish(old_topic, json.dumps(old).encode(), retain=True)
        ha.wait(lambda: ha.state("sensor.m01_state"), 20, "the older node's entity")

        edge(children, "site-a", broker, a, node, ha, models)
        edge(children, "site-b", site_b, b, node, ha, models)
        wait_online(broker, Topics(a), node, children)
        wait_online(broker, Topics(b), node, children)  # over the bridge
        feeders[0].send(machine, windows(BEARING, 2 * N, seed=5))
        feeders[1].send(machine, windows(NORMAL, 2 * N, seed=6))
        want = {entity(a, machine, "state"): "fault", entity(b, machine, "state"): "normal"}
        want |= {
            entity(a, machine, "class"): "bearing_fault",
            entity(b, machine, "class"): "normal",
        }

        def both() -> bool:
            return all((ha.state(e) or {}).get("state") == s for e, s in want.items())

        ha.wait(both, 40, "both sites' m01 in HA")
        ha.wait(lambda: ha.state("sensor.m01_state") is None, 20, "the older entity gone")
        ours = sorted(e for e in ha.states() if "m01" in e or "pi_1" in e)
        expected = sorted(
            [entity(s, machine, f) for s in (a, b) for f in FIELDS]
            + [f"sensor.{entity_slug(s, node, 'status')}" for s in (a, b)]
        )
        assert ours == expected  # no `_2` suffix, no leftover
        ea, eb = entity(a, machine, "state"), entity(b, machine, "state")
        devices = ha.template(
            f"{{{{ device_id('{ea}') }}}}|{{{{ device_id('{eb}') }}}}|"
            f"{{{{ device_attr(device_id('{eb}'), 'identifiers') | list }}}}"
        ).split("|")
        assert devices[0] != devices[1], devices
        assert f"edgeloop:{b}:{node}:{machine}" in devices[2], devices
        assert site_node_id(a, node) != site_node_id(b, node)
    finally:
        for c in children.made:
            c.stop(timeout=10)
        ha_remove(broker, a, node, ha)
        ha_remove(site_b, b, node, ha)
        for f in feeders:
            f.close()
        site_b.stop()
    ha.wait(lambda: not [e for e in ha.states() if "m01" in e], 20, "both sites removed")
    # nothing edgeloop published made HA's MQTT integration warn (a refused or conflicting
    # config, a deprecated option) or anything in HA fail, in either test of this module
    log = (ha.config / "home-assistant.log").read_text().splitlines()
    complaints = [ln for ln in log if " ERROR " in ln or "homeassistant.components.mqtt" in ln]
    assert complaints == [], complaints
