"""Issue 23, pi_edge's half, as an attacker would try it: real pi_edge nodes on a real
secure-profile Mosquitto (TLS, a login per role, the ACL), a hostile client with the lowest login
that can do each attack (`sensor`; `operator` for node commands), and a ledger of what the nodes
did. Each test proves the attack is refused or harmless and that nothing good is lost.

tests/faults/README.md maps each attack of the issue's table to its test here.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nodekit.settings import resolve
from pi_edge.config import EdgeConfig
from pi_edge.model.health_watch import HealthState, Verdict
from pi_edge.model.state_dir import ModelStore
from pi_edge.service import EdgeService
from protocol import Status, Topics, Window, encode_window
from protocol.fleet import rendezvous_owner
from protocol.labels import LabelEvent
from protocol.node_command import NodeCommand
from protocol.status_detail import FleetDetail
from scripts.broker import Broker
from scripts.secure_profile import SecureProfile, enroll
from tests.pi_edge._model import EdgeModels
from tests.pi_edge.conftest import Listener, Publisher

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180)]


def _until(cond: Callable[[], object], timeout: float, what: str) -> float:
    """Seconds until `cond()` held; fails the test naming `what` after `timeout`."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.02)
    return time.monotonic() - t0


class Site:
    """The secure broker of one test: each node logs in as its own edge identity (enrolled on
    first use); the hostile clients as asked."""

    def __init__(
        self, broker: Broker, profile: SecureProfile, models: EdgeModels, topics: Topics, tmp: Path
    ) -> None:
        self.broker, self.profile, self.models, self.topics, self.tmp = (
            broker,
            profile,
            models,
            topics,
            tmp,
        )
        self.services: list[EdgeService] = []
        self.clients: list[Publisher | Listener] = []

    def node(self, name: str, **flags: str) -> EdgeService:
        self._enroll(name, "edge")
        cfg = resolve(
            EdgeConfig,
            env=self.profile.env(name),
            flags={
                "broker": self.broker.address,
                "prefix": self.topics.prefix,
                "node": name,
                "public_key": str(self.models.public_key_path),
                "state_dir": str(self.tmp / name),
                "model": str(self.models.bundle_path),
                "dashboard": False,
                "status_interval_s": "0.3",
                **flags,
            },
        )
        svc = EdgeService(cfg, public_key=self.models.public_key).start()
        self.services.append(svc)
        assert svc.wait_for_model(None, 20), "the node loaded no model"
        _until(lambda: svc.broker_state == "connected", 20, f"{name} connected")
        return svc

    def client(self, role: str) -> Publisher:
        pub = Publisher(
            self.broker.address, f"{role}-{time.time_ns()}", self.profile.credentials(role)
        )
        self.clients.append(pub)
        return pub

    def listen(self, *filters: str) -> Listener:
        """An operator's ear, on an operator identity of its own (one login, one connection)."""
        name = f"ear-{len(self.clients)}"
        self._enroll(name, "operator")
        ear = Listener(
            self.broker.address,
            list(filters),
            f"ear-{time.time_ns()}",
            self.profile.credentials(name),
        )
        self.clients.append(ear)
        return ear

    def _enroll(self, name: str, role: str) -> None:
        if name not in self.profile.roles():  # every device its own identity (issue 23 item 1)
            enroll(self.profile, name, role)
            self.broker.reload()  # SIGHUP: the password file and the ACL, no restart
            time.sleep(0.3)

    def close(self) -> None:
        for svc in self.services:
            svc.stop()
        for c in self.clients:
            c.client.disconnect()
            c.client.loop_stop()


@pytest.fixture
def secure_site(
    secure_broker: Broker,
    secure_profile: SecureProfile,
    models: EdgeModels,
    topics: Topics,
    tmp_path: Path,
) -> Iterator[Site]:
    s = Site(secure_broker, secure_profile, models, topics, tmp_path)
    yield s
    s.close()


def _windows(
    models: EdgeModels, machine: str, seqs: range, label: int | None = None
) -> list[tuple[str, bytes]]:
    now = time.time_ns()
    return [
        (
            f"{machine}",
            encode_window(
                Window(
                    machine,
                    seq,
                    now + i * 1000,
                    models.x_test[seq % len(models.x_test)].astype(np.float32),
                    label,
                )
            ),
        )
        for i, seq in enumerate(seqs)
    ]


