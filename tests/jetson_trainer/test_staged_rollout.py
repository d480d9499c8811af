"""Staged rollout on a real broker: a trainer with a canary group, a real pi_edge node in that
group and one outside it, real signed TFLite bundles. A new version reaches the canary first,
every node only after the canary's health watch passed; a version the canary rolls back never
reaches model/current, and the canary gets the last good model back under a new version."""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jetson_trainer.build.keys import load_private_key
from jetson_trainer.daemon.serve import ServeConfig, TrainerDaemon
from nodekit.mqtt import connect, make_client
from nodekit.settings import build
from pi_edge import EdgeConfig, EdgeService
from protocol import Topics, Window, decode_bundle, encode_bundle, encode_window, load_public_key
from protocol.node_command import NodeCommand
from scripts.broker import Broker
from sensor_sim.physics import generate

from .conftest import Trained

pytestmark = [pytest.mark.broker, pytest.mark.tensorflow]

GROUP = "canary"
MACHINES = ("m01", "m02", "m03", "m04")


def _wait(cond: Callable[[], bool], what: str, timeout: float = 20.0) -> float:
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.05)
    return time.monotonic() - start


def _versions(trained: Trained, models: Path, site: str) -> dict[int, bytes]:
    """v0001 and its child v0002 (the same network) for `site` on disk; both raw bundles."""
    made = decode_bundle(trained.bundle.read_bytes(), load_public_key(trained.public_key))
    sign = load_private_key(trained.private_key).sign
    out: dict[int, bytes] = {}
    for version, parent in ((1, None), (2, 1)):
        d = models / f"v{version:04d}"
        shutil.copytree(trained.out, d)
        m = dataclasses.replace(made.manifest, version=version, parent=parent, site=site)
        out[version] = encode_bundle(m, made.model, sign)
        (d / "model.bundle").write_bytes(out[version])
        (d / "manifest.json").write_text(json.dumps(m.to_dict()))
        (d / "model_card.md").unlink(missing_ok=True)
    return out


class Watcher:
    """Records the version of every bundle seen on some topics, in order."""

    def __init__(self, broker: Broker, key: bytes, topics: list[str]) -> None:
        self.seen: dict[str, list[int]] = {t: [] for t in topics}
        self._lock = threading.Lock()
        self._client = make_client(f"watch-{time.time_ns()}")
        self._client.on_connect = lambda c, *a: c.subscribe([(t, 1) for t in topics])
        self._client.on_message = self._on_message
        self._key = key
        connect(self._client, broker.address)
        self._client.loop_start()
        _wait(self._client.is_connected, "the watcher connected", 10)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        if msg.payload:
            with self._lock:
                self.seen[msg.topic].append(decode_bundle(msg.payload, self._key).manifest.version)

    def on(self, topic: str) -> list[int]:
        with self._lock:
            return list(self.seen[topic])

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


@contextmanager
def _feeder(broker: Broker, topics: Topics, rate: float = 200.0) -> Iterator[None]:
    """Windows of the original regime from four machines, every 4th labeled, until the end."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 2000)
    x = generate(y, rng, "infer")
    client = make_client(f"feed-{time.time_ns()}")
    connect(client, broker.address)
    client.loop_start()
    _wait(client.is_connected, "the feeder connected", 10)
    stop = threading.Event()

    def run() -> None:
        sent = 0
        while not stop.wait(0.05):
            for _ in range(round(rate * 0.05)):
                i = sent % len(y)
                machine = MACHINES[sent % len(MACHINES)]
                label = int(y[i]) if sent % 4 == 0 else None
                w = Window(machine, sent, time.time_ns(), x[i], label)
                client.publish(topics.window(machine), encode_window(w), qos=0)
                sent += 1

    thread = threading.Thread(target=run, name="feeder", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
        client.loop_stop()
        client.disconnect()


def _node(
    trained: Trained, broker: Broker, topics: Topics, tmp: Path, name: str, **kw: Any
) -> EdgeService:
    config = build(
        EdgeConfig,
        broker=broker.address,
        prefix=topics.prefix,
        node=name,
        public_key=trained.public_key,
        state_dir=tmp / name,
        dashboard=False,
        status_interval_s=0.3,
        **kw,
    )
    return EdgeService(config, public_key=load_public_key(trained.public_key))


def _daemon(
    trained: Trained, topics: Topics, broker: Broker, tmp: Path, watch_s: float
) -> TrainerDaemon:
    return TrainerDaemon(
        ServeConfig(
            broker=broker.address,
            prefix=topics.prefix,
            store=tmp / "trainer",
            private_key=trained.private_key,
            models=tmp / "models",
            client_id=f"trainer-canary-{time.time_ns()}",
            dashboard=False,
            tick_s=0.1,
            canary_groups=(GROUP,),
            canary_watch_s=watch_s,
        )
    )


def _serve(daemon: TrainerDaemon) -> TrainerDaemon:
    """The daemon's policy thread (daemon.stop() ends and joins it)."""
    return daemon.start_policy()


def _health(svc: EdgeService) -> dict[str, Any]:
    health: dict[str, Any] = svc.models.health_detail()["model_health"]
    return health


