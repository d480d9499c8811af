"""The broker tier: a site Mosquitto bridged to a central one by deploy/mosquitto/bridge-site.conf.

Two real Mosquitto processes on loopback; the site broker runs the deploy file itself (only its
address, TLS lines and reconnect timings are changed for the test). A real pi_edge node on the
site broker takes a model published on the central one and its drift batches reach a real
trainer intake on the central one, whose acknowledgements travel back and drain the node's
buffer; a client we did not write (mosquitto_sub) sees its predictions and status centrally.
Then the central broker is killed and restarted: the node keeps classifying, and the batches
kept during the outage arrive once the bridge is back. A second test takes the link down with
traffic queued in both directions (what an MQTT 5 bridge of Mosquitto 2.0 would lose), a third
runs the bridge over TLS with the edge role's login into the secure profile.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from jetson_trainer.daemon.publish import publish_bundle
from nodekit.mqtt import Credentials, connect, make_client
from nodekit.settings import build as build_config
from pi_edge import EdgeConfig, EdgeService
from protocol import DEFAULT_PREFIX, Prediction, Status, Topics, Window, encode_window
from scripts.broker import Broker, BrokerError
from scripts.secure_profile import SecureProfile, render_conf
from tests.pi_edge._model import EdgeModels, build
from tests.pi_edge.conftest import Listener, Publisher
from tests.pi_edge.test_label_events import Trainer

pytestmark = [pytest.mark.broker, pytest.mark.timeout(240)]
log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
BRIDGE_CONF = REPO / "deploy" / "mosquitto" / "bridge-site.conf"
BRIDGE_ID = "edgeloop-site-a"  # `connection` / `remote_clientid` in the deploy file
BRIDGE_STATE = f"$SYS/broker/connection/{BRIDGE_ID}/state"  # its notification on the site
TLS_LOGIN_OPTIONS = (
    "bridge_cafile",
    "bridge_tls_version",
    "bridge_insecure",
    "remote_username",
    "remote_password",
)


def bridge_conf(
    central: Broker, *, prefix: str = DEFAULT_PREFIX, tls: dict[str, str] | None = None
) -> str:
    """The deploy file pointed at `central`: its address, `prefix` on every topic line, and
    reconnects after 1–2 s instead of 2–30 s. With `tls`, those options (the CA file, the
    password) replace the file's placeholders; without, the TLS and login lines are dropped
    (a plain, anonymous central broker)."""
    text = BRIDGE_CONF.read_text()
    assert text.count("\ntopic edgeloop/v1/") == 12, "the deploy file's topic lines changed"
    text = text.replace("\ntopic edgeloop/v1/", f"\ntopic {prefix}/")
    if tls is None:
        lines = text.splitlines(keepends=True)
        text = "".join(ln for ln in lines if (ln.split() or [""])[0] not in TLS_LOGIN_OPTIONS)
    return render_conf(text, {"address": central.address, "restart_timeout": "1 2", **(tls or {})})


def start(broker: Broker) -> Broker:
    try:
        return broker.start()
    except BrokerError as exc:
        pytest.fail(f"cannot start a test broker: {exc}")


def bridge_up(
    site: Broker, up: bool = True, timeout: float = 15.0, credentials: Credentials | None = None
) -> None:
    """Wait until the site broker's retained bridge notification says connected (1) or not."""
    want = b"1" if up else b"0"
    lst = Listener(site.address, [BRIDGE_STATE], f"bridge-state-{time.time_ns()}", credentials)
    try:
        ok = lst.wait_for(lambda msgs: bool(msgs) and msgs[-1][1] == want, timeout)
        assert ok, f"bridge not {'up' if up else 'down'} within {timeout:.0f} s: {lst.messages}"
    finally:
        lst.close()