def _predictions(ear: Listener) -> list[dict[str, Any]]:
    return [json.loads(p) for t, p, _ in list(ear.messages) if t.endswith("/prediction")]


# ------------------------------------------------------------------------------ commands
def test_rollback_commands_are_idempotent_addressed_and_never_bring_a_blocked_model_back(
    secure_site: Site, models: EdgeModels, topics: Topics
) -> None:
    site = secure_site
    trainer, operator, sensor = (
        site.client("trainer"),
        site.client("operator"),
        site.client("sensor"),
    )
    svc = site.node("pi-a")
    assert svc._label_trust is False  # a node that logs in takes no in-band label by default
    store = ModelStore(site.tmp / "pi-a")
    command = topics.node_command("pi-a")

    def results() -> dict[str, int]:
        detail = svc.status().detail["commands"]
        return {k: v for k, v in detail.items() if k != "last" and v}

    for v in (2, 3):
        trainer.publish(topics.model_current, models.bundle(v, site=topics.prefix), retain=True)
        assert svc.wait_for_model(v, 20), f"the node did not take v{v}"

    # the operator's rollback from v3, and its QoS 1 duplicate (the same payload, the same id)
    from_3 = NodeCommand("rollback", id="console@1", from_version=3).to_json()
    operator.publish(command, from_3)
    operator.publish(command, from_3)
    assert svc.wait_for_model(2, 20)
    _until(lambda: results().get("duplicate") == 1, 10, "the duplicate counted")
    # the same rollback pressed again (a new id), and an old console's command (no from)
    operator.publish(command, NodeCommand("rollback", id="console@2", from_version=3).to_json())
    operator.publish(command, NodeCommand("rollback", id="console@old").to_json())
    _until(lambda: results().get("stale") == 1, 10, "the repeat refused as stale")
    _until(lambda: results().get("unaddressed") == 1, 10, "the v1 command refused")
    # the sensor login may not send commands at all (the ACL drops it)
    # (from v2, which it serves now: were it let through, it would count "failed", below)
    sensor.client.publish(command, NodeCommand("rollback", id="evil", from_version=2).to_json(), 1)

    # v4 comes, the node finds it clearly worse by itself (the health watch's verdict), then the
    # operator, who saw v4 in the status, presses b: stale, nothing happens
    trainer.publish(topics.model_current, models.bundle(4, site=topics.prefix), retain=True)
    assert svc.wait_for_model(4, 20)
    svc.models._settled(4, Verdict(HealthState.WORSE, "clearly worse (injected verdict)"))
    assert svc.wait_for_model(2, 20), "no automatic rollback"
    operator.publish(command, NodeCommand("rollback", id="console@3", from_version=4).to_json())
    _until(lambda: results().get("stale") == 2, 10, "b after the automatic rollback: stale")
    time.sleep(1.0)  # the retained v4 is heard again on every reconnect: blocked
    assert svc.model_version == 2
    assert results() == {"done": 1, "duplicate": 1, "stale": 2, "unaddressed": 1}
    status = svc.status()
    assert status.errors.get("command_stale") == 2 and status.errors.get("command_duplicate") == 1
    rollbacks = [(r["from"], r["to"], r["auto"]) for r in status.detail["rollbacks"]]
    assert rollbacks == [(3, 2, False), (4, 2, True)]
    # v3's block went when v4 came (older than the high-water mark, the network cannot bring
    # it back: a replay); v4 is blocked; nothing is left to roll back to
    assert store.blocked() == [4] and store.highest() == 4 and not store.previous_path.exists()
    last = status.detail["commands"]["last"]
    print(f"\n[trust] node commands: {results()}; last: {[c['result'] for c in last]}")

    # a restart: the blocked versions stay out (current.bundle is v2; the retained v4 ignored)
    svc.stop()
    site.services.remove(svc)
    svc = site.node("pi-a")
    time.sleep(1.0)
    assert svc.model_version == 2 and store.blocked() == [4]

    # nothing good lost: windows are still classified, by v2
    ear = site.listen(topics.predictions())
    for machine, frame in _windows(models, "m01", range(5)):
        sensor.publish(topics.window(machine), frame, qos=0)
    _until(lambda: len(_predictions(ear)) == 5, 10, "5 predictions after the attacks")
    assert {p["model_version"] for p in _predictions(ear)} == {2}
    trainer.publish(topics.model_current, b"", retain=True)


