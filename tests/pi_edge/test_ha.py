"""Home Assistant MQTT discovery: the pure configs, and a node against a real Mosquitto."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nodekit.settings import build, resolve
from pi_edge import EdgeConfig, EdgeService
from pi_edge.__main__ import main
from pi_edge.report.home_assistant import (
    FIELDS,
    check_ha_prefix,
    discovery,
    encode,
    entity_slug,
    is_site_config,
    legacy_node_level,
    node_discovery,
    object_id,
    site_node_id,
)
from protocol import ConfigError, Topics, Window, encode_window

from ._model import EdgeModels
from .conftest import Listener, Publisher

REQUIRED = {"name", "unique_id", "state_topic", "value_template", "device"}


# -- pure ---------------------------------------------------------------------------------------
def test_each_machine_gets_one_sensor_config_per_field_under_the_site_node_level() -> None:
    pairs = discovery("pi-1", "m01", "site/a", "ha")
    level = site_node_id("site/a", "pi-1")
    assert level.startswith("site_a_pi-1_")
    assert [t for t, _ in pairs] == [f"ha/sensor/{level}/m01_{f}/config" for f in FIELDS]
    assert list(FIELDS) == ["state", "class", "confidence", "drift"]
    for (_, config), field in zip(pairs, FIELDS, strict=True):
        assert config.keys() >= REQUIRED
        assert config["state_topic"] == "site/a/machines/m01/state/pi-1"
        assert config["unique_id"] == f"edgeloop:site/a:pi-1:m01:{field}"
        assert config["object_id"] == f"site_a_m01_{field}"
        assert config["default_entity_id"] == f"sensor.site_a_m01_{field}"
        assert config["device"]["identifiers"] == ["edgeloop:site/a:pi-1:m01"]
        assert config["device"]["manufacturer"] == "edgeloop"
        assert config["device"]["via_device"] == "edgeloop:site/a:pi-1"
        assert config["availability_topic"] == "site/a/nodes/pi-1/status"
        assert config["payload_available"] == "online"
        assert "{{" in config["value_template"] and "value_json" in config["value_template"]
        json.loads(encode(config))  # what goes on the wire is JSON


def test_confidence_is_a_percent_measurement_and_the_state_carries_attributes() -> None:
    by_field = dict(zip(FIELDS, (c for _, c in discovery("n", "m", "p")), strict=True))
    conf = by_field["confidence"]
    assert conf["unit_of_measurement"] == "%" and conf["state_class"] == "measurement"
    assert "* 100" in conf["value_template"]
    assert by_field["state"]["json_attributes_topic"] == "p/machines/m/state/n"
    assert by_field["class"]["value_template"] == "{{ value_json['class'] }}"
    for c in by_field.values():  # the node's status JSON says online/offline/degraded
        assert c["availability_template"].startswith("{{ 'online' if value_json.state")


def test_unique_ids_and_topics_are_stable_and_distinct_across_nodes_and_machines() -> None:
    assert discovery("n1", "m1", "p") == discovery("n1", "m1", "p")
    seen: set[str] = set()
    topics: set[str] = set()
    for node in ("a", "a_b", "b"):
        for machine in ("b_c", "c", "m.1", "m_1"):
            for topic, config in discovery(node, machine, "p"):
                seen.add(config["unique_id"])
                topics.add(topic)
    assert len(seen) == len(topics) == 3 * 4 * len(FIELDS)


def test_ids_with_dots_become_ha_topic_ids_without_colliding() -> None:
    assert object_id("m01") == "m01"
    dotted = object_id("press.3")
    assert dotted.startswith("press_3_") and set(dotted) <= set(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
    )
    assert object_id("press.3") != object_id("press_3")


def test_two_sites_with_the_same_node_and_machine_ids_never_collide() -> None:
    a = discovery("pi-1", "m01", "site-a/edgeloop") + node_discovery("pi-1", "site-a/edgeloop")
    b = discovery("pi-1", "m01", "site-b/edgeloop") + node_discovery("pi-1", "site-b/edgeloop")
    for key in ("unique_id", "object_id", "default_entity_id"):
        assert not {c[key] for _, c in a} & {c[key] for _, c in b}, key
    assert not {t for t, _ in a} & {t for t, _ in b}
    devices = [{c["device"]["identifiers"][0] for _, c in x} for x in (a, b)]
    assert not devices[0] & devices[1]
    # prefixes that slug alike still get their own topics and unique ids
    c = discovery("pi-1", "m01", "site_a/edgeloop")
    assert not {t for t, _ in c} & {t for t, _ in a}
    assert not {x["unique_id"] for _, x in c} & {x["unique_id"] for _, x in a}


def test_entity_slugs_are_what_home_assistant_accepts_as_entity_ids() -> None:
    ha_entity_id = re.compile(r"^(?!.+__)(?!_)[\da-z_]+(?<!_)\.(?!_)[\da-z_]+(?<!_)$")
    for parts in (("edgeloop/v1", "m01", "state"), ("A//b__", "press.3", "drift"), ("-", "_")):
        assert ha_entity_id.fullmatch(f"sensor.{entity_slug(*parts)}"), parts
    assert entity_slug("Site-A/edgeloop", "press.3", "state") == "site_a_edgeloop_press_3_state"


def test_only_configs_that_read_the_sites_topics_count_as_the_sites() -> None:
    [(_, config)] = node_discovery("pi-1", "a/v1")
    assert is_site_config(encode(config), "a/v1")
    assert not is_site_config(encode(config), "a")  # a prefix of the prefix is another site
    assert not is_site_config(encode(config), "a/v10")
    for junk in (b"", b"[1]", b'{"state_topic": 3}', b"{" * 5000, b'{"x":"' + b"a" * 9000 + b'"}'):
        assert not is_site_config(junk, "a/v1")
    assert legacy_node_level("pi.1") == object_id("pi.1") != site_node_id("a/v1", "pi.1")


def test_the_node_device_is_what_machines_route_via() -> None:
    [(topic, config)] = node_discovery("pi-1", "p", "ha", sw_version="1.2")
    assert topic == f"ha/sensor/{site_node_id('p', 'pi-1')}/status/config"
    assert config["device"]["identifiers"] == ["edgeloop:p:pi-1"]
    assert config["device"]["identifiers"] == [
        discovery("pi-1", "m", "p")[0][1]["device"]["via_device"]
    ]
    assert config["default_entity_id"] == "sensor.p_pi_1_status"
    assert config["device"]["sw_version"] == "1.2"
    assert config["state_topic"] == "p/nodes/pi-1/status"


@pytest.mark.parametrize("bad", ["", "ha/", "/ha", "ha/+", "ha/#", "a//b"])
def test_a_discovery_prefix_with_wildcards_or_empty_levels_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not a discovery prefix"):
        check_ha_prefix(bad)
    with pytest.raises(ConfigError, match="ha_prefix"):
        resolve(EdgeConfig, flags={"ha_prefix": bad})


def test_discovery_is_off_by_default() -> None:
    cfg = resolve(EdgeConfig, env={})
    assert cfg.report.ha_discovery is False and cfg.report.ha_prefix == "homeassistant"


# -- against a real broker ----------------------------------------------------------------------
@pytest.fixture
def ha_node(
    broker: Any, topics: Topics, models: EdgeModels, tmp_path: Path
) -> Iterator[Callable[..., EdgeService]]:
    made: list[EdgeService] = []

    def _make(**kw: Any) -> EdgeService:
        cfg = build(
            EdgeConfig,
            broker=broker.address,
            prefix=topics.prefix,
            node=kw.pop("node", f"edge-ha-{time.time_ns()}"),
            public_key=models.public_key_path,
            state_dir=tmp_path / "state",
            dashboard=False,
            status_interval_s=0.3,
            model=models.bundle_path,
            **kw,
        )
        svc = EdgeService(cfg, public_key=models.public_key)
        made.append(svc)
        return svc.start()

    yield _make
    for svc in made:
        svc.stop()


def _retained(listen: Any, ha: str, settle: float = 1.0) -> dict[str, bytes]:
    """What a new subscriber to `<ha>/#` gets: the retained configs (non-empty)."""
    reader: Listener = listen(f"{ha}/#")
    time.sleep(settle)
    return {t: p for t, p, retain in reader.messages if retain and p}


@pytest.mark.broker
def test_a_node_publishes_retained_discovery_republishes_on_ha_birth_and_ha_remove_clears_it(
    ha_node: Callable[..., EdgeService],
    publisher: Publisher,
    listen: Any,
    topics: Topics,
    models: EdgeModels,
    broker: Any,
) -> None:
    ha = f"{topics.prefix}/ha"
    live: Listener = listen(f"{ha}/#")
    svc = ha_node(ha_discovery=True, ha_prefix=ha)
    node = svc.config.node
    assert svc.wait_for_model(1)
    machines = ("m01", "press.3")
    expected = {t for m in machines for t, _ in discovery(node, m, topics.prefix, ha)}
    node_topic = node_discovery(node, topics.prefix, ha)[0][0]  # sent after it subscribed
    assert live.wait_for(lambda msgs: node_topic in {t for t, _, _ in msgs})
    for seq in range(6):  # many windows per machine, still one config set per machine
        for m in machines:
            x = models.x_test[seq % len(models.x_test)]
            publisher.publish(topics.window(m), encode_window(Window(m, seq, time.time_ns(), x)))
    assert live.wait_for(lambda msgs: expected | {node_topic} <= {t for t, _, _ in msgs})
    time.sleep(0.5)
    assert all(len(live.on(t)) == 1 for t in expected), "configs are published once per machine"

    got = _retained(listen, ha)
    assert set(got) == expected | {node_topic}
    for topic, payload in got.items():
        config = json.loads(payload)
        assert config.keys() >= REQUIRED
        assert config["device"]["identifiers"][0].startswith(f"edgeloop:{topics.prefix}:{node}")
        if topic in expected:
            assert config["availability_topic"] == topics.status(node)

    # the same retained configs through a client we did not write: Mosquitto's own mosquitto_sub
    exe = shutil.which("mosquitto_sub")
    assert exe, "mosquitto_sub missing: sudo apt-get install -y mosquitto-clients"
    want = len(expected) + 1
    cmd = [exe, "-h", broker.host, "-p", str(broker.port), "-t", f"{ha}/#", "-v"]
    out = subprocess.run([*cmd, "-C", str(want), "-W", "10"], capture_output=True, check=True)
    lines = out.stdout.decode().splitlines()
    seen = dict(line.split(" ", 1) for line in lines)
    assert set(seen) == set(got)
    assert all(json.loads(seen[t]) == json.loads(got[t]) for t in seen)

    publisher.publish(f"{ha}/status", b"online")  # Home Assistant (re)started
    assert live.wait_for(lambda _: all(len(live.on(t)) >= 2 for t in expected | {node_topic}))
    svc.stop()

    base = ["ha-remove", "--broker", broker.address, "--prefix", topics.prefix]
    base += ["--node", node, "--ha-prefix", ha]
    assert main([*base, "--machines", "m01"]) == 0
    left = _retained(listen, ha)
    assert set(left) == {t for t, _ in discovery(node, "press.3", topics.prefix, ha)} | {node_topic}
    assert main([*base, "--settle", "0.5"]) == 0
    assert _retained(listen, ha) == {}
    assert all(live.on(t)[-1] == b"" for t in expected | {node_topic})


@pytest.mark.broker
def test_a_node_clears_its_own_older_unscoped_configs_and_leaves_another_sites(
    ha_node: Callable[..., EdgeService],
    publisher: Publisher,
    listen: Any,
    topics: Topics,
    broker: Any,
) -> None:
    """An upgraded node meets the retained configs it published before ids were scoped by site
    (`<ha>/sensor/<node>/…`, unique ids without the prefix): it clears those that read its
    site's topics, not those of another site's node with the same id; `ha-remove` likewise."""
    ha = f"{topics.prefix}/ha"
    node = f"edge-old-{time.time_ns()}"
    other = f"{topics.prefix}-other"

    def old(prefix: str, machine: str) -> tuple[str, bytes]:
        topic = f"{ha}/sensor/{node}/{machine}_state/config"
        config = {"name": "State", "unique_id": f"edgeloop:{node}:{machine}:state"}
        config["state_topic"] = Topics(prefix).legacy_machine_state(machine)  # an old node's
        return topic, encode(config)

    mine = [old(topics.prefix, "m01"), old(topics.prefix, "m02")]
    theirs = old(other, "m03")
    for topic, payload in [*mine, theirs]:
        publisher.publish(topic, payload, retain=True)
    live: Listener = listen(f"{ha}/#")
    assert live.wait_for(lambda m: len({t for t, p, _ in m if p}) == 3)
    svc = ha_node(ha_discovery=True, ha_prefix=ha, node=node)
    assert svc.wait_for_model(1)
    assert live.wait_for(lambda _: all(live.on(t)[-1:] == [b""] for t, _ in mine))
    assert svc.ha is not None and svc.ha.legacy_cleared == 2
    node_topic = node_discovery(node, topics.prefix, ha)[0][0]
    assert set(_retained(listen, ha)) == {theirs[0], node_topic}
    svc.stop()

    publisher.publish(mine[0][0], mine[0][1], retain=True)  # as if an old node ran again
    base = ["ha-remove", "--broker", broker.address, "--prefix", topics.prefix, "--node", node]
    assert main([*base, "--ha-prefix", ha, "--settle", "0.5"]) == 0
    assert set(_retained(listen, ha)) == {theirs[0]}


@pytest.mark.broker
def test_in_the_secure_profile_the_edge_user_may_announce_read_and_clear_its_configs(
    secure_broker: Any, secure_profile: Any, topics: Topics, models: EdgeModels, tmp_path: Path
) -> None:
    edge = secure_profile.env("edge")
    login = {
        "mqtt_user": "edge",
        "mqtt_password_file": Path(edge["EDGELOOP_MQTT_PASSWORD_FILE"]),
        "mqtt_ca_file": secure_profile.ca_file,
        "mqtt_login_per_connection": True,  # its shipper logs in as edge~batches
    }
    node = "edge"  # the identity's name is its node id: its HA level is its own
    reader = Listener(
        secure_broker.address,
        [f"homeassistant/sensor/{site_node_id(topics.prefix, node)}/+/config"],
        f"ha-reader-{time.time_ns()}",
        credentials=secure_profile.credentials("edge").for_("cli"),  # not the node's own login
    )
    sensor = Publisher(
        secure_broker.address, f"ha-sensor-{time.time_ns()}", secure_profile.credentials("sensor")
    )
    svc = EdgeService(
        build(
            EdgeConfig,
            broker=secure_broker.address,
            prefix=topics.prefix,
            node=node,
            public_key=models.public_key_path,
            state_dir=tmp_path / "state",
            dashboard=False,
            model=models.bundle_path,
            ha_discovery=True,
            **login,
        ),
        public_key=models.public_key,
    ).start()
    try:
        assert svc.wait_for_model(1)
        node_topic = node_discovery(node, topics.prefix)[0][0]  # sent after it subscribed
        assert reader.wait_for(lambda msgs: node_topic in {t for t, _, _ in msgs})
        x = models.x_test[0]
        sensor.publish(topics.window("m01"), encode_window(Window("m01", 0, time.time_ns(), x)))
        wanted = {t for t, _ in discovery(node, "m01", topics.prefix)}
        wanted.add(node_topic)
        assert reader.wait_for(lambda msgs: wanted <= {t for t, p, _ in msgs if p})
    finally:
        svc.stop()
        sensor.close()
    args = ["ha-remove", "--broker", secure_broker.address, "--prefix", topics.prefix]
    args += ["--node", node, "--mqtt-user", "edge", "--mqtt-password-file"]
    args += [edge["EDGELOOP_MQTT_PASSWORD_FILE"], "--mqtt-ca-file", str(secure_profile.ca_file)]
    try:
        assert main(args) == 0
        assert reader.wait_for(lambda _: all(reader.on(t)[-1:] == [b""] for t in wanted))
    finally:
        reader.close()
