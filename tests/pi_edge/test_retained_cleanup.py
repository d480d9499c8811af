"""Bounded, cleaned state on the broker (issue 23, item 5), against a real Mosquitto.

An attacker (or a misconfigured sensor) sends windows under 500 made-up machine ids to a node
with Home Assistant discovery. Before, the node evicted those machines from its memory (the
machine cap) but left 2,005 retained HA configs and 500 retained machine states on the broker.
Now what the broker retains for the node is what it serves: the cap's machines, counted by
subscribing as any client would. A fleet member that gives machines away clears its HA configs
for them too (the new owner announces its own; the machine's state topic is the new owner's).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nodekit.settings import build
from pi_edge import EdgeConfig, EdgeService
from pi_edge.report.home_assistant import discovery, node_discovery
from protocol import Topics, Window, encode_window
from protocol.fleet import rendezvous_owner

from ._model import EdgeModels
from .conftest import Listener, Publisher

pytestmark = pytest.mark.broker


@pytest.fixture
def node(
    broker: Any, topics: Topics, models: EdgeModels, tmp_path: Path
) -> Iterator[Callable[..., EdgeService]]:
    made: list[EdgeService] = []

    def _make(name: str, **kw: Any) -> EdgeService:
        cfg = build(
            EdgeConfig,
            broker=broker.address,
            prefix=topics.prefix,
            node=name,
            public_key=models.public_key_path,
            state_dir=tmp_path / name,
            dashboard=False,
            status_interval_s=0.3,
            model=models.bundle_path,
            ha_discovery=True,
            ha_prefix=f"{topics.prefix}/ha",
            state_windows=1,  # each window's machine gets a retained state at once
            **kw,
        )
        svc = EdgeService(cfg, public_key=models.public_key)
        made.append(svc)
        return svc.start()

    yield _make
    for svc in made:
        svc.stop()


def _retained(listen: Callable[..., Listener], *filters: str, settle: float = 1.5) -> set[str]:
    """The topics the broker retains a message on under `filters`, as a new subscriber learns
    them: the retained messages it gets at once, then what the node still had queued (a
    payload sets a topic, an empty one clears it), until nothing new came for `settle` s."""
    reader = listen(*filters)
    last, count = time.monotonic(), -1
    while time.monotonic() - last < settle:
        time.sleep(0.1)
        if len(reader.messages) != count:
            count, last = len(reader.messages), time.monotonic()
    held: set[str] = set()
    for topic, payload, _ in list(reader.messages):
        if payload:
            held.add(topic)
        else:
            held.discard(topic)
    return held


def _subscribed(listen: Callable[..., Listener], svc: EdgeService, ha: str) -> None:
    """The node subscribed (it publishes its HA config right after subscribing, so once the
    broker has that, windows reach the node)."""
    topic = node_discovery(svc.config.node, svc.config.prefix, ha)[0][0]
    reader = listen(topic)
    assert reader.wait_for(lambda msgs: any(t == topic for t, _, _ in msgs)), "no node config"


def _send(pub: Publisher, topics: Topics, models: EdgeModels, machines: list[str]) -> None:
    for seq, m in enumerate(machines):
        x = models.x_test[seq % len(models.x_test)]
        pub.publish(topics.window(m), encode_window(Window(m, seq, time.time_ns(), x)))


def _classified(svc: EdgeService, n: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while svc.status().metrics.get("classified", 0) < n:
        status = svc.status()
        assert time.monotonic() < deadline, f"not {n} classified: {status.metrics} {status.errors}"
        time.sleep(0.1)


def _wait(cond: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.1)


def test_500_fake_machine_ids_leave_only_the_caps_retained_topics_on_the_broker(
    node: Callable[..., EdgeService],
    publisher: Publisher,
    listen: Callable[..., Listener],
    topics: Topics,
    models: EdgeModels,
) -> None:
    cap = 50
    ha = f"{topics.prefix}/ha"
    svc = node("edge-flood", max_machines=cap)
    assert svc.wait_for_model(1)
    _subscribed(listen, svc, ha)
    fake = [f"fake{i:04d}" for i in range(500)]
    _send(publisher, topics, models, fake)
    _classified(svc, 500)
    kept = [row.machine for row in svc.snapshot().machines]  # what the cap keeps
    assert len(kept) == cap and set(kept) <= set(fake[-2 * cap :])  # the newest, about
    configs = {t for m in kept for t, _ in discovery(svc.config.node, m, topics.prefix, ha)}
    configs.add(node_discovery(svc.config.node, topics.prefix, ha)[0][0])
    states = {topics.machine_state(m, svc.config.node) for m in kept}

    retained_states = _retained(listen, topics.machine_states())
    retained_configs = _retained(listen, f"{ha}/#")
    print(
        f"after 500 fake ids with a cap of {cap}: {len(retained_states)} retained states, "
        f"{len(retained_configs)} retained HA configs (were 500 and 2001 before the fix); "
        f"{svc.retained_cleared} retained topics cleared"
    )
    assert retained_states == states
    assert retained_configs == configs
    status = svc.status()
    assert status.metrics["machines_evicted"] == 500 - cap
    assert status.metrics["retained_cleared"] == (500 - cap) * 5  # 4 configs + the state
    assert svc.ha is not None and svc.ha.cleared == (500 - cap) * 4

    # an evicted machine that comes back is announced again (its clearing went first)
    _send(publisher, topics, models, [fake[0]])
    back = {t for t, _ in discovery(svc.config.node, fake[0], topics.prefix, ha)}
    _classified(svc, 501)
    got = _retained(listen, f"{ha}/#")
    assert back <= got and len(got) == len(configs)  # it took the place of another
    assert topics.machine_state(fake[0], svc.config.node) in _retained(
        listen, topics.machine_states()
    )
    for topic in got | _retained(listen, topics.machine_states()):
        publisher.publish(topic, b"", retain=True)


def test_a_fleet_member_clears_the_ha_configs_of_machines_it_gives_away(
    node: Callable[..., EdgeService],
    publisher: Publisher,
    listen: Callable[..., Listener],
    topics: Topics,
    models: EdgeModels,
) -> None:
    ha = f"{topics.prefix}/ha"
    group = "line-clean"
    a = node("edge-a", fleet=group)
    assert a.wait_for_model(1)
    _subscribed(listen, a, ha)
    machines = [f"m{i:02d}" for i in range(24)]
    _send(publisher, topics, models, machines)
    _classified(a, len(machines))
    level_a = f"{ha}/sensor/{discovery('edge-a', 'm00', topics.prefix, ha)[0][0].split('/')[-3]}/"

    def configs_of_a() -> set[str]:
        return {t for t in _retained(listen, f"{ha}/#") if t.startswith(level_a)}

    assert len(configs_of_a()) == 4 * len(machines) + 1  # its own status config too

    b = node("edge-b", fleet=group)
    assert b.wait_for_model(1)
    members = ("edge-a", "edge-b")
    to_b = [m for m in machines if rendezvous_owner(m, members) == "edge-b"]
    stays = [m for m in machines if m not in to_b]
    assert to_b and stays
    _wait(lambda: a.retained_cleared >= 5 * len(to_b), what="a gave machines away")
    expected = {t for m in stays for t, _ in discovery("edge-a", m, topics.prefix, ha)}
    expected.add(node_discovery("edge-a", topics.prefix, ha)[0][0])
    assert configs_of_a() == expected
    # a clears its own state of each machine it gave away (the new owner keeps its own)
    states = _retained(listen, topics.machine_states())
    assert {t for t in states if t.endswith("/edge-a")} == {
        topics.machine_state(m, "edge-a") for m in stays
    }
    for topic in _retained(listen, f"{ha}/#") | states:
        publisher.publish(topic, b"", retain=True)


def test_sparkplug_devices_the_cap_evicts_die_and_only_the_caps_stay_alive(
    node: Callable[..., EdgeService],
    publisher: Publisher,
    listen: Callable[..., Listener],
    topics: Topics,
    models: EdgeModels,
) -> None:
    """Sparkplug retains nothing, but a host keeps a device alive until its DDEATH: each device
    the cap evicts gets one, so the host's view is bounded like the broker's."""
    cap, group = 5, f"grp-{time.time_ns() % 10**8}"
    births = listen(f"spBv1.0/{group}/DBIRTH/edge-spb/+")
    deaths = listen(f"spBv1.0/{group}/DDEATH/edge-spb/+")
    svc = node("edge-spb", max_machines=cap, sparkplug=group, sparkplug_silence_s=600.0)
    assert svc.wait_for_model(1)
    _subscribed(listen, svc, f"{topics.prefix}/ha")
    machines = [f"s{i:02d}" for i in range(20)]
    for m in machines:  # one at a time: each is born before the cap evicts it
        _send(publisher, topics, models, [m])
        _classified(svc, machines.index(m) + 1)
        assert births.wait_for(lambda msgs, m=m: any(t.endswith(f"/{m}") for t, _, _ in msgs))
    assert svc.sparkplug is not None
    _wait(lambda: len(svc.sparkplug.devices.alive()) == cap, what="the cap's devices alive")
    alive = set(svc.sparkplug.devices.alive())
    evicted = set(machines) - alive
    assert len(evicted) == len(machines) - cap
    assert deaths.wait_for(lambda msgs: {t.rsplit("/", 1)[1] for t, _, _ in msgs} >= evicted)
    time.sleep(0.5)
    assert {t.rsplit("/", 1)[1] for t, _, _ in deaths.messages} == evicted