# ------------------------------------------------------------------------------ fleet
MACHINES = tuple(f"m{i:02d}" for i in range(1, 17))
HZ = 8.0


class Feeder:
    """The simulator's part: every machine's windows at HZ (sensor login), with a ledger of
    which (machine, seq) were sent when."""

    def __init__(self, pub: Publisher, topics: Topics, models: EdgeModels) -> None:
        self.pub, self.topics, self.models = pub, topics, models
        self.sent: dict[tuple[str, int], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        seq = 0
        while not self._stop.wait(1 / HZ):
            seq += 1
            for m in MACHINES:
                x = self.models.x_test[seq % len(self.models.x_test)].astype(np.float32)
                frame = encode_window(Window(m, seq, time.time_ns(), x))
                self.sent[(m, seq)] = time.monotonic()
                self.pub.client.publish(self.topics.window(m), frame, qos=0)

    def __enter__(self) -> Feeder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def audit(self, ear: Listener, start: float, end: float) -> tuple[int, int, int]:
        """(windows sent in [start, end), of them without a prediction, with more than one)."""
        counts = Counter((p["machine"], p["seq"]) for p in _predictions(ear))
        sent = [k for k, t in list(self.sent.items()) if start <= t < end]
        return (
            len(sent),
            sum(1 for k in sent if counts[k] == 0),
            sum(1 for k in sent if counts[k] > 1),
        )


def _status(node: str, state: str = "online", group: str = "line-1", role: str = "edge") -> bytes:
    fleet = FleetDetail(group, (node,), 0, 0, 0, 1, 0, 6.0).to_json_obj()
    detail = {"v": 1, "fleet": fleet} if state == "online" else {}
    return Status(node, role, state, "0.0.0", timestamp=time.time(), detail=detail).to_json()


def test_forged_fleet_statuses_neither_orphan_nor_double_classify_machines(
    secure_site: Site, models: EdgeModels, topics: Topics
) -> None:
    site = secure_site
    members = "pi-a,pi-b"  # the site's list: phantoms of other ids take nothing
    a = site.node("pi-a", fleet="line-1", fleet_members=members)
    b = site.node("pi-b", fleet="line-1", fleet_members=members)
    assert a.fleet is not None and b.fleet is not None
    fa, fb = a.fleet, b.fleet
    both = ("pi-a", "pi-b")
    lost_if_b_gone = [m for m in MACHINES if rendezvous_owner(m, both) == "pi-b"]
    assert lost_if_b_gone and len(lost_if_b_gone) < len(MACHINES)
    sensor = site.client("sensor")
    ear = site.listen(topics.predictions())
    with Feeder(sensor, topics, models) as feed:
        for own in (fa, fb):
            _until(lambda own=own: own.members == both, 20, f"{own.node} sees both")
        time.sleep(1.0)
        t0 = time.monotonic()
        time.sleep(2.0)
        t1 = time.monotonic()
        time.sleep(1.0)
        sent, gaps, dups = feed.audit(ear, t0, t1)
        print(f"\n[trust] fleet steady: windows {sent}, without a prediction {gaps}, twice {dups}")
        assert sent > 0 and (gaps, dups) == (0, 0)

        # phantoms: 20 "online" members of the group on topics of their own (the per-device ACL
        # drops them at the broker), 20 statuses on the sensor's own topic naming a real node
        # (delivered: the nodes' sender check refuses them), a trainer-role "online"
        gens = (fa.generation, fb.generation)
        t0 = time.monotonic()
        for i in range(20):
            ghost = topics.status(f"ghost-{i}")
            sensor.publish(ghost, _status(f"ghost-{i}"), retain=True)
            sensor.publish(topics.status("sensor"), _status("pi-a", "offline"), retain=True)
        sensor.publish(topics.status("sensor"), _status("sensor", role="trainer"))
        time.sleep(2.0)
        t1 = time.monotonic()
        time.sleep(1.0)
        assert fa.members == both and fb.members == both
        assert (fa.generation, fb.generation) == gens  # nothing moved
        sent, gaps, dups = feed.audit(ear, t0, t1)
        print(f"[trust] 40 phantom statuses: windows {sent}, without {gaps}, twice {dups}")
        assert (gaps, dups) == (0, 0)
        assert a.status().errors.get("bad_id", 0) >= 20  # the statuses naming another node

        # a forged "offline" for the live pi-b, retained, on pi-b's own topic: the per-device
        # ACL (nodes/%u/status) drops it at the broker; were it let through (a stolen pi-b
        # login), pi-b sees a status it did not publish and republishes its own at once
        ts = time.monotonic()
        sensor.publish(topics.status("pi-b"), _status("pi-b", "offline"), retain=True)
        time.sleep(2.0)
        sent, gaps, dups = feed.audit(ear, ts, time.monotonic() - 0.5)
        print(
            f"[trust] forged offline for pi-b: refused by the broker; windows {sent}, without "
            f"a prediction {gaps}, twice {dups} (of pi-b's {len(lost_if_b_gone)} machines)"
        )
        assert fa.members == both and (fa.generation, fb.generation) == gens
        assert b.status().errors.get("status_overwritten", 0) == 0
        assert (gaps, dups) == (0, 0)
        retained = site.listen(topics.status("pi-b"))
        _until(lambda: bool(retained.messages), 5, "pi-b's retained status")
        assert Status.from_json(retained.messages[-1][1]).state == "online"
        t0 = time.monotonic()
        time.sleep(2.0)
        sent, gaps, dups = feed.audit(ear, t0, time.monotonic() - 0.5)
        print(f"[trust] steady after the attacks: windows {sent}, without {gaps}, twice {dups}")
        assert (gaps, dups) == (0, 0)
    sensor.publish(topics.status("sensor"), b"", retain=True)


# ------------------------------------------------------------------------------ labels
def test_in_band_labels_from_untrusted_sources_are_dropped_and_a_maintenance_label_wins(
    secure_site: Site, models: EdgeModels, topics: Topics
) -> None:
    site = secure_site
    # a node that logs in trusts no in-band label by default; this site trusts m02's rig only
    svc = site.node("pi-l", window_labels="m02")
    sensor, operator = site.client("sensor"), site.client("operator")
    ear = site.listen(topics.predictions())
    pump = 3  # CLASSES.index("pump_fault")
    for machine, frame in _windows(models, "m01", range(20), label=pump):  # untrusted
        sensor.publish(topics.window(machine), frame, qos=0)
    _until(lambda: len(_predictions(ear)) == 20, 10, "20 predictions of m01")
    labels = svc.status().detail["labels"]
    assert labels["inband_untrusted"] == 20
    assert all(p.get("truth") is None for p in _predictions(ear))
    assert svc.status().detail["buffer"]["labeled"] == 0  # nothing to steer a fine-tune with

    # m02 is trusted, but a technician says it has a bearing fault: the maintenance label wins
    event = LabelEvent("m02", "bearing_fault", time.time() - 60, source="anna")
    operator.publish(topics.labels, event.to_json())
    _until(lambda: svc.status().detail["labels"]["events"] == 1, 10, "the label applied")
    for machine, frame in _windows(models, "m02", range(10), label=0):  # in-band: normal
        sensor.publish(topics.window(machine), frame, qos=0)
    _until(lambda: len(_predictions(ear)) == 30, 10, "10 predictions of m02")
    truths = [p.get("truth") for p in _predictions(ear) if p["machine"] == "m02"]
    assert truths == ["bearing_fault"] * 10
    assert svc.status().detail["buffer"]["labeled"] == 10
    assert svc.status().detail["labels"]["inband_untrusted"] == 20
    print(
        f"\n[trust] 20 in-band labels from an untrusted machine: dropped ({labels}); "
        f"a maintenance label over 10 trusted in-band ones: {truths[0]} × {len(truths)}"
    )
