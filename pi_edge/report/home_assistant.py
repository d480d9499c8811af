"""Home Assistant MQTT discovery: one HA device per machine, its sensors read the state topic.

Home Assistant finds entities by retained JSON configs on
`<ha_prefix>/<component>/<node_id>/<object_id>/config` (its "MQTT discovery"; ids from
`[a-zA-Z0-9_-]`). Per machine a node publishes four `sensor` configs — state, class, confidence
(%), drift — that read the machine's retained `{prefix}/machines/{m}/state` JSON with a
`value_template`, and one config for the node itself (its status), which is the machines'
`via_device`. Every entity is available while the node's retained status says `online` (its
Last Will says `offline`). An empty retained payload on a config topic removes the entity.

`discovery()` and `node_discovery()` are pure: ids in, (topic, config) pairs out. `HaDiscovery`
publishes them (paho, QoS 1, retained); `remove()` is the shell behind `pi_edge ha-remove`.

>>> pairs = discovery("pi-1", "m01", "edgeloop/v1")
>>> [t for t, _ in pairs]  # doctest: +NORMALIZE_WHITESPACE
['homeassistant/sensor/pi-1/m01_state/config', 'homeassistant/sensor/pi-1/m01_class/config',
 'homeassistant/sensor/pi-1/m01_confidence/config', 'homeassistant/sensor/pi-1/m01_drift/config']
>>> cfg = pairs[2][1]
>>> cfg["unique_id"], cfg["state_topic"], cfg["unit_of_measurement"], cfg["state_class"]
('edgeloop:pi-1:m01:confidence', 'edgeloop/v1/machines/m01/state', '%', 'measurement')
>>> cfg["device"]["identifiers"], cfg["device"]["via_device"]
(['edgeloop:pi-1:m01'], 'edgeloop:pi-1')
>>> cfg["availability_topic"]
'edgeloop/v1/nodes/pi-1/status'
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Iterable
from typing import Any

from protocol import Topics, check_id

from ..errors import EdgeError

__all__ = [
    "DEFAULT_HA_PREFIX",
    "FIELDS",
    "HaDiscovery",
    "check_ha_prefix",
    "discovery",
    "encode",
    "node_discovery",
    "object_id",
    "remove",
]

log = logging.getLogger(__name__)

DEFAULT_HA_PREFIX = "homeassistant"
MAX_CONFIGS = 100_000  # retained configs `ha-remove` collects at most
_HA_ID = re.compile(r"[A-Za-z0-9_-]+")
_AVAILABLE = "{{ 'online' if value_json.state == 'online' else 'offline' }}"

# field -> (entity name, value_template, extra config keys)
FIELDS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "state": ("State", "{{ value_json.state }}", {"icon": "mdi:state-machine"}),
    "class": ("Class", "{{ value_json['class'] }}", {"icon": "mdi:tag"}),
    "confidence": (
        "Confidence",
        "{{ (value_json.confidence * 100) | round(1) if value_json.confidence is number "
        "else None }}",
        {"unit_of_measurement": "%", "state_class": "measurement", "icon": "mdi:percent"},
    ),
    "drift": ("Drift", "{{ value_json.drift }}", {"icon": "mdi:chart-bell-curve"}),
}


def check_ha_prefix(value: str) -> str:
    """`value` if it is usable as HA's discovery prefix (topic levels, no wildcards).

    >>> check_ha_prefix("homeassistant")
    'homeassistant'
    >>> check_ha_prefix("ha/#")
    Traceback (most recent call last):
    ...
    ValueError: 'ha/#' is not a discovery prefix; use topic levels without '+', '#' or empty ...
    """
    levels = value.split("/")
    if not value or len(value) > 128 or any(not lv or "+" in lv or "#" in lv for lv in levels):
        raise ValueError(
            f"{value!r} is not a discovery prefix; use topic levels without '+', '#' or empty "
            "levels, as set in Home Assistant's MQTT options (default 'homeassistant')"
        )
    return value


def object_id(value: str) -> str:
    """`value` (an edgeloop id) as an HA topic id: as is, or with '.' replaced and a hash added.

    edgeloop ids may hold '.', HA's may not; the hash keeps 'm.1' and 'm_1' apart.

    >>> object_id("m01"), object_id("press.3")
    ('m01', 'press_3_87c8d1')
    """
    check_id(value, "id")
    if _HA_ID.fullmatch(value):
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:6]
    return f"{value.replace('.', '_')}_{digest}"


def _origin(sw_version: str | None) -> dict[str, str]:
    origin = {"name": "edgeloop"}
    if sw_version:
        origin["sw_version"] = sw_version
    return origin


def node_discovery(
    node: str,
    prefix: str,
    ha_prefix: str = DEFAULT_HA_PREFIX,
    *,
    sw_version: str | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """The node's own device (the machines' `via_device`) with one sensor: its status.

    >>> [(t, c["value_template"]) for t, c in node_discovery("pi-1", "edgeloop/v1")]
    [('homeassistant/sensor/pi-1/status/config', '{{ value_json.state }}')]
    """
    topics = Topics(prefix)
    device: dict[str, Any] = {
        "identifiers": [f"edgeloop:{check_id(node, 'node id')}"],
        "name": f"edgeloop node {node}",
        "manufacturer": "edgeloop",
        "model": "pi_edge node",
    }
    if sw_version:
        device["sw_version"] = sw_version
    config: dict[str, Any] = {
        "name": "Status",
        "unique_id": f"edgeloop:{node}:status",
        "state_topic": topics.status(node),
        "value_template": "{{ value_json.state }}",
        "json_attributes_topic": topics.status(node),
        "icon": "mdi:server-network",
        "device": device,
        "origin": _origin(sw_version),
    }
    return [(f"{check_ha_prefix(ha_prefix)}/sensor/{object_id(node)}/status/config", config)]


def discovery(
    node: str,
    machine: str,
    prefix: str,
    ha_prefix: str = DEFAULT_HA_PREFIX,
    *,
    sw_version: str | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """The discovery configs of `machine` as served by `node`: one per sensor in FIELDS.

    Topic `<ha_prefix>/sensor/<node>/<machine>_<field>/config`; unique ids
    `edgeloop:<node>:<machine>:<field>`, stable across restarts; device `edgeloop:<node>:<machine>`.
    """
    topics = Topics(prefix)
    check_ha_prefix(ha_prefix)
    check_id(node, "node id")
    state = topics.machine_state(machine)
    device: dict[str, Any] = {
        "identifiers": [f"edgeloop:{node}:{machine}"],
        "name": f"{machine}",
        "manufacturer": "edgeloop",
        "model": "machine monitored by pi_edge",
        "via_device": f"edgeloop:{node}",
    }
    out: list[tuple[str, dict[str, Any]]] = []
    for field, (name, template, extra) in FIELDS.items():
        config: dict[str, Any] = {
            "name": name,
            "unique_id": f"edgeloop:{node}:{machine}:{field}",
            "state_topic": state,
            "value_template": template,
            "availability_topic": topics.status(node),
            "availability_template": _AVAILABLE,
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": device,
            "origin": _origin(sw_version),
            **extra,
        }
        if field == "state":  # since, model version, ts: shown as the state's attributes
            config["json_attributes_topic"] = state
        topic = f"{ha_prefix}/sensor/{object_id(node)}/{object_id(machine)}_{field}/config"
        out.append((topic, config))
    return out


def encode(config: dict[str, Any]) -> bytes:
    """A config as the compact JSON HA reads.

    >>> encode({"b": 1, "a": "x"})
    b'{"a":"x","b":1}'
    """
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


class HaDiscovery:
    """The publishing side inside a running node.

    `publish_node` on each (re)connect (paho thread); `machine_seen` when the worker first meets
    a machine (once per machine, bounded by the machine cap); `request_republish` when
    `<ha_prefix>/status` says `online` (paho thread: only sets a flag); `pump` from the worker
    loop does the re-publishing of every machine it still tracks.
    """

    def __init__(self, node: str, prefix: str, ha_prefix: str, sw_version: str) -> None:
        self.node = node
        self.prefix = prefix
        self.ha_prefix = check_ha_prefix(ha_prefix)
        self.sw_version = sw_version
        self.birth_topic = f"{ha_prefix}/status"
        self._republish = threading.Event()

    def _publish(self, client: Any, pairs: Iterable[tuple[str, dict[str, Any]]]) -> None:
        if client is None:
            return
        for topic, config in pairs:
            client.publish(topic, encode(config), qos=1, retain=True)

    def publish_node(self, client: Any) -> None:
        self._publish(
            client,
            node_discovery(self.node, self.prefix, self.ha_prefix, sw_version=self.sw_version),
        )

    def machine_seen(self, client: Any, machine: str) -> None:
        self._publish(client, self.configs(machine))

    def configs(self, machine: str) -> list[tuple[str, dict[str, Any]]]:
        return discovery(
            self.node, machine, self.prefix, self.ha_prefix, sw_version=self.sw_version
        )

    def on_birth(self, payload: bytes) -> None:
        """HA's birth/will message: `online` asks for every config again (handled by `pump`)."""
        if payload.strip() == b"online":
            self._republish.set()

    def pump(self, client: Any, machines: Iterable[str]) -> int:
        """If HA came online since the last call: publish the node's and `machines`' configs."""
        if not self._republish.is_set():
            return 0
        self._republish.clear()
        self.publish_node(client)
        n = 0
        for machine in list(machines):
            self.machine_seen(client, machine)
            n += 1
        log.info("Home Assistant is online: re-published discovery for %d machine(s)", n)
        return n


