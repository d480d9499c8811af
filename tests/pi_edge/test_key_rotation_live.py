"""The trainer's signing key rotated on a LIVE node (issue 23 item 7), with a real Mosquitto.

The node serves v1 signed by key A; `jetson_trainer rotate-key --publish` makes key B and puts
the key log (the record A → B, revoking A) retained on `{prefix}/keys/log`; the running node
applies it, serves v2 signed by B, refuses v3 signed by the revoked A (`bundle_revoked`), and
after a restart with the same, unchanged `--public-key A` it still trusts B only: A's bundles
are refused from the network and from its own disk. The attacks — a log signed by a key the node
does not trust, a replayed older log, a record from a non-trainer sender — are refused and
counted (`key_untrusted`, `key_replay`); in the secure profile the broker refuses a sensor's or
an edge node's key log outright (PUBACK 0x87) and delivers the trainer's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from jetson_trainer.__main__ import main as trainer_main
from jetson_trainer.build.keys import load_private_key
from jetson_trainer.daemon.publish import publish_message
from nodekit.errors import BrokerRefusedError
from nodekit.settings import build
from pi_edge import EdgeConfig, EdgeService
from protocol import Status, Topics, Window, encode_bundle, encode_window
from protocol.bundle import load_public_keys
from protocol.keys import encode_log, key_id, make_record, raw_public_key
from scripts.broker import Broker
from scripts.secure_profile import SecureProfile

from ._model import EdgeModels
from .conftest import Listener, Publisher


def _signed_by(models: EdgeModels, key: Ed25519PrivateKey, version: int, site: str) -> bytes:
    m = replace(models.manifest, version=version, parent=version - 1 or None, site=site)
    return encode_bundle(m, models.model, key.sign)


def _write_private(key: Ed25519PrivateKey, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


@pytest.fixture
def node(
    broker: Any, topics: Topics, models: EdgeModels, tmp_path: Path
) -> Iterator[Callable[[], EdgeService]]:
    """A node as `pi_edge run --public-key A` starts it; call again for a restart (same
    node, same state dir, same configured key)."""
    made: list[EdgeService] = []
    name = f"edge-keys-{time.time_ns()}"

    def _make() -> EdgeService:
        cfg = build(
            EdgeConfig,
            broker=broker.address,
            prefix=topics.prefix,
            node=name,
            public_key=models.public_key_path,
            state_dir=tmp_path / "state",
            dashboard=False,
            status_interval_s=0.2,
        )
        svc = EdgeService(cfg, public_key=load_public_keys(models.public_key_path))
        made.append(svc)
        return svc.start()

    yield _make
    for svc in made:
        svc.stop()


def _errors(lst: Listener, topics: Topics, svc: EdgeService, kind: str, at_least: int) -> Status:
    """The node's newest status once it counts `at_least` errors of `kind`."""
    topic = topics.status(svc.config.node)
    found: list[Status] = []

    def pred(msgs: list[tuple[str, bytes, bool]]) -> bool:
        for t, p, _ in reversed(msgs):
            if t == topic:
                s = Status.from_json(p)
                if s.errors.get(kind, 0) >= at_least:
                    found.append(s)
                    return True
        return False

    assert lst.wait_for(pred, 20), f"no status counting {at_least} {kind}: {lst.on(topic)[-1:]}"
    return found[0]


