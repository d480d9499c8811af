"""Home Assistant MQTT discovery: one HA device per machine, its sensors read the state topic.

Home Assistant finds entities by retained JSON configs on
`<ha_prefix>/<component>/<node_id>/<object_id>/config` (its "MQTT discovery"; ids from
`[a-zA-Z0-9_-]`). Per machine a node publishes four `sensor` configs — state, class, confidence
(%), drift — that read the machine's retained `{prefix}/machines/{m}/state` JSON with a
`value_template`, and one config for the node itself (its status), which is the machines'
`via_device`. Every entity is available while the node's retained status says `online` (its
Last Will says `offline`). An empty retained payload on a config topic removes the entity.

Everything HA keys on is scoped by the site, i.e. the topic prefix, so that two sites (two
prefixes) on one Home Assistant never collide, even with the same node and machine ids: the
topic's node level is `site_node_id(prefix, node)`, unique ids and device identifiers start with
`edgeloop:<prefix>:<node>`, and each entity asks for the entity id
`sensor.<prefix>_<machine>_<field>` (slugged; `object_id` for HA before 2025.10,
`default_entity_id` after). Configs of an older node (topic level `<node>`, ids without the
prefix) are `legacy`: a node clears its own when it meets them (`HaDiscovery.on_legacy`).

`discovery()` and `node_discovery()` are pure: ids in, (topic, config) pairs out. `HaDiscovery`
publishes them (paho, QoS 1, retained); `remove()` is the shell behind `pi_edge ha-remove`.

>>> pairs = discovery("pi-1", "m01", "edgeloop/v1")
>>> [t for t, _ in pairs]  # doctest: +NORMALIZE_WHITESPACE
['homeassistant/sensor/edgeloop_v1_pi-1_03ef0a/m01_state/config',
 'homeassistant/sensor/edgeloop_v1_pi-1_03ef0a/m01_class/config',
 'homeassistant/sensor/edgeloop_v1_pi-1_03ef0a/m01_confidence/config',
 'homeassistant/sensor/edgeloop_v1_pi-1_03ef0a/m01_drift/config']
>>> cfg = pairs[2][1]
>>> cfg["unique_id"], cfg["unit_of_measurement"], cfg["state_class"]
('edgeloop:edgeloop/v1:pi-1:m01:confidence', '%', 'measurement')
>>> cfg["state_topic"]  # the node's own retained state of the machine
'edgeloop/v1/machines/m01/state/pi-1'
>>> cfg["object_id"], cfg["default_entity_id"]
('edgeloop_v1_m01_confidence', 'sensor.edgeloop_v1_m01_confidence')
>>> cfg["device"]["identifiers"], cfg["device"]["via_device"]
(['edgeloop:edgeloop/v1:pi-1:m01'], 'edgeloop:edgeloop/v1:pi-1')
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
    "entity_slug",
    "is_site_config",
    "legacy_node_level",
    "node_discovery",
    "object_id",
    "remove",
    "site_node_id",
]

log = logging.getLogger(__name__)

DEFAULT_HA_PREFIX = "homeassistant"
MAX_CONFIGS = 100_000  # retained configs `ha-remove` collects at most
MAX_LEGACY = 4096  # legacy configs a node remembers to clear between two pumps
MAX_CONFIG_BYTES = 8192  # a config is ~700 bytes; a bigger retained one is not ours
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


def _topic_id(value: str) -> str:
    """`value` as an HA topic id: as is, or with every other character replaced and a hash
    of the original added (so that 'm.1' and 'm_1' stay apart)."""
    if _HA_ID.fullmatch(value):
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:6]
    return f"{re.sub(r'[^A-Za-z0-9_-]', '_', value)}_{digest}"


def object_id(value: str) -> str:
    """`value` (an edgeloop id) as an HA topic id: as is, or with '.' replaced and a hash added.

    edgeloop ids may hold '.', HA's may not; the hash keeps 'm.1' and 'm_1' apart.

    >>> object_id("m01"), object_id("press.3")
    ('m01', 'press_3_87c8d1')
    """
    return _topic_id(check_id(value, "id"))


def site_node_id(prefix: str, node: str) -> str:
    """The topic level of `node`'s configs: its site (the prefix) and its id, collision-free.

    >>> site_node_id("edgeloop/v1", "pi-1")
    'edgeloop_v1_pi-1_03ef0a'
    >>> site_node_id("site-a/edgeloop", "pi-1") != site_node_id("site-b/edgeloop", "pi-1")
    True
    """
    return _topic_id(f"{prefix}/{check_id(node, 'node id')}")


def legacy_node_level(node: str) -> str:
    """The topic level an older node (ids not scoped by site) used: the node id alone."""
    return object_id(node)


def entity_slug(*parts: str) -> str:
    """The entity id (after `sensor.`) an entity asks for: its parts as HA slugs them.

    Lower case, runs of anything but a-z 0-9 become one '_', none at the ends (HA refuses '__').

    >>> entity_slug("Site-A/edgeloop", "press.3", "state")
    'site_a_edgeloop_press_3_state'
    """
    slug = re.sub(r"[^a-z0-9]+", "_", "_".join(parts).lower()).strip("_")
    return slug or "edgeloop"


def _origin(sw_version: str | None) -> dict[str, str]:
    origin = {"name": "edgeloop"}
    if sw_version:
        origin["sw_version"] = sw_version
    return origin


def _scoped(prefix: str, *ids: str) -> str:
    """A unique id or device identifier: `edgeloop:<prefix>:<ids…>`. Ids hold no ':', so the
    prefix is everything between the first ':' and the last len(ids)."""
    return ":".join(("edgeloop", prefix, *ids))


def node_discovery(
    node: str,
    prefix: str,
    ha_prefix: str = DEFAULT_HA_PREFIX,
    *,
    sw_version: str | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """The node's own device (the machines' `via_device`) with one sensor: its status.

    >>> [(topic, config)] = node_discovery("pi-1", "edgeloop/v1")
    >>> topic, config["unique_id"], config["default_entity_id"]
    ('homeassistant/sensor/edgeloop_v1_pi-1_03ef0a/status/config', \
'edgeloop:edgeloop/v1:pi-1:status', 'sensor.edgeloop_v1_pi_1_status')
    """
    topics = Topics(prefix)
    device: dict[str, Any] = {
        "identifiers": [_scoped(prefix, check_id(node, "node id"))],
        "name": f"edgeloop node {node}",
        "manufacturer": "edgeloop",
        "model": "pi_edge node",
    }
    if sw_version:
        device["sw_version"] = sw_version
    slug = entity_slug(prefix, node, "status")
    config: dict[str, Any] = {
        "name": "Status",
        "unique_id": _scoped(prefix, node, "status"),
        "object_id": slug,
        "default_entity_id": f"sensor.{slug}",
        "state_topic": topics.status(node),
        "value_template": "{{ value_json.state }}",
        "json_attributes_topic": topics.status(node),
        "icon": "mdi:server-network",
        "device": device,
        "origin": _origin(sw_version),
    }
    level = site_node_id(prefix, node)
    return [(f"{check_ha_prefix(ha_prefix)}/sensor/{level}/status/config", config)]


def discovery(
    node: str,
    machine: str,
    prefix: str,
    ha_prefix: str = DEFAULT_HA_PREFIX,
    *,
    sw_version: str | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """The discovery configs of `machine` as served by `node` of site `prefix`: one per sensor
    in FIELDS.

    Topic `<ha_prefix>/sensor/<site_node_id>/<machine>_<field>/config`; unique ids
    `edgeloop:<prefix>:<node>:<machine>:<field>`, stable across restarts; device
    `edgeloop:<prefix>:<node>:<machine>`; entity id `sensor.<prefix>_<machine>_<field>`, slugged.
    """
    topics = Topics(prefix)
    check_ha_prefix(ha_prefix)
    check_id(node, "node id")
    state = topics.machine_state(machine, node)
    device: dict[str, Any] = {
        "identifiers": [_scoped(prefix, node, machine)],
        "name": f"{machine}",
        "manufacturer": "edgeloop",
        "model": "machine monitored by pi_edge",
        "via_device": _scoped(prefix, node),
    }
    level = site_node_id(prefix, node)
    out: list[tuple[str, dict[str, Any]]] = []
    for field, (name, template, extra) in FIELDS.items():
        slug = entity_slug(prefix, machine, field)
        config: dict[str, Any] = {
            "name": name,
            "unique_id": _scoped(prefix, node, machine, field),
            "object_id": slug,  # Home Assistant before 2025.10 reads this one,
            "default_entity_id": f"sensor.{slug}",  # later ones this one
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
        topic = f"{ha_prefix}/sensor/{level}/{object_id(machine)}_{field}/config"
        out.append((topic, config))
    return out


def encode(config: dict[str, Any]) -> bytes:
    """A config as the compact JSON HA reads.

    >>> encode({"b": 1, "a": "x"})
    b'{"a":"x","b":1}'
    """
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def is_site_config(payload: bytes, prefix: str) -> bool:
    """Whether a retained config reads a topic of site `prefix` (so it is that site's to clear).

    >>> is_site_config(b'{"state_topic":"a/v1/machines/m01/state/pi-1"}', "a/v1")
    True
    >>> is_site_config(b'{"state_topic":"a/v1/machines/m01/state"}', "a/v1")  # an older node's
    True
    >>> [is_site_config(b'{"state_topic":"a/v1/machines/m01/state"}', p) for p in ("a", "a/v")]
    [False, False]
    >>> [is_site_config(p, "a/v1") for p in (b'{"state_topic":"a/v1/x"}', b"[]", b"", b"{")]
    [False, False, False, False]
    """
    if not payload or len(payload) > MAX_CONFIG_BYTES:
        return False
    try:
        config = json.loads(payload)
    except (ValueError, RecursionError):
        return False
    state = config.get("state_topic") if isinstance(config, dict) else None
    if not isinstance(state, str) or not state.startswith(f"{prefix}/"):
        return False
    parts = state[len(prefix) + 1 :].split("/")  # machines/<m>/state[/<n>], nodes/<n>/status
    if len(parts) == 4 and parts[:1] == ["machines"] and parts[2] == "state":
        return True
    return len(parts) == 3 and (parts[0], parts[2]) in {("machines", "state"), ("nodes", "status")}


class HaDiscovery:
    """The publishing side inside a running node.

    `publish_node` on each (re)connect (paho thread); `machine_seen` when the worker first meets
    a machine (once per machine, bounded by the machine cap); `machine_gone` when the worker
    forgets it (evicted by the cap, or given to another fleet member); `request_republish` when
    `<ha_prefix>/status` says `online` (paho thread: only sets a flag); `on_legacy` when a
    retained config of this node's older, unscoped layout arrives (paho thread: remembers the
    topic); `pump` from the worker loop re-publishes every machine it still tracks and clears
    the legacy configs.
    """

    def __init__(self, node: str, prefix: str, ha_prefix: str, sw_version: str) -> None:
        self.node = node
        self.prefix = prefix
        self.ha_prefix = check_ha_prefix(ha_prefix)
        self.sw_version = sw_version
        self.birth_topic = f"{ha_prefix}/status"
        self.legacy_filter = f"{ha_prefix}/sensor/{legacy_node_level(node)}/+/config"
        self._legacy_head = self.legacy_filter[: -len("+/config")]
        self._republish = threading.Event()
        self._legacy: dict[str, None] = {}
        self._legacy_lock = threading.Lock()
        self.legacy_cleared = 0
        self.cleared = 0  # configs cleared for machines evicted or given away

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

    def machine_gone(self, client: Any, machine: str) -> int:
        """The node no longer serves `machine` (the machine cap evicted it, or another fleet
        member took it): its configs are cleared with empty retained payloads, so Home
        Assistant removes its entities and the broker keeps nothing of it. Returns how many."""
        if client is None:
            return 0
        topics = [topic for topic, _ in self.configs(machine)]
        for topic in topics:
            client.publish(topic, b"", qos=1, retain=True)
        self.cleared += len(topics)
        return len(topics)

    def configs(self, machine: str) -> list[tuple[str, dict[str, Any]]]:
        return discovery(
            self.node, machine, self.prefix, self.ha_prefix, sw_version=self.sw_version
        )

    def on_birth(self, payload: bytes) -> None:
        """HA's birth/will message: `online` asks for every config again (handled by `pump`)."""
        if payload.strip() == b"online":
            self._republish.set()

    def is_legacy(self, topic: str) -> bool:
        """Whether `topic` is under this node's older, unscoped config level."""
        return topic.startswith(self._legacy_head) and topic.endswith("/config")

    def on_legacy(self, topic: str, payload: bytes) -> None:
        """A config on this node's older level: remembered for `pump` to clear if it reads
        this site's topics (another site's node of the same name keeps its own)."""
        if is_site_config(payload, self.prefix):
            with self._legacy_lock:
                if len(self._legacy) < MAX_LEGACY:
                    self._legacy[topic] = None
            self._republish.set()  # wakes `pump`, which also re-publishes the new configs

    def pump(self, client: Any, machines: Iterable[str]) -> int:
        """If HA came online (or legacy configs came) since the last call: clear the legacy
        configs, publish the node's and `machines`' configs; returns the machines published."""
        if not self._republish.is_set():
            return 0
        self._republish.clear()
        with self._legacy_lock:
            legacy, self._legacy = list(self._legacy), {}
        for topic in legacy:
            client.publish(topic, b"", qos=1, retain=True)
        if legacy:
            self.legacy_cleared += len(legacy)
            log.info(
                "cleared %d Home Assistant config(s) of this node's older, unscoped ids "
                "(%s…); its entities now have site-scoped ids",
                len(legacy),
                self._legacy_head,
            )
        self.publish_node(client)
        n = 0
        for machine in list(machines):
            self.machine_seen(client, machine)
            n += 1
        log.info("re-published Home Assistant discovery for %d machine(s)", n)
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

    `machines` None: every retained config of this site under `<ha_prefix>/sensor/<level>/`
    for both levels, `site_node_id` and an older node's unscoped one (the node's own config
    too), found by subscribing and collecting until nothing new came for `settle_s`. Otherwise:
    exactly those machines' configs (computed), and their older unscoped ones that are
    retained. `client` is connected, its loop running; its `on_message`/`on_subscribe` are
    replaced.
    """
    check_ha_prefix(ha_prefix)
    levels = [site_node_id(prefix, node), legacy_node_level(node)]
    found = _retained_configs(
        client, [f"{ha_prefix}/sensor/{lv}/+/config" for lv in levels], prefix, settle_s, timeout
    )
    if machines is not None:
        t = Topics(prefix)  # older configs name the state topic of before per-node topics
        states = {
            s for m in machines for s in (t.machine_state(m, node), t.legacy_machine_state(m))
        }
        computed = [t for m in machines for t, _ in discovery(node, m, prefix, ha_prefix)]
        legacy_head = f"{ha_prefix}/sensor/{levels[1]}/"
        topics = computed + [
            t for t, state in found.items() if t.startswith(legacy_head) and state in states
        ]
    else:
        topics = list(found)
    for topic in topics:
        info = client.publish(topic, b"", qos=1, retain=True)
        info.wait_for_publish(timeout)
    return topics


def _retained_configs(
    client: Any, patterns: list[str], prefix: str, settle_s: float, timeout: float
) -> dict[str, str]:
    """Retained configs on `patterns` that read site `prefix`'s topics: topic -> state topic."""
    found: dict[str, str] = {}
    lock = threading.Lock()
    last = [time.monotonic()]
    subscribed = threading.Event()

    def on_message(c: Any, userdata: Any, msg: Any) -> None:
        payload = bytes(msg.payload)
        if msg.retain and msg.topic.endswith("/config") and is_site_config(payload, prefix):
            with lock:
                if len(found) < MAX_CONFIGS:
                    found[msg.topic] = json.loads(payload)["state_topic"]
                last[0] = time.monotonic()

    def on_subscribe(*args: Any) -> None:
        last[0] = time.monotonic()
        subscribed.set()

    client.on_message = on_message
    client.on_subscribe = on_subscribe
    client.subscribe([(p, 1) for p in patterns])
    if not subscribed.wait(timeout):
        raise EdgeError(
            f"the broker did not confirm the subscription to {', '.join(patterns)} within "
            f"{timeout:g} s; check that this user may read it (secure profile: the edge role may)"
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with lock:
            quiet = time.monotonic() - last[0]
        if quiet >= settle_s:
            break
        time.sleep(min(0.05, settle_s))
    client.unsubscribe(patterns)
    with lock:
        return dict(found)