class MosquittoSub:
    """`mosquitto_sub -v` on `broker` (a client we did not write), its lines collected."""

    def __init__(self, broker: Broker, *filters: str, extra: tuple[str, ...] = ()) -> None:
        exe = shutil.which("mosquitto_sub")
        assert exe, "mosquitto_sub missing: sudo apt-get install -y mosquitto-clients"
        args = [exe, "-h", broker.host, "-p", str(broker.port), "-q", "1", "-v", *extra]
        for f in filters:
            args += ["-t", f]
        self.lines: list[tuple[str, str]] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            topic, _, payload = line.rstrip("\n").partition(" ")
            with self._cond:
                self.lines.append((topic, payload))
                self._cond.notify_all()

    def wait_for(self, pred: Callable[[list[tuple[str, str]]], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not pred(self.lines):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=5)


def predicted(lines: list[tuple[str, str]]) -> set[tuple[str, int]]:
    """(machine, seq) of every prediction among mosquitto_sub's lines."""
    return {
        (p.machine, p.seq)
        for p in (
            Prediction.from_json(payload) for t, payload in lines if t.endswith("/prediction")
        )
    }


def send(
    pub: Publisher, models: EdgeModels, machines: tuple[str, ...], seqs: range
) -> list[Window]:
    """Labeled windows (the test set's ground truth) to the site broker: the node keeps them all."""
    sent = []
    for seq in seqs:
        for m in machines:
            i = seq % len(models.x_test)
            w = Window(m, seq, time.time_ns(), models.x_test[i], int(models.y_test[i]))
            pub.publish(Topics().window(m), encode_window(w), qos=1)
            sent.append(w)
    return sent


def labels_of(windows: list[Window]) -> dict[tuple[str, int], int]:
    """(machine, seq) → label of labeled windows: what the trainer's store must end up with."""
    return {(w.machine, w.seq): w.label for w in windows if w.label is not None}


def waiting(svc: EdgeService) -> int:
    """Kept windows the node still holds: not yet acknowledged by the trainer."""
    c = svc.kept.buffer.counts()
    return c.pending + c.inflight


def assert_retained(
    broker: Broker,
    topic: str,
    payload: bytes,
    credentials: Credentials | None = None,
    timeout: float = 10.0,
) -> None:
    """A client that subscribes to `broker` now gets `payload` on `topic` as a retained message
    (the broker keeps it for Pis and dashboards that connect later). Tries until `timeout`: over
    a bridge it may not have arrived yet."""
    deadline = time.monotonic() + timeout
    while True:
        lst = Listener(broker.address, [topic], f"late-{time.time_ns()}", credentials)
        try:
            if lst.wait_for(lambda msgs: (topic, payload, True) in msgs, 1.0):
                return
        finally:
            lst.close()
        assert time.monotonic() < deadline, f"{payload[:40]!r} not retained on {topic}"


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until `cond()` held; fails with `what` after `timeout`."""
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, f"{what} not within {timeout:.0f} s"
        time.sleep(0.05)
    return time.monotonic() - t0


# -- fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> EdgeModels:
    return build(tmp_path_factory.mktemp("bridge_models"))


@pytest.fixture
def tier(tmp_path: Path) -> Iterator[tuple[Broker, Broker]]:
    """(central, site): two private brokers, the site one bridged to the central one."""
    central = start(Broker(tmp_path / "central"))
    site = start(Broker(tmp_path / "site", extra_conf=bridge_conf(central)))
    yield central, site
    site.stop()
    central.stop()


# -- tests ---------------------------------------------------------------------------------
@pytest.mark.tensorflow
def test_model_down_batches_up_and_a_central_outage_loses_nothing(
    tier: tuple[Broker, Broker],
    models: EdgeModels,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    central, site = tier
    topics = Topics()
    bridge_up(site)

    # 1. the trainer publishes the model centrally, retained; it is kept on the site broker too
    bundle = models.bundle(1)
    site_model = Listener(site.address, [topics.model_current], f"site-model-{time.time_ns()}")
    request.addfinalizer(site_model.close)
    t0 = time.monotonic()
    publish_bundle(bundle, central.address)
    assert site_model.wait_for(lambda msgs: any(p == bundle for _, p, _ in msgs), 10)
    model_down_s = time.monotonic() - t0
    assert_retained(site, topics.model_current, bundle)  # for a Pi that connects later

    # 2. a node with no model connects to the site broker afterwards and serves it
    central_view = MosquittoSub(central, topics.predictions(), topics.statuses())
    request.addfinalizer(central_view.close)
    node = f"edge-site-{time.time_ns()}"
    svc = EdgeService(
        build_config(
            EdgeConfig,
            broker=site.address,
            node=node,
            public_key=models.public_key_path,
            state_dir=tmp_path / "state",
            dashboard=False,
            status_interval_s=0.3,
            batch_wait_ms=1.0,
            batch_max=16,
        ),
        public_key=models.public_key,
    ).start()
    request.addfinalizer(svc.stop)

    def online_v1(lines: list[tuple[str, str]]) -> bool:
        return any(
            t == topics.status(node)
            and (s := Status.from_json(p.encode())).state == "online"
            and s.model_version == 1
            for t, p in lines
        )

    assert central_view.wait_for(online_v1, 20), (
        "the node's status (v1, online) never reached central"
    )

    # 3. labeled windows on the site: predictions reach central, batches reach the trainer there,
    #    and its acknowledgements come back down so the node deletes what it kept
    trainer = Trainer(central, topics, tmp_path / "trainer")
    request.addfinalizer(trainer.close)
    pub = Publisher(site.address, f"gateway-{time.time_ns()}")
    request.addfinalizer(pub.close)
    machines = ("m01", "m02")
    before = send(pub, models, machines, range(0, 20))
    want = labels_of(before)
    assert trainer.wait_labeled(want) == want
    wait_until(lambda: waiting(svc) == 0, 20, "the trainer's acks draining the node's buffer")
    assert central_view.wait_for(lambda lines: set(want) <= predicted(lines), 10), (
        "not every prediction reached the central broker"
    )
    host = ["-h", central.host, "-p", str(central.port)]
    retained = subprocess.run(  # a later central client still finds the node's status
        ["mosquitto_sub", *host, "-t", topics.status(node), "-C", "1", "-W", "5"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert Status.from_json(retained.stdout.strip().encode()).state == "online"

    # 4. the central broker crashes for a few seconds: the node keeps classifying on the site
    #    and keeps what the trainer has not acknowledged
    # past central's autosave (5 s): the trainer's and the bridge's sessions are on its disk
    time.sleep(6)
    site_preds = Listener(site.address, [topics.predictions()], f"site-preds-{time.time_ns()}")
    request.addfinalizer(site_preds.close)
    central_view.close()
    central.kill9()
    bridge_up(site, up=False)
    t_down = time.monotonic()
    during = send(pub, models, machines, range(20, 40))
    want_during = labels_of(during)
    assert site_preds.wait_for(
        lambda msgs: (
            {(p.machine, p.seq) for p in (Prediction.from_json(x) for _, x, _ in msgs)}
            >= set(want_during)
        ),
        10,
    ), "the node stopped classifying while the central broker was down"
    wait_until(lambda: waiting(svc) == len(during), 10, "the node keeping the outage's windows")
    time.sleep(max(0.0, 4 - (time.monotonic() - t_down)))
    assert waiting(svc) == len(during), "windows were dropped while the trainer was unreachable"
    outage_s = time.monotonic() - t_down

    # 5. the central broker is back (same port, its persistence): the bridge reconnects and the
    #    batches kept during the outage arrive; nothing lost, nothing left in the node's buffer
    start(central)
    t_up = time.monotonic()
    assert trainer.wait_labeled(want | want_during, 30) == want | want_during
    stored_s = time.monotonic() - t_up
    drained_s = stored_s + wait_until(lambda: waiting(svc) == 0, 30, "the buffer draining")
    # delivered by the bridge's queue on the site, not by the node's own resends (after 30 s)
    assert svc.kept.shipper.stats()["batches_resent"] == 0
    bridge_up(site)
    after = MosquittoSub(central, topics.predictions(), topics.status(node))
    request.addfinalizer(after.close)
    assert after.wait_for(bool, 10)  # the retained status arrived: it has subscribed
    again = send(pub, models, machines, range(40, 45))
    assert after.wait_for(
        lambda lines: {(w.machine, w.seq) for w in again} <= predicted(lines), 10
    ), "predictions no longer reach central after its restart"
    log.info(
        "bridge figures: model central→site %.3f s; outage %.1f s; outage batches stored %.2f s "
        "after central restart, node buffer empty after %.2f s",
        model_down_s,
        outage_s,
        stored_s,
        drained_s,
    )


def test_a_link_outage_loses_nothing_queued_either_way(tier: tuple[Broker, Broker]) -> None:
    """While the link is down (the site broker restarts), the central broker keeps the bridge's
    session: a trainer ack and a new model published meanwhile reach the site afterwards, and
    the site's retained status published while the bridge was down reaches central. (With
    `bridge_protocol_version mqttv50`, Mosquitto 2.0's bridge asks for no session expiry and the
    ack is lost: this test fails.)"""
    central, site = tier
    topics = Topics()
    bridge_up(site)
    ack_topic = topics.drift_acks("edge-a")

    # the node's shipper session on the site: persistent, as pi_edge's (shipper.py)
    def shipper_session() -> tuple[mqtt.Client, list[bytes]]:
        got: list[bytes] = []
        subscribed = threading.Event()
        c = make_client("edge-a-batches")
        c.on_message = lambda cl, u, m: got.append(bytes(m.payload))
        c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(ack_topic, 1)
        c.on_subscribe = lambda *a: subscribed.set()
        connect(c, site.address, clean_start=False, session_expiry_s=3600)
        c.loop_start()
        assert subscribed.wait(10)
        return c, got

    c, _ = shipper_session()
    c.disconnect()
    c.loop_stop()

    site.stop()  # the link is down; the central broker stays up
    central_pub = Publisher(central.address, f"trainer-{time.time_ns()}")
    try:
        central_pub.publish(ack_topic, b'{"ack": "while the link was down"}', qos=1)
        central_pub.publish(topics.model_current, b"bundle v2", qos=1, retain=True)
    finally:
        central_pub.close()

    start(site)
    bridge_up(site)
    c, got = shipper_session()
    try:
        wait_until(lambda: got == [b'{"ack": "while the link was down"}'], 10, "the ack")
    finally:
        c.disconnect()
        c.loop_stop()
    assert_retained(site, topics.model_current, b"bundle v2")

    # site → central: a retained status and a QoS 1 batch published while central is down
    central.stop()
    bridge_up(site, up=False)
    site_pub = Publisher(site.address, f"edge-b-{time.time_ns()}")
    try:
        site_pub.publish(topics.status("edge-b"), b'{"state": "online"}', qos=1, retain=True)
    finally:
        site_pub.close()
    start(central)
    bridge_up(site)
    seen = MosquittoSub(central, topics.status("edge-b"), extra=("-C", "1", "-W", "10"))
    try:
        assert seen.wait_for(
            lambda lines: (topics.status("edge-b"), '{"state": "online"}') in lines, 10
        )
    finally:
        seen.close()


def test_the_bridge_logs_into_the_secure_profile_over_tls(
    tmp_path: Path, secure_profile: SecureProfile
) -> None:
    """Both brokers in the secure profile, the deploy file's TLS and login lines unchanged but
    for the CA path and password: the bridge logs into the central broker as a bridge identity,
    whose ACL lets it carry both directions, and on the site the Pis' own logins still apply."""
    prefix = "test/bridge"  # the profile's ACL covers test/+
    topics = Topics(prefix)
    central = start(Broker(tmp_path / "central", profile=secure_profile))
    try:
        conf = bridge_conf(
            central,
            prefix=prefix,
            tls={
                "bridge_cafile": str(secure_profile.ca_file),
                "remote_username": "bridge",  # the profile's bridge identity
                "remote_password": secure_profile.password("bridge"),
            },
        )
        assert "\nremote_username bridge\n" in conf and "\nbridge_insecure false\n" in conf
        site = start(Broker(tmp_path / "site", profile=secure_profile, extra_conf=conf))
        try:
            trainer = secure_profile.credentials("trainer")
            operator = secure_profile.credentials("operator")  # may read everything, $SYS too
            edge_login = secure_profile.credentials("edge")
            bridge_up(site, credentials=operator)
            pub = Publisher(central.address, f"trainer-{time.time_ns()}", trainer)
            try:
                pub.publish(topics.model_current, b"bundle", qos=1, retain=True)
            finally:
                pub.close()
            assert_retained(site, topics.model_current, b"bundle", edge_login)
            edge = Publisher(site.address, f"edge-{time.time_ns()}", edge_login)
            try:
                edge.publish(topics.status("edge"), b"online", qos=1, retain=True)
            finally:
                edge.close()
            assert_retained(central, topics.status("edge"), b"online", operator)
            # a central operator's command reaches the node on the site (the console's rollback)
            node_inbox = Listener(
                site.address,
                [topics.node_command("edge")],  # identity `edge` reads its own commands
                f"edge-{time.time_ns()}",
                edge_login,
            )
            try:
                console = Publisher(central.address, f"console-{time.time_ns()}", operator)
                try:
                    console.publish(topics.node_command("edge"), b"rollback", qos=1)
                finally:
                    console.close()
                assert node_inbox.wait_for(lambda m: any(p == b"rollback" for _, p, _ in m), 10)
            finally:
                node_inbox.close()
        finally:
            site.stop()
    finally:
        central.stop()