def test_a_new_version_reaches_the_canary_first_and_every_node_after_its_watch_passed(
    trained: Trained, broker: Broker, topics: Topics, tmp_path: Path
) -> None:
    bundles = _versions(trained, tmp_path / "models", topics.prefix)
    key = load_public_key(trained.public_key)
    group_topic = topics.model_group(GROUP)
    watcher = Watcher(broker, key, [topics.model_current, group_topic])
    pub = make_client(f"old-trainer-{time.time_ns()}")
    connect(pub, broker.address)
    pub.loop_start()
    _wait(pub.is_connected, "the test client connected", 10)
    # what the trainer promoted before: v1 on model/current
    pub.publish(topics.model_current, bundles[1], qos=1, retain=True).wait_for_publish(5)
    canary = _node(trained, broker, topics, tmp_path, "pi-canary", rollout_group=GROUP, watch_s=4.0)
    plain = _node(trained, broker, topics, tmp_path, "pi-plain", watch_s=4.0)
    daemon = _daemon(trained, topics, broker, tmp_path, watch_s=60.0)
    try:
        with canary, plain, _feeder(broker, topics):
            assert canary.wait_for_model(1, 20) and plain.wait_for_model(1, 20)
            assert canary.status().detail["rollout_group"] == GROUP
            assert "rollout_group" not in plain.status().detail
            _wait(lambda: _health(canary)["serving"]["labeled"] >= 40, "the canary's baseline")

            daemon.start()  # its newest version, v2, goes to the canary group only
            offered = time.monotonic()
            _serve(daemon)
            assert canary.wait_for_model(2, 20), "the canary did not get v2 from its group"
            on_canary = time.monotonic() - offered
            assert _health(canary)["watching"] == 2
            samples: list[tuple[str, int | None]] = []

            def promoted() -> bool:
                phase = daemon.status().detail["rollout"]["phase"]
                samples.append((phase, plain.model_version))
                return plain.model_version == 2

            _wait(promoted, "the plain node got v2", timeout=30)
            on_all = time.monotonic() - offered
            # while v2 was on the canary only, the plain node kept v1 and model/current had v1
            assert ("canary", 1) in samples and ("canary", 2) not in samples
            rollout = daemon.status().detail["rollout"]
            health = _health(canary)
            print(
                f"\noffer → canary serving v2: {on_canary:.2f} s; offer → plain node serving "
                f"v2: {on_all:.2f} s (canary watch {health['watch_s']} s, verdict "
                f"{health['verdict']}); rollout: {rollout['reason']}"
            )
            assert health["watched"] == 2 and health["verdict"] in ("passed", "inconclusive")
            assert rollout["phase"] == "promoted" and rollout["version"] == 2
            assert rollout["canaries"] == ["pi-canary"] and rollout["current_version"] == 2
            assert "finished its health watch" in rollout["reason"]  # not the 60 s canary watch
            assert on_all < 60
            assert watcher.on(topics.model_current) == [1, 2]
            assert watcher.on(group_topic) == [2]
            assert canary.model_version == 2
    finally:
        daemon.stop()
        for t in (topics.model_current, group_topic):
            pub.publish(t, b"", qos=1, retain=True).wait_for_publish(5)
        pub.loop_stop()
        pub.disconnect()
        watcher.close()


def test_a_version_the_canary_rolls_back_never_reaches_model_current(
    trained: Trained, broker: Broker, topics: Topics, tmp_path: Path
) -> None:
    bundles = _versions(trained, tmp_path / "models", topics.prefix)
    key = load_public_key(trained.public_key)
    group_topic = topics.model_group(GROUP)
    watcher = Watcher(broker, key, [topics.model_current, group_topic])
    pub = make_client(f"op-{time.time_ns()}")
    connect(pub, broker.address)
    pub.loop_start()
    _wait(pub.is_connected, "the test client connected", 10)
    pub.publish(topics.model_current, bundles[1], qos=1, retain=True).wait_for_publish(5)
    canary = _node(
        trained, broker, topics, tmp_path, "pi-canary", rollout_group=GROUP, watch_s=60.0
    )
    plain = _node(trained, broker, topics, tmp_path, "pi-plain", watch_s=60.0)
    daemon = _daemon(trained, topics, broker, tmp_path, watch_s=60.0)
    try:
        with canary, plain:
            assert canary.wait_for_model(1, 20) and plain.wait_for_model(1, 20)
            daemon.start()
            _serve(daemon)
            assert canary.wait_for_model(2, 20)
            _wait(lambda: daemon.status().detail["rollout"]["canaries"] == ["pi-canary"], "seen")
            # the canary rolls v2 back (an operator here; health.py does the same by itself)
            command = NodeCommand("rollback", id="op@canary", from_version=2).to_json()
            pub.publish(topics.node_command("pi-canary"), command, qos=1).wait_for_publish(5)
            took = _wait(lambda: watcher.on(group_topic)[-1:] == [3], "v1 re-issued as v3")
            print(f"\ncanary rollback command → last good (v1 as v3) on the group: {took:.2f} s")
            assert canary.wait_for_model(3, 20), "the canary did not take the re-issued v3"
            detail = daemon.status().detail
            assert detail["bad_models"] == [2]
            rollout = detail["rollout"]
            assert (rollout["version"], rollout["phase"]) == (3, "canary")
            assert rollout["current_version"] is None  # this trainer promoted nothing yet
            (ended,) = rollout["ended"]
            assert ended["version"] == 2 and ended["phase"] == "bad"
            assert "pi-canary rolled back from v2" in ended["reason"]
            time.sleep(1.0)  # several policy ticks: v2 stays off model/current
            assert watcher.on(topics.model_current) == [1]
            assert plain.model_version == 1
            assert watcher.on(group_topic) == [2, 3]
    finally:
        daemon.stop()
        for t in (topics.model_current, group_topic):
            pub.publish(t, b"", qos=1, retain=True).wait_for_publish(5)
        pub.loop_stop()
        pub.disconnect()
        watcher.close()
