"""Issue 23, the trainer's side: a hostile client publishes the forged statuses of the issue's
table against a real trainer process on a real Mosquitto. The champion stays the champion (no
version marked bad, nothing re-issued), the model registry stays small, every version stays
within the manifest's range (the trainer can still publish), and a drift batch sent after the
flood is stored and acknowledged."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jetson_trainer.daemon.serve import ServeConfig, TrainerDaemon
from jetson_trainer.versions.registry import (
    MAX_VERSION,
    REGISTRY_NAME,
    ModelRecord,
    RegistryFile,
    parse_registry,
)
from nodekit.mqtt import connect, make_client
from protocol import Status, Topics, decode_bundle, load_public_key
from protocol.batch_ack import BatchAck
from protocol.drift_batch import DriftBatch, Kept, encode_batch
from protocol.window import Window
from scripts.broker import Broker
from tests.jetson_trainer.conftest import keypair  # noqa: F401 - the fixture

from ._kit import Kit, Nodes, retained, wait_until

pytestmark = [pytest.mark.broker]

FORGED = 100


def _rollback(version: int) -> dict[str, Any]:
    return {"from": version, "to": None, "reason": "forged", "ts": 1e9, "auto": True}


def _status(node: str, serving: int, rollbacks: list[Any]) -> bytes:
    return Status(
        node,
        "edge",
        "online",
        "0.1.0",
        model_version=serving,
        timestamp=time.time(),
        detail={"v": 1, "rollbacks": rollbacks},
    ).to_json()


class _Hostile:
    """A client that publishes (QoS 1, retained) and may listen to one topic."""

    def __init__(self, address: str, listen: str | None = None) -> None:
        self.got: list[bytes] = []
        self.ready = threading.Event()
        self.client: Any = make_client(f"hostile-{time.time_ns()}")

        def on_connect(c: Any, *args: Any) -> None:
            if listen is not None:
                c.subscribe(listen, qos=1)
            self.ready.set()  # publish only once connected (paho refuses before)

        self.client.on_connect = on_connect
        self.client.on_message = lambda c, u, msg: self.got.append(bytes(msg.payload))
        connect(self.client, address)
        self.client.loop_start()
        assert self.ready.wait(10)

    def publish(self, topic: str, payload: bytes, retain: bool = True) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _trainer_status(address: str, topics: Topics) -> dict[str, Any]:
    payload, _ = retained(address, topics.status("trainer-fault"))
    status: dict[str, Any] = json.loads(payload)
    return status


@pytest.mark.tensorflow
def test_forged_statuses_leave_the_champion_the_registry_and_the_intake_intact(
    kit: Kit, fault_broker: Broker, nodes: Nodes, site: Topics, tmp_path: Path
) -> None:
    address = fault_broker.address
    store = tmp_path / "trainer"
    nodes.trainer(address, store)
    payload, _ = retained(address, site.model_current, timeout=120)
    champion = decode_bundle(payload, load_public_key(kit.public_key)).manifest.version
    wait_until((store / REGISTRY_NAME).exists, 30, "the registry written")
    before = (store / REGISTRY_NAME).stat().st_size
    hostile = _Hostile(address)
    try:
        # a node that does not exist rolls the champion back (and v2, the champion)
        hostile.publish(
            site.status("ghost"), _status("ghost", 1, [_rollback(champion), _rollback(2)])
        )
        # the same, from the highest uint32 and from the manifest's highest version
        hostile.publish(
            site.status("ghost-max"),
            _status("ghost-max", 1, [_rollback(4294967295), _rollback(MAX_VERSION)]),
        )
        # 100 forged statuses under new node ids, each saying it serves the champion and rolled
        # it back (in the same status), with 8 rollbacks each
        for i in range(FORGED):
            node = f"forged-{i}"
            rollbacks = [_rollback(champion)] + [_rollback(1000 * i + k) for k in range(1, 8)]
            hostile.publish(site.status(node), _status(node, champion, rollbacks))
        # node B's status on node A's topic
        hostile.publish(site.status("pi-a"), _status("pi-b", champion, [_rollback(champion)]))

        def refused() -> bool:
            errors = _trainer_status(address, site).get("errors", {})
            return (
                errors.get("rollback_refused", 0) >= FORGED + 2
                and errors.get("status_refused", 0) >= 1
            )

        wait_until(refused, 60, "the trainer counting the forged rollbacks as refused")
        # the intake still stores and acknowledges a drift batch
        listener = _Hostile(address, listen=site.drift_acks("pi-fault"))
        try:
            window = Window("m01", 1, 1, np.zeros((60, 4), np.float32), label=0)
            batch = DriftBatch(b"f" * 16, "pi-fault", champion, (Kept(window, "labeled"),))
            listener.publish(site.drift_batches("pi-fault"), encode_batch(batch), retain=False)
            wait_until(lambda: bool(listener.got), 30, "the batch acknowledged")
            assert BatchAck.from_json(listener.got[0]).stored == 1
        finally:
            listener.close()
        status = _trainer_status(address, site)
    finally:
        for node in ("ghost", "ghost-max", "pi-a", *(f"forged-{i}" for i in range(FORGED))):
            hostile.publish(site.status(node), b"")
        hostile.close()
    assert status["state"] == "online" and status["model_version"] == champion
    assert "bad_models" not in status["detail"]
    payload, _ = retained(address, site.model_current)
    assert decode_bundle(payload, load_public_key(kit.public_key)).manifest.version == champion
    text = (store / REGISTRY_NAME).read_text()
    reg, damaged = parse_registry(text)
    assert damaged == [] and reg.bad_versions() == frozenset()
    assert [m.version for m in reg.records] == [champion]  # no record for a forged version
    assert reg.highest() + 1 <= MAX_VERSION  # the next version is one a manifest accepts
    rec = reg.get(champion)
    assert rec is not None and len(rec.deployed) <= FORGED + 2
    grew = len(text.encode()) - before
    print(
        f"\n[fault] {FORGED + 3} forged statuses: registry {len(reg.records)} record(s), "
        f"{len(text.splitlines())} line(s), +{grew} bytes; rollback_refused "
        f"{status['errors'].get('rollback_refused')}, status_refused "
        f"{status['errors'].get('status_refused')}"
    )
    assert grew < 64 * 1024


def test_forged_statuses_change_no_record_of_a_running_trainers_registry(
    broker: Broker,
    topics: Topics,
    tmp_path: Path,
    keypair: tuple[Path, Path],  # noqa: F811 - the fixture
) -> None:
    """The same attacks against a trainer in this process (no model, so no TensorFlow) whose
    registry holds v1 and the published champion v2, which the real node pi-a served."""
    store = tmp_path / "trainer"
    seeded = RegistryFile(store / REGISTRY_NAME)
    seeded.update(
        lambda r: r.upsert(ModelRecord(1, "champion", published=1.0)).upsert(
            ModelRecord(2, "champion", parent=1, published=2.0)
        )
    )
    seeded.serving("pi-a", 2)
    daemon = TrainerDaemon(
        ServeConfig(
            broker=broker.address,
            prefix=topics.prefix,
            store=store,
            private_key=keypair[0],
            client_id=f"trainer-{time.time_ns()}",
            dashboard=False,
        )
    ).start()
    hostile = _Hostile(broker.address)
    forged_nodes = ["ghost", "ghost-max", "pi-a", *(f"forged-{i}" for i in range(FORGED))]
    try:
        wait_until(lambda: daemon.state.connected, 10, "the trainer connected")
        size = (store / REGISTRY_NAME).stat().st_size
        hostile.publish(topics.status("ghost"), _status("ghost", 1, [_rollback(2)]))
        hostile.publish(
            topics.status("ghost-max"),
            _status("ghost-max", 1, [_rollback(4294967295), _rollback(MAX_VERSION)]),
        )
        for i in range(FORGED):
            node = f"forged-{i}"
            rollbacks = [_rollback(2)] + [_rollback(1000 * i + k) for k in range(1, 8)]
            hostile.publish(topics.status(node), _status(node, 2, rollbacks))
        # pi-b's status on pi-a's topic: pi-a served v2, so as pi-a it would be taken
        hostile.publish(topics.status("pi-a"), _status("pi-b", 1, [_rollback(2)]))
        wait_until(
            lambda: (
                daemon.history.refused_rollbacks() >= FORGED + 2
                and daemon.state.statuses_refused >= 1
            ),
            30,
            "the forged rollbacks refused",
        )
        listener = _Hostile(broker.address, listen=topics.drift_acks("pi-z"))
        try:
            window = Window("m01", 1, 1, np.zeros((60, 4), np.float32), label=0)
            batch = DriftBatch(b"z" * 16, "pi-z", 2, (Kept(window, "labeled"),))
            listener.publish(topics.drift_batches("pi-z"), encode_batch(batch), retain=False)
            wait_until(lambda: bool(listener.got), 10, "the batch acknowledged after the flood")
        finally:
            listener.close()
        reg = daemon.history.view()
        status = daemon.status()
        grew = (store / REGISTRY_NAME).stat().st_size - size
    finally:
        for node in forged_nodes:
            hostile.publish(topics.status(node), b"")
        hostile.close()
        daemon.stop()
    assert reg.bad_versions() == frozenset() and reg.champion() == 2
    assert [m.version for m in reg.records] == [1, 2]  # no record for a forged version
    assert "bad_models" not in status.detail and status.errors["status_refused"] >= 1
    rec = reg.get(2)
    assert rec is not None and rec.served[0] == "pi-a" and "pi-b" not in rec.served
    assert reg.highest() + 1 <= MAX_VERSION
    assert RegistryFile(store / REGISTRY_NAME).view() == reg  # what the file replays to
    print(f"\n[fault] {FORGED + 3} forged statuses: +{grew} bytes, {len(reg.records)} records")
    assert grew < 16 * 1024