def _trusts(svc: EdgeService, ids: tuple[str, ...], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        trust = svc.models.trust
        if trust is not None and trust.ids == ids:
            return True
        time.sleep(0.05)
    return False


def _classifies_with(
    lst: Listener, publisher: Publisher, topics: Topics, models: EdgeModels, version: int
) -> None:
    machine = f"m{time.time_ns() % 100000}"
    w = Window(machine, 0, time.time_ns(), models.x_test[0], int(models.y_test[0]))
    publisher.publish(topics.window(machine), encode_window(w), 0)
    topic = topics.prediction(machine)
    assert lst.wait_for(lambda m: any(t == topic for t, _, _ in m), 15), "no prediction"
    assert json.loads(lst.on(topic)[0])["model_version"] == version


@pytest.mark.broker
def test_the_key_is_rotated_on_a_live_node_and_a_restart_still_trusts_only_the_new_key(
    node: Callable[[], EdgeService],
    broker: Broker,
    publisher: Publisher,
    listen: Any,
    topics: Topics,
    models: EdgeModels,
    tmp_path: Path,
) -> None:
    a = models.private_key
    id_a = key_id(models.public_key)
    lst = listen(topics.predictions(), topics.statuses())
    svc = node()
    publisher.publish(topics.model_current, _signed_by(models, a, 1, topics.prefix), retain=True)
    assert svc.wait_for_model(1, timeout=20)
    _classifies_with(lst, publisher, topics, models, 1)
    assert svc.models.trust is not None and svc.models.trust.ids == (id_a,)

    # the trainer rotates: new key B, the record A → B (revoking A) retained on keys/log
    a_pem = _write_private(a, tmp_path / "keys-a" / "trainer_ed25519.pem")
    argv = ["rotate-key", "--private-key", str(a_pem), "--out", str(tmp_path / "keys-b")]
    argv += ["--prefix", topics.prefix, "--publish", "--broker", broker.address]
    assert trainer_main(argv) == 0
    b = load_private_key(tmp_path / "keys-b" / "trainer_ed25519.pem")
    id_b = key_id(raw_public_key(b))
    assert _trusts(svc, (id_b,)), f"the live node did not apply the record: {svc.models.trust}"
    assert svc.model_version == 1  # v1 (signed by A) serves until B's bundle replaces it

    publisher.publish(topics.model_current, _signed_by(models, b, 2, topics.prefix), retain=True)
    assert svc.wait_for_model(2, timeout=20), "v2 signed by the new key B was not served"
    _classifies_with(lst, publisher, topics, models, 2)

    publisher.publish(topics.model_current, _signed_by(models, a, 3, topics.prefix), retain=True)
    status = _errors(lst, topics, svc, "bundle_revoked", 1)
    assert id_a in str(status.detail["last_model_error"]) and "revoked" in str(
        status.detail["last_model_error"]
    )
    assert svc.model_version == 2
    trust_file = tmp_path / "state" / "models" / "trust.json"
    saved = json.loads(trust_file.read_text())
    assert saved["keys"] == [raw_public_key(b).hex()] and saved["seq"] == 1
    assert [r["id"] for r in saved["revoked"]] == [id_a]
    svc.stop()

    # restart with the same --public-key A: the Pi was not reinstalled
    lst = listen(topics.predictions(), topics.statuses())  # the restarted process's counts
    again = node()
    assert again.models.trust is not None and again.models.trust.ids == (id_b,)
    assert again.wait_for_model(2, timeout=20)  # current.bundle: v2, signed by B
    _errors(lst, topics, again, "bundle_revoked", 1)  # the retained v3, signed by A
    # previous.bundle on disk is v1, signed by A: a rollback to it is refused too
    again.models.request_rollback(2, "test@1", "test: roll back to a bundle of the revoked key")
    _errors(lst, topics, again, "bundle_revoked", 2)
    assert again.model_version == 2
    _classifies_with(lst, publisher, topics, models, 2)
    publisher.publish(topics.model_current, b"", retain=True)
    publisher.publish(topics.key_log, b"", retain=True)


@pytest.mark.broker
def test_forged_replayed_and_foreign_key_logs_are_refused_and_counted(
    node: Callable[[], EdgeService],
    publisher: Publisher,
    listen: Any,
    topics: Topics,
    models: EdgeModels,
) -> None:
    a = models.private_key
    b, c, stranger = (Ed25519PrivateKey.generate() for _ in range(3))
    lst = listen(topics.statuses())
    svc = node()
    ab = make_record(a, b, site=topics.prefix, seq=1)
    bc = make_record(b, c, site=topics.prefix, seq=2)
    publisher.publish(topics.key_log, encode_log([ab, bc]), retain=True)
    id_c = key_id(raw_public_key(c))
    assert _trusts(svc, (id_c,)), "the node did not walk the chain A → B → C"

    # a record of a non-trainer sender: any client can publish on an open broker, but it cannot
    # sign with a key the node trusts
    forged = make_record(stranger, Ed25519PrivateKey.generate(), site=topics.prefix, seq=3)
    publisher.publish(topics.key_log, encode_log([ab, bc, forged]), retain=True)
    _errors(lst, topics, svc, "key_untrusted", 1)
    # a replayed older log (the record A → B alone, genuinely signed by A)
    publisher.publish(topics.key_log, encode_log([ab]), retain=True)
    _errors(lst, topics, svc, "key_replay", 1)
    # the old key A signing a new record after its revocation
    late = make_record(a, Ed25519PrivateKey.generate(), site=topics.prefix, seq=3)
    publisher.publish(topics.key_log, encode_log([ab, bc, late]), retain=True)
    _errors(lst, topics, svc, "key_revoked", 1)
    # garbage on the topic
    publisher.publish(topics.key_log, b"EL\x01\x05" + b"\x00" * 40, retain=True)
    status = _errors(lst, topics, svc, "key_bad_magic", 1)
    assert "key log" in str(status.detail["last_model_error"])
    assert svc.models.trust is not None and svc.models.trust.ids == (id_c,)
    assert svc.models.trust.seq == 2
    # the node still takes C's bundles, and refuses the stranger's
    publisher.publish(topics.model_current, _signed_by(models, c, 2, topics.prefix), retain=True)
    assert svc.wait_for_model(2, timeout=20)
    publisher.publish(
        topics.model_current, _signed_by(models, stranger, 3, topics.prefix), retain=True
    )
    _errors(lst, topics, svc, "bundle_signature", 1)
    assert svc.model_version == 2
    publisher.publish(topics.model_current, b"", retain=True)
    publisher.publish(topics.key_log, b"", retain=True)


@pytest.mark.broker
def test_only_the_trainer_may_publish_the_key_log_in_the_secure_profile(
    secure_broker: Broker, secure_profile: SecureProfile, models: EdgeModels, topics: Topics
) -> None:
    log_bytes = encode_log(
        [make_record(models.private_key, Ed25519PrivateKey.generate(), site=topics.prefix, seq=1)]
    )
    for role in ("sensor", "edge", "operator"):
        with pytest.raises(BrokerRefusedError) as refused:
            publish_message(
                log_bytes,
                secure_broker.address,
                topics.key_log,
                "key log",
                retain=True,
                credentials=secure_profile.credentials(role),
            )
        assert refused.value.code == 0x87, role
    reader = Listener(
        secure_broker.address,
        [topics.key_log],
        f"edge-reader-{time.time_ns()}",
        credentials=secure_profile.credentials("edge"),
    )
    try:
        publish_message(
            log_bytes,
            secure_broker.address,
            topics.key_log,
            "key log",
            retain=True,
            credentials=secure_profile.credentials("trainer"),
        )
        assert reader.wait_for(lambda m: any(t == topics.key_log for t, _, _ in m), 10)
        assert reader.on(topics.key_log) == [log_bytes]
    finally:
        reader.close()
        publish_message(
            b"",
            secure_broker.address,
            topics.key_log,
            "key log",
            retain=True,
            credentials=secure_profile.credentials("trainer"),
        )
