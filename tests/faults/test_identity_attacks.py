"""Issue 23, attacks on identity: a hostile client holding a sensor gateway's login, or edge node
A's, against a real Mosquitto in the secure profile made by `scripts.secure_profile` with
per-device identities (deploy/mosquitto/edgeloop-secure.conf, the generated passwd and ACL).

Each attack must be refused by the broker (PUBACK/SUBACK 0x87, CONNACK 0x87, a Will not sent) or
be harmless (nothing reaches a victim, nothing retained), and the legitimate traffic of the same
identities keeps working: per-device logins classify and ship end to end, and a revoked identity
is cut off from the running broker without a restart. tests/faults/README.md maps each attack to
its test.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jetson_trainer.daemon.intake import Intake
from jetson_trainer.daemon.publish import publish_bundle
from nodekit.errors import BrokerRefusedError
from nodekit.mqtt import ConnectionWatch, Credentials, connect, make_client, publish_confirmed
from nodekit.settings import resolve
from pi_edge.config import EdgeConfig
from pi_edge.report.home_assistant import site_node_id
from pi_edge.service import EdgeService
from protocol import Status, Topics, Window, encode_window
from scripts import secure_profile as sp
from scripts.broker import Broker, BrokerError

from ..pi_edge._model import EdgeModels

pytestmark = pytest.mark.broker

PREFIX = "atk/v1"  # a concrete prefix: each node's Home Assistant level is its own in the ACL
IDENTITIES = {
    "gw-1": "sensor",
    "pi-a": "edge",
    "pi-b": "edge",
    "trainer-1": "trainer",
    "ops-1": "operator",
}


@pytest.fixture(scope="module")
def profile(tmp_path_factory: pytest.TempPathFactory) -> sp.SecureProfile:
    return sp.make_profile(
        tmp_path_factory.mktemp("identity-profile"), prefix=PREFIX, enroll_=IDENTITIES.items()
    )


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, profile: sp.SecureProfile) -> Iterator[Broker]:
    try:
        b = Broker(run_dir=tmp_path_factory.mktemp("identity-broker"), profile=profile).start()
    except BrokerError as exc:
        pytest.fail(f"cannot start the secure broker: {exc}")
    yield b
    b.stop()


@pytest.fixture
def topics() -> Topics:
    return Topics(PREFIX)


class Peer:
    """One MQTT connection with a login: records what it receives, its SUBACK codes and
    whether the broker disconnected it."""

    def __init__(
        self,
        hub: Broker,
        creds: Credentials,
        *subscribe: str,
        client_id: str | None = None,
        will: tuple[str, bytes] | None = None,
        clean: bool = True,
    ) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.suback: list[int] = []
        self.disconnects = 0
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = make_client(
            client_id or f"peer-{time.monotonic_ns()}",
            will_topic=will[0] if will else None,
            will_payload=will[1] if will else None,
        )

        def on_connect(c: Any, u: Any, flags: Any, rc: Any, props: Any = None) -> None:
            if not rc.is_failure and subscribe:
                c.subscribe([(t, 1) for t in subscribe])

        def on_subscribe(c: Any, u: Any, mid: Any, codes: Any, props: Any = None) -> None:
            self.suback = [int(code.value) for code in codes]
            self._subscribed.set()

        def on_message(c: Any, u: Any, msg: Any) -> None:
            with self._lock:
                self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

        def on_disconnect(c: Any, u: Any, flags: Any, rc: Any, props: Any = None) -> None:
            self.disconnects += 1

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        self.client.on_disconnect = on_disconnect
        kw: dict[str, Any] = {} if clean else {"clean_start": False, "session_expiry_s": 300}
        self.link: ConnectionWatch = connect(self.client, hub.address, credentials=creds, **kw)
        self.client.loop_start()
        self.link.wait(10)
        if subscribe:
            assert self._subscribed.wait(10), "no SUBACK"

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> bool:
        return publish_confirmed(self.client, self.link, topic, payload, retain=retain, timeout=5)

    def refused(self, topic: str, payload: bytes = b"forged", retain: bool = False) -> bool:
        """True if the broker answered this publish with PUBACK 0x87 Not authorized."""
        try:
            self.publish(topic, payload, retain)
        except BrokerRefusedError as exc:
            return exc.code == 0x87
        return False

    def seen(self) -> list[str]:
        with self._lock:
            return [t for t, _, _ in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def peers(hub: Broker, profile: sp.SecureProfile) -> Iterator[Callable[..., Peer]]:
    made: list[Peer] = []

    def make(name: str, *subscribe: str, via: str | None = None, **kw: Any) -> Peer:
        creds = profile.credentials(name)
        peer = Peer(hub, creds.for_(via) if via else creds, *subscribe, **kw)
        made.append(peer)
        return peer

    yield make
    for peer in made:
        peer.close()


def settle(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.05)
    return cond()


def retained(hub: Broker, profile: sp.SecureProfile, topic_filter: str) -> list[str]:
    """The topics a fresh operator subscriber gets retained messages on (after a quiet 0.5 s)."""
    peer = Peer(hub, profile.credentials("ops-1").for_("cli"), topic_filter)
    try:
        time.sleep(0.5)
        return [t for t, p, r in peer.messages if r and p]
    finally:
        peer.close()


def refused_login(hub: Broker, creds: Credentials) -> int:
    """The CONNACK reason code the broker refuses `creds` with (fails if it admits them)."""
    client = make_client(f"refused-{time.monotonic_ns()}")
    link = connect(client, hub.address, credentials=creds)
    client.loop_start()
    try:
        with pytest.raises(BrokerRefusedError) as info:
            link.wait(10)
        return info.value.code
    finally:
        client.disconnect()
        client.loop_stop()


def status(node: str, role: str = "edge", state: str = "online") -> bytes:
    return Status(node, role, state, "0.1.0", 1, time.time()).to_json()


# -- attacks with a sensor gateway's login -------------------------------------------------------
def test_a_sensor_login_cannot_write_any_status_but_its_own_nor_reach_model_commands_acks(
    peers: Callable[..., Peer], hub: Broker, profile: sp.SecureProfile, topics: Topics
) -> None:
    watch = peers("ops-1", topics.statuses(), f"{PREFIX}/drift/#", f"{PREFIX}/model/#")
    gw = peers("gw-1")
    # a status for a live node, for one that does not exist, retained or not; a rollback list
    forged = json.dumps({"v": 1, "node": "pi-ghost", "rollbacks": [{"from": 4294967295}]})
    for node in ("pi-b", "pi-ghost", "trainer-1"):
        for retain in (True, False):
            assert gw.refused(topics.status(node), forged.encode(), retain), (node, retain)
    # the model, drift batches, another node's acks, labels, control, a node command
    for topic, retain in (
        (topics.model_current, True),
        (topics.drift_batches("pi-a"), False),
        (topics.drift_batches("gw-1"), False),  # its own name: a sensor ships no batches
        (topics.legacy_drift_batches, False),
        (topics.drift_acks("pi-a"), False),
        (topics.labels, False),
        (topics.sim_control, False),
        (topics.node_command("pi-a"), False),
    ):
        assert gw.refused(topic, retain=retain), topic
    assert gw.publish(topics.status("gw-1"), status("gw-1", "simulator"), retain=True)  # control
    assert settle(lambda: topics.status("gw-1") in watch.seen())
    time.sleep(0.3)
    assert watch.seen() == [topics.status("gw-1")]  # nothing forged reached anyone
    assert retained(hub, profile, topics.statuses()) == [topics.status("gw-1")]
    gw.publish(topics.status("gw-1"), b"", retain=True)


def test_a_sensor_login_cannot_read_a_nodes_commands_or_acks(
    peers: Callable[..., Peer], topics: Topics
) -> None:
    spy = peers("gw-1", topics.node_command("pi-a"), topics.drift_acks("pi-a"), f"{PREFIX}/#")
    # Mosquitto 2.0.11 grants the subscription and checks read access per message delivered
    pi_a = peers("pi-a", topics.node_command("pi-a"))
    ops = peers("ops-1")
    trainer = peers("trainer-1")
    assert ops.publish(topics.node_command("pi-a"), b'{"v":1,"cmd":"rollback"}')
    assert trainer.publish(topics.drift_acks("pi-a"), b"{}")
    assert settle(lambda: pi_a.seen() == [topics.node_command("pi-a")])
    time.sleep(0.3)
    assert spy.seen() == []


def test_a_will_on_another_nodes_status_is_never_sent(
    peers: Callable[..., Peer], hub: Broker, profile: sp.SecureProfile, topics: Topics
) -> None:
    """A login that sets its Last Will on pi-b's status and then drops off: no forged 'offline'
    for a live node (the broker checks the Will against the ACL)."""
    watch = peers("ops-1", topics.statuses())
    for name in ("gw-1", "pi-a"):
        victim = topics.status("pi-b")
        hostile = peers(name, will=(victim, status("pi-b", state="offline")))
        assert hostile.link.connected
        gone = f"Client {name} closed its connection"
        before = hub.log_path.read_text().count(gone)
        sock = hostile.client.socket()
        assert isinstance(sock, socket.socket)
        hostile.client.loop_stop()
        sock.shutdown(socket.SHUT_RDWR)  # no DISCONNECT: the broker would send the Will
        assert settle(lambda: hub.log_path.read_text().count(gone) > before)  # noqa: B023
    time.sleep(1.0)
    assert watch.seen() == []
    assert retained(hub, profile, topics.statuses()) == []


# -- attacks with edge node A's login -------------------------------------------------------------
def test_edge_node_a_cannot_write_node_bs_status_sparkplug_or_home_assistant_configs(
    peers: Callable[..., Peer], hub: Broker, profile: sp.SecureProfile, topics: Topics
) -> None:
    watch = peers("ops-1", topics.statuses(), "spBv1.0/#")
    a = peers("pi-a")
    for node in ("pi-b", "pi-ghost", "trainer-1", "ops-1"):
        for retain in (True, False):
            assert a.refused(topics.status(node), status(node), retain), (node, retain)
    assert a.refused(topics.model_current, retain=True)
    assert a.refused(topics.node_command("pi-b"))  # commands are the operator's
    assert a.refused(topics.label_requests("pi-b"))  # it asks for labels as itself only
    assert a.refused(topics.legacy_label_requests)
    # a machine's retained state only under its own name, not B's nor the old shared topic
    assert a.refused(topics.machine_state("m01", "pi-b"), b"{}", retain=True)
    assert a.refused(topics.legacy_machine_state("m01"), b"{}", retain=True)
    assert a.publish(topics.machine_state("m01", "pi-a"), b"", retain=True)  # control: its own
    assert a.publish(topics.label_requests("pi-a"), b"{}")  # control: its own
    # its Sparkplug login may be node pi-a only
    spb = peers("pi-a", via="spb")
    for kind in ("NBIRTH", "NDATA", "NDEATH"):
        assert spb.refused(f"spBv1.0/g1/{kind}/pi-b", retain=True), kind
    assert spb.refused("spBv1.0/g1/DBIRTH/pi-b/m01", retain=True)
    assert spb.publish("spBv1.0/g1/NDATA/pi-a", b"x")  # control: its own
    # Home Assistant: only its own level under the discovery prefix, not pi-b's
    b_level, a_level = site_node_id(PREFIX, "pi-b"), site_node_id(PREFIX, "pi-a")
    assert a.refused(f"homeassistant/sensor/{b_level}/m01_state/config", b"{}", retain=True)
    assert a.refused("homeassistant/sensor/atk_v1_pi-ghost/m01_state/config", retain=True)
    assert a.publish(f"homeassistant/sensor/{a_level}/m01_state/config", b"{}", retain=True)
    a.publish(f"homeassistant/sensor/{a_level}/m01_state/config", b"", retain=True)
    # the only status it may write is its own
    assert a.publish(topics.status("pi-a"), status("pi-a"), retain=True)
    assert settle(lambda: topics.status("pi-a") in watch.seen())
    time.sleep(0.3)
    assert sorted(watch.seen()) == sorted([topics.status("pi-a"), "spBv1.0/g1/NDATA/pi-a"])
    assert retained(hub, profile, topics.statuses()) == [topics.status("pi-a")]
    assert retained(hub, profile, "spBv1.0/#") == []
    a.publish(topics.status("pi-a"), b"", retain=True)


def test_edge_node_a_cannot_read_node_bs_commands_or_acks(
    peers: Callable[..., Peer], topics: Topics
) -> None:
    a = peers("pi-a", topics.node_command("pi-b"), topics.node_command("pi-a"))
    a_ship = peers("pi-a", topics.drift_acks("pi-b"), topics.drift_acks("pi-a"), via="batches")
    b = peers("pi-b", topics.node_command("pi-b"))
    b_ship = peers("pi-b", topics.drift_acks("pi-b"), via="batches")
    ops, trainer = peers("ops-1"), peers("trainer-1")
    assert ops.publish(topics.node_command("pi-b"), b'{"v":1,"cmd":"rollback"}')
    assert trainer.publish(topics.drift_acks("pi-b"), b'{"v":1}')
    assert settle(lambda: bool(b.seen()) and bool(b_ship.seen()))
    time.sleep(0.3)
    assert a.seen() == [] and a_ship.seen() == []  # B's command and ack reached only B
    assert a_ship.refused(topics.drift_acks("pi-b"))  # nor can it forge B's acks
    assert a_ship.refused(topics.drift_acks("pi-a"))  # or its own: acks are the trainer's
    assert a_ship.refused(topics.drift_batches("pi-b"))  # nor ship batches as B
    assert a_ship.refused(topics.legacy_drift_batches)  # nor on the shared topic of old nodes


# -- attacks with an operator's login ------------------------------------------------------------
def test_an_operator_login_sees_all_but_cannot_speak_for_a_node_or_the_trainer(
    peers: Callable[..., Peer], hub: Broker, profile: sp.SecureProfile, topics: Topics
) -> None:
    """The operator may command nodes and label (by design); it may not pose as one."""
    ops = peers("ops-1")
    for node in ("pi-a", "pi-ghost", "trainer-1"):
        assert ops.refused(topics.status(node), status(node), retain=True), node
    for topic in (topics.model_current, topics.drift_batches("pi-a"), topics.drift_acks("pi-a")):
        assert ops.refused(topic, retain=topic == topics.model_current), topic
    assert ops.refused("spBv1.0/g1/NBIRTH/pi-a", retain=True)
    assert ops.refused(f"homeassistant/sensor/{site_node_id(PREFIX, 'pi-a')}/x/config")
    forged = {topics.status(n) for n in ("pi-a", "pi-ghost", "trainer-1")}
    assert forged.isdisjoint(retained(hub, profile, f"{PREFIX}/#"))


# -- sessions: client ids are bound to logins ------------------------------------------------------
def test_no_login_takes_over_another_session_by_its_client_id(
    peers: Callable[..., Peer], hub: Broker, topics: Topics
) -> None:
    start = len(hub.log_path.read_text())
    trainer = peers("trainer-1", topics.all_drift_batches(), client_id="trainer-1", clean=False)
    b = peers("pi-b", topics.node_command("pi-b"), client_id="pi-b")
    for name, victim in (("gw-1", "trainer-1"), ("pi-a", "trainer-1"), ("pi-a", "pi-b")):
        hostile = peers(name, client_id=victim)
        assert hostile.link.connected  # it connects, but as itself
        hostile.close()
    time.sleep(0.5)
    assert trainer.disconnects == 0 and b.disconnects == 0
    assert trainer.link.connected and b.link.connected
    log = hub.log_path.read_text()[start:]
    assert "as gw-1 (" in log and "as pi-a (" in log  # the broker named them by their logins
    assert "Client trainer-1 already connected" not in log
    assert "Client pi-b already connected" not in log
    # the trainer's session still gets batches, pi-b its commands
    ship = peers("pi-a", via="batches")
    assert ship.publish(topics.drift_batches("pi-a"), b"batch")
    assert peers("ops-1").publish(topics.node_command("pi-b"), b"cmd")
    assert settle(lambda: trainer.seen() == [topics.drift_batches("pi-a")] and bool(b.seen()))


# -- revocation on the running broker -------------------------------------------------------------
def test_revocation_cuts_the_identity_off_the_running_broker_without_a_restart(
    peers: Callable[..., Peer], hub: Broker, profile: sp.SecureProfile, topics: Topics
) -> None:
    pid = hub.pid
    args = ["--out", str(profile.dir)]
    add = ["add", "pi-gone", "--role", "edge", *args, "--pid-file", str(hub.pid_file)]
    assert sp.main(add) == 0  # remembers the pid file; SIGHUP: the login works at once
    assert profile.env_file("pi-gone").stat().st_mode & 0o777 == 0o600
    assert profile.password_file("pi-gone").stat().st_mode & 0o777 == 0o600
    bystander = peers("pi-a", topics.node_command("pi-a"))
    gone = Peer(hub, profile.credentials("pi-gone"), topics.node_command("pi-gone"))
    creds = profile.credentials("pi-gone")
    try:
        assert gone.link.connected and gone.publish(topics.status("pi-gone"), b"x")
        assert sp.main(["revoke", "pi-gone", *args]) == 0  # reloads by the remembered pid file
        assert settle(lambda: not gone.link.connected), gone.link.state  # cut off, live
        assert not profile.password_file("pi-gone").exists()
        assert refused_login(hub, creds) == 0x87  # and it cannot come back
        assert refused_login(hub, creds.for_("batches")) == 0x87
    finally:
        gone.close()
    assert hub.pid == pid and hub.running  # the same broker process all along
    assert bystander.link.connected and bystander.disconnects == 0
    assert "pi-gone" not in profile.acl_file.read_text()
    assert "pi-gone" not in profile.passwd_file.read_text()


# -- the profile refuses to write what Mosquitto would read open -----------------------------------
def test_a_tampered_identities_file_writes_neither_passwd_nor_acl(
    tmp_path: Path, profile: sp.SecureProfile
) -> None:
    copy = sp.make_profile(tmp_path / "p", prefix=PREFIX, enroll_=[("pi-x", "edge")])
    before = copy.acl_file.read_text(), copy.passwd_file.read_text()
    doc = json.loads(copy.identities_file.read_text())
    doc["identities"]["pi-x"]["logins"]["pi-x"] += "\nuser admin"  # an injected line
    copy.identities_file.write_text(json.dumps(doc))
    assert sp.main(["add", "pi-y", "--role", "edge", "--out", str(copy.dir), "--no-reload"]) == 1
    doc["identities"]["pi x"] = doc["identities"].pop("pi-x")  # a name that is no node id
    copy.identities_file.write_text(json.dumps(doc))
    assert sp.main(["revoke", "pi-x", "--out", str(copy.dir), "--no-reload"]) == 1
    assert (copy.acl_file.read_text(), copy.passwd_file.read_text()) == before
    for bad in ("user pi-x\ntopic read a/#\n#\n", "topic read a/#\n", "user a b\n", "junk\n"):
        with pytest.raises(sp.ProfileError):
            sp.check_acl(bad)
    with pytest.raises(sp.ProfileError):
        sp.check_acl("user pi-x\ntopic read a/b#\n")


# -- the legitimate traffic of the same identities ------------------------------------------------
def test_per_device_logins_classify_and_ship_end_to_end(
    hub: Broker, profile: sp.SecureProfile, models: EdgeModels, topics: Topics, tmp_path: Path
) -> None:
    """pi-a classifies gw-1's windows with the model trainer-1 published, takes ops-1's label and
    ships the labeled windows to trainer-1's real intake, which stores them and acknowledges
    them on pi-a's ack topic — each connection on its own login."""
    from jetson_trainer.daemon.store import WindowStore

    publish_bundle(
        models.bundle(1, site=PREFIX),
        hub.address,
        prefix=PREFIX,
        credentials=profile.credentials("trainer-1"),  # as trainer-1~cli
    )
    store = WindowStore(tmp_path / "store.sqlite")
    stop = threading.Event()
    intake = Intake(
        broker=hub.address,
        client_id="trainer-1",
        topics=topics,
        store=store,
        store_dir=tmp_path,
        offline_status=b"",
        stop=stop,
        on_connected=lambda: None,
        credentials=profile.credentials("trainer-1"),
    ).start()
    cfg: EdgeConfig = resolve(
        EdgeConfig,
        env=profile.env("pi-a"),
        flags={
            "broker": hub.address,
            "prefix": PREFIX,
            "public_key": str(models.public_key_path),
            "state_dir": str(tmp_path / "edge"),
            "dashboard": False,
        },
    )
    assert cfg.node == "pi-a"
    service = EdgeService(cfg, public_key=models.public_key).start()
    watch = Peer(hub, profile.credentials("ops-1"), topics.predictions())
    gw = Peer(hub, profile.credentials("gw-1"))
    try:
        assert service.wait_for_model(1, timeout=20), service.broker_state
        label = {"v": 1, "machine": "m01", "class": "bearing_fault", "from": time.time() - 60}
        assert Peer(hub, profile.credentials("ops-1").for_("cli")).publish(
            topics.labels, json.dumps(label).encode()
        )
        time.sleep(0.5)
        for seq in range(20):
            w = Window("m01", seq, time.time_ns(), models.x_test[seq % len(models.x_test)])
            assert gw.publish(topics.window("m01"), encode_window(w))
        assert settle(lambda: len(watch.seen()) >= 20, 20), len(watch.seen())

        def stored() -> int:
            with sqlite3.connect(tmp_path / "store.sqlite") as db:
                return int(db.execute("SELECT count(*) FROM windows").fetchone()[0])

        assert settle(lambda: stored() >= 20, 30), stored()
        shipper = service.kept.shipper
        assert settle(lambda: shipper.stats()["batches_acked"] >= 1, 20), shipper.stats()
        assert shipper.stats()["refused"] == {} and shipper.stats()["subscribe_refused"] == 0
        assert intake.counts().publish_refused == 0
    finally:
        service.stop()
        watch.close()
        gw.close()
        stop.set()
        intake.stop()
        intake.close()
        store.close()
    log = hub.log_path.read_text()
    for login in ("pi-a", "pi-a~batches", "gw-1", "trainer-1", "trainer-1~cli", "ops-1~cli"):
        assert f"u'{login}'" in log, login