def remove(
    client: Any,
    node: str,
    ha_prefix: str,
    machines: tuple[str, ...] | None,
    prefix: str,
    *,
    settle_s: float = 1.0,
    timeout: float = 10.0,
) -> list[str]:
    """Clear `node`'s discovery configs (empty retained payloads); returns the topics cleared.

    `machines` None: every retained config under `<ha_prefix>/sensor/<node>/` (the node's own
    too), found by subscribing and collecting until nothing new came for `settle_s`. Otherwise:
    exactly those machines' configs (computed, not looked up). `client` is connected, its loop
    running; its `on_message`/`on_subscribe` are replaced.
    """
    if machines is not None:
        topics = [t for m in machines for t, _ in discovery(node, m, prefix, ha_prefix)]
    else:
        topics = _retained_configs(client, node, ha_prefix, settle_s, timeout)
    for topic in topics:
        info = client.publish(topic, b"", qos=1, retain=True)
        info.wait_for_publish(timeout)
    return topics


def _retained_configs(
    client: Any, node: str, ha_prefix: str, settle_s: float, timeout: float
) -> list[str]:
    pattern = f"{check_ha_prefix(ha_prefix)}/sensor/{object_id(node)}/+/config"
    found: dict[str, None] = {}
    lock = threading.Lock()
    last = [time.monotonic()]
    subscribed = threading.Event()

    def on_message(c: Any, userdata: Any, msg: Any) -> None:
        if msg.retain and msg.payload and msg.topic.endswith("/config"):
            with lock:
                if len(found) < MAX_CONFIGS:
                    found[msg.topic] = None
                last[0] = time.monotonic()

    def on_subscribe(*args: Any) -> None:
        last[0] = time.monotonic()
        subscribed.set()

    client.on_message = on_message
    client.on_subscribe = on_subscribe
    client.subscribe(pattern, qos=1)
    if not subscribed.wait(timeout):
        raise EdgeError(
            f"the broker did not confirm the subscription to {pattern} within {timeout:g} s; "
            "check that this user may read it (secure profile: the edge role may)"
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with lock:
            quiet = time.monotonic() - last[0]
        if quiet >= settle_s:
            break
        time.sleep(min(0.05, settle_s))
    client.unsubscribe(pattern)
    with lock:
        return list(found)
