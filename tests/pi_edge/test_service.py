"""pi_edge against a real Mosquitto and a real converted model."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nodekit.settings import build
from pi_edge import EdgeConfig, EdgeService, ModelStore
from pi_edge.__main__ import main
from protocol import (
    CLASSES,
    PayloadError,
    Prediction,
    Status,
    Topics,
    Window,
    decode_bundle,
    encode_bundle,
    encode_window,
)
from protocol.status_detail import (
    DETAIL_VERSION,
    PARTS,
    DetailReader,
    FleetDetail,
    ModelHealthDetail,
    RecentMachines,
    RolloutGroup,
    TypeLoops,
    TypeModels,
)
from protocol.window import window_to_json
from scripts.broker import Broker, free_port

from ._model import EdgeModels
from .conftest import Listener, Publisher

pytestmark = pytest.mark.broker
REPO = Path(__file__).resolve().parents[2]


def _config(
    broker_address: str, topics: Topics, models: EdgeModels, state_dir: Path, **kw: Any
) -> EdgeConfig:
    base: dict[str, Any] = {
        "broker": broker_address,
        "prefix": topics.prefix,
        "node": f"edge-{time.time_ns()}",
        "public_key": models.public_key_path,
        "state_dir": state_dir,
        "dashboard": False,
        "status_interval_s": 0.3,
        "batch_wait_ms": 1.0,
        "batch_max": 16,
    }
    base.update(kw)
    return build(EdgeConfig, **base)


@pytest.fixture
def service_factory(
    broker: Any, topics: Topics, models: EdgeModels, state_dir: Path
) -> Iterator[Callable[..., EdgeService]]:
    made: list[EdgeService] = []

    def _make(start: bool = True, **kw: Any) -> EdgeService:
        svc = EdgeService(
            _config(
                kw.pop("broker_address", broker.address),
                topics,
                models,
                kw.pop("state_dir", state_dir),
                **kw,
            ),
            public_key=models.public_key,
        )
        made.append(svc)
        return svc.start() if start else svc

    yield _make
    for svc in made:
        svc.stop()


def _window(models: EdgeModels, machine: str, seq: int, label: bool = True) -> Window:
    i = seq % len(models.x_test)
    return Window(
        machine, seq, time.time_ns(), models.x_test[i], int(models.y_test[i]) if label else None
    )


def _online(
    listener: Listener, topics: Topics, node: str, version: int | None = None, timeout: float = 15.0
) -> Status:
    topic = topics.status(node)
    found: list[Status] = []

    def pred(msgs: list[tuple[str, bytes, bool]]) -> bool:
        for t, p, _ in reversed(msgs):
            if t == topic:
                s = Status.from_json(p)
                if s.state == "online" and (version is None or s.model_version == version):
                    found.append(s)
                    return True
        return False

    assert listener.wait_for(pred, timeout), f"no online status v{version} on {topic}"
    return found[0]


def _status_where(
    listener: Listener,
    topics: Topics,
    node: str,
    cond: Callable[[Status], bool],
    timeout: float = 10.0,
) -> Status:
    topic = topics.status(node)
    found: list[Status] = []

    def pred(msgs: list[tuple[str, bytes, bool]]) -> bool:
        for t, p, _ in reversed(msgs):
            if t == topic:
                st = Status.from_json(p)
                if cond(st):
                    found.append(st)
                    return True
        return False

    assert listener.wait_for(pred, timeout), f"no matching status on {topic}"
    return found[0]


def _predictions(listener: Listener, topics: Topics, machine: str) -> list[Prediction]:
    return [Prediction.from_json(p) for p in listener.on(topics.prediction(machine))]


def _wait_preds(
    listener: Listener, topics: Topics, machine: str, n: int, timeout: float = 15.0
) -> list[Prediction]:
    topic = topics.prediction(machine)
    ok = listener.wait_for(lambda msgs: sum(t == topic for t, _, _ in msgs) >= n, timeout)
    preds = _predictions(listener, topics, machine)
    assert ok, f"only {len(preds)} of {n} predictions on {topic}"
    return preds


def test_windows_in_predictions_out_with_all_fields(
    service_factory: Callable[..., EdgeService],
    publisher: Publisher,
    listen: Any,
    topics: Topics,
    models: EdgeModels,
) -> None:
    lst = listen(topics.predictions(), topics.statuses())
    svc = service_factory(model=models.bundle_path)
    status = _online(lst, topics, svc.config.node, version=1)
    assert status.role == "edge" and status.software_version
    sent = []
    for seq in range(40):
        w = _window(models, "m01", seq, label=seq % 2 == 0)
        sent.append(w)
        payload = window_to_json(w) if seq % 5 == 0 else encode_window(w)  # JSON form too
        publisher.publish(topics.window("m01"), payload, qos=0)
    preds = _wait_preds(lst, topics, "m01", 40)
    assert sorted(p.seq for p in preds) == list(range(40))
    correct = 0
    for p in preds:
        w = sent[p.seq]
        assert p.model_version == 1 and p.classes == CLASSES
        assert p.truth == (CLASSES[w.label] if w.label is not None else None)
        assert (
            p.confidence == max(p.probabilities)
            and p.label == CLASSES[int(np.argmax(p.probabilities))]
        )
        ts = p.timestamps_ns
        assert ts["sensor"] == w.timestamp_ns <= ts["received"] <= ts["inferred"] <= ts["published"]
        assert set(p.latency_ms) == {"transport", "queue", "inference", "publish", "total"}
        assert p.latency_ms["total"] >= 0
        correct += p.label == CLASSES[int(models.y_test[p.seq % len(models.y_test)])]
    assert correct >= 32
    s = _status_where(lst, topics, svc.config.node, lambda st: st.metrics["classified"] >= 40)
    assert s.metrics["classified"] == 40 and s.metrics["drops"] == 0
    assert {"windows_per_s", "queue_depth", "uptime_s", "latency_p50_ms", "latency_p99_ms"} <= set(
        s.metrics
    )
    assert s.detail["machines"] == ["m01"]


def _bad_payloads(models: EdgeModels) -> dict[str, bytes]:
    good = encode_window(_window(models, "m02", 0))
    nan_frame = bytearray(good)
    nan_frame[-4:] = np.float32("nan").tobytes()
    short = Window("m02", 1, 1, np.ones((30, 4), np.float32))
    return {
        "bad_magic": b"XX" + bytes(60),
        "truncated": good[:-10],
        "bad_shape": encode_window(short),
        "non_finite": bytes(nan_frame),
        "too_large": b"EW" + bytes(1_100_000),
        "bad_json": b"{not json",
    }


def test_bad_payloads_are_counted_by_kind_and_good_ones_all_classified(
    service_factory: Callable[..., EdgeService],
    publisher: Publisher,
    listen: Any,
    topics: Topics,
    models: EdgeModels,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="pi_edge")
    lst = listen(topics.predictions(), topics.statuses())
    svc = service_factory(model=models.bundle_path)
    _online(lst, topics, svc.config.node, version=1)
    bad = _bad_payloads(models)
    seq = 0
    for _round in range(3):
        for payload in bad.values():
            publisher.publish(topics.window("m02"), encode_window(_window(models, "m02", seq)), 0)
            seq += 1
            publisher.publish(topics.window("m02"), payload, qos=0)
    publisher.publish(topics.window("m02"), encode_window(_window(models, "m02", seq)), 0)
    seq += 1
    publisher.publish(topics.model_current, b"not a bundle at all", qos=1)  # not retained
    preds = _wait_preds(lst, topics, "m02", seq)
    assert sorted(p.seq for p in preds) == list(range(seq))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        errors = svc.status().errors
        if errors.get("bundle_bad_magic"):
            break
        time.sleep(0.05)
    assert errors == {**dict.fromkeys(bad, 3), "bundle_bad_magic": 1}
    assert svc.model_version == 1
    window_logs = [r for r in caplog.records if "dropped a bad window" in r.getMessage()]
    assert sorted(r.args[2] for r in window_logs) == sorted(bad)  # type: ignore[index]  # what, topic, kind
    snap = svc.snapshot()
    assert snap.bad_payloads == dict.fromkeys(bad, 3)
    status = _status_where(
        lst, topics, svc.config.node, lambda st: st.errors.get("bundle_bad_magic") == 1
    )
    assert status.errors == errors


def test_hot_swap_drops_no_window_and_classifies_none_twice(
    service_factory: Callable[..., EdgeService],
    publisher: Publisher,
    listen: Any,
    topics: Topics,
    models: EdgeModels,
    state_dir: Path,
) -> None:
    lst = listen(topics.predictions(), topics.statuses())
    svc = service_factory(model=models.bundle_path)
    _online(lst, topics, svc.config.node, version=1)
    n = 600
    machines = ("m1", "m2", "m3")

    def feed() -> None:
        for seq in range(n):
            for m in machines:
                publisher.publish(topics.window(m), encode_window(_window(models, m, seq)), 0)
            time.sleep(0.002)

    feeder = threading.Thread(target=feed)
    feeder.start()
    time.sleep(0.3)
    publisher.publish(
        topics.model_current, models.bundle(2, site=topics.prefix), qos=1, retain=True
    )
    feeder.join()
    for m in machines:
        preds = _wait_preds(lst, topics, m, n, timeout=20)
        seqs = [p.seq for p in preds]
        assert len(seqs) == n and sorted(seqs) == list(range(n)), "dropped or duplicated"
        by_seq = sorted(preds, key=lambda p: p.seq)
        versions = [p.model_version for p in by_seq]
        assert versions == sorted(versions), "a window went back to the old model"
        assert versions[0] == 1 and versions[-1] == 2
    assert svc.status().metrics["drops"] == 0
    store = ModelStore(state_dir)
    assert (
        decode_bundle(store.current_path.read_bytes(), None, allow_unsigned=True).manifest.version
        == 2
    )
    assert (
        decode_bundle(store.previous_path.read_bytes(), None, allow_unsigned=True).manifest.version
        == 1
    )
    status = _online(lst, topics, svc.config.node, version=2)
    assert status.detail["last_model_error"] is None


def _foreign_key_bundle(models: EdgeModels, version: int, site: str) -> bytes:
    """A well-formed bundle signed by a key this node does not trust."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    manifest = replace(models.manifest, version=version, parent=version - 1, site=site)
    return encode_bundle(manifest, models.model, Ed25519PrivateKey.generate().sign)


def test_refused_bundles_leave_the_old_model_serving_with_the_reason_in_status(
    service_factory: Callable[..., EdgeService],
    publisher: Publisher,
    listen: Any,
    topics: Topics,
    models: EdgeModels,
) -> None:
    lst = listen(topics.predictions(), topics.statuses())
    svc = service_factory(model=models.bundle_path)
    _online(lst, topics, svc.config.node, version=1)
    tampered = bytearray(models.bundle(3, site=topics.prefix))
    tampered[len(tampered) // 2] ^= 0x01
    golden_bad = [{"x": g["x"], "probs": g["probs"][::-1]} for g in models.manifest.golden]
    cases = [
        (models.bundle(2, signed=False, site=topics.prefix), "bundle_signature", "unsigned"),
        (bytes(tampered), "bundle_signature", "does not verify"),
        (
            models.bundle(4, golden=golden_bad, site=topics.prefix),
            "bundle_golden",
            "golden vectors fail",
        ),
        (
            models.bundle(5, window_length=30, golden=[], site=topics.prefix),
            "bundle_incompatible",
            "window_length",
        ),
        (_foreign_key_bundle(models, 6, topics.prefix), "bundle_signature", "does not verify"),
        (bytes(tampered[:200]), "bundle_truncated", "its header says"),
        (b"\x00" * 64, "bundle_bad_magic", "expected"),
    ]
    for seq, (data, kind, reason) in enumerate(cases):
        before = svc.status().errors.get(kind, 0)
        publisher.publish(topics.model_current, data, qos=1, retain=True)
        deadline = time.monotonic() + 10
        status = None
        while time.monotonic() < deadline:
            msgs = lst.on(topics.status(svc.config.node))
            status = Status.from_json(msgs[-1])
            if status.errors.get(kind, 0) > before and reason in str(
                status.detail["last_model_error"]
            ):
                break
            time.sleep(0.05)
        assert status is not None and reason in str(status.detail["last_model_error"]), status
        assert status.model_version == 1
        publisher.publish(topics.window("m9"), encode_window(_window(models, "m9", seq)), 0)
        assert _wait_preds(lst, topics, "m9", seq + 1)[-1].model_version == 1


def test_starts_from_the_state_dir_with_the_broker_unreachable(
    service_factory: Callable[..., EdgeService],
    models: EdgeModels,
    topics: Topics,
    state_dir: Path,
    tmp_path: Path,
) -> None:
    ModelStore(state_dir).save(decode_bundle(models.bundle(7), models.public_key))
    port = free_port()
    svc = service_factory(broker_address=f"127.0.0.1:{port}")
    assert svc.model_version == 7  # before any broker exists
    assert svc.status().detail["model_source"].startswith("state dir")
    time.sleep(0.5)
    assert svc.broker_state != "connected"
    late = Broker(run_dir=tmp_path / "late-broker", port=port).start()
    try:
        lst = Listener(late.address, [topics.predictions(), topics.statuses()], "late-listener")
        pub = Publisher(late.address, "late-pub")
        try:
            _online(lst, topics, svc.config.node, version=7, timeout=20)
            pub.publish(topics.window("m5"), encode_window(_window(models, "m5", 0)), 0)
            assert _wait_preds(lst, topics, "m5", 1)[0].model_version == 7
        finally:
            lst.close()
            pub.close()
    finally:
        late.stop()


def test_predictions_resume_after_a_broker_restart(
    service_factory: Callable[..., EdgeService],
    publisher: Publisher,
    listen: Any,
    topics: Topics,
    models: EdgeModels,
    broker: Any,
) -> None:
    lst = listen(topics.predictions(), topics.statuses())
    svc = service_factory(model=models.bundle_path)
    _online(lst, topics, svc.config.node, version=1)
    publisher.publish(topics.window("mr"), encode_window(_window(models, "mr", 0)), 0)
    _wait_preds(lst, topics, "mr", 1)
    broker.restart()
    deadline = time.monotonic() + 30
    seq = 1
    resumed = False
    while time.monotonic() < deadline and not resumed:
        publisher.client.publish(topics.window("mr"), encode_window(_window(models, "mr", seq)))
        seq += 1
        resumed = lst.wait_for(
            lambda m: any(
                t == topics.prediction("mr") and Prediction.from_json(p).seq > 0 for t, p, _ in m
            ),
            0.3,
        )
    assert resumed, f"no prediction after the broker restart; broker state {svc.broker_state}"
    assert svc.broker_state == "connected" and svc.model_version == 1


def test_rollback_is_picked_up_by_a_running_node_and_sticks(
    service_factory: Callable[..., EdgeService],
    publisher: Publisher,
    listen: Any,
    topics: Topics,
    models: EdgeModels,
    state_dir: Path,
) -> None:
    lst = listen(topics.statuses())
    svc = service_factory(model=models.bundle_path)
    publisher.publish(
        topics.model_current, models.bundle(2, site=topics.prefix), qos=1, retain=True
    )
    assert svc.wait_for_model(2)
    assert main(["rollback", "--state-dir", str(state_dir)]) == 0
    assert svc.wait_for_model(1, timeout=5), "running node did not load the rolled-back model"
    # a reconnect re-delivers the retained v2: the rollback must stick
    svc.submit_bundle(models.bundle(2, site=topics.prefix), "mqtt")
    time.sleep(0.5)
    assert svc.model_version == 1
    publisher.publish(
        topics.model_current, models.bundle(3, site=topics.prefix), qos=1, retain=True
    )
    assert svc.wait_for_model(3)
    _online(lst, topics, svc.config.node, version=3)


def test_last_will_marks_a_killed_node_offline(
    broker: Any, listen: Any, topics: Topics, models: EdgeModels, tmp_path: Path
) -> None:
    node = f"edge-kill-{os.getpid()}"
    lst = listen(topics.statuses())
    env = {**os.environ, "EDGELOOP_PREFIX": topics.prefix, "EDGELOOP_STATE_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pi_edge",
            "run",
            "--broker",
            broker.address,
            "--node",
            node,
            "--public-key",
            str(models.public_key_path),
            "--model",
            str(models.bundle_path),
            "--no-dashboard",
            "--status-interval",
            "0.5",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        status = _online(lst, topics, node, version=1, timeout=30)
        assert status.metrics["uptime_s"] >= 0
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    topic = topics.status(node)
    assert lst.wait_for(
        lambda m: (
            bool(m) and any(t == topic and Status.from_json(p).state == "offline" for t, p, _ in m)
        ),
        15,
    )
    late = listen(topic)  # a newcomer sees the retained offline status
    assert late.wait_for(bool, 5)
    _, payload, retained = late.messages[-1]
    assert retained and json.loads(payload)["state"] == "offline"


def test_sigterm_publishes_offline_and_exits_0(
    broker: Any, listen: Any, topics: Topics, models: EdgeModels, tmp_path: Path
) -> None:
    node = f"edge-term-{os.getpid()}"
    lst = listen(topics.statuses())
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pi_edge",
            "run",
            "--broker",
            broker.address,
            "--node",
            node,
            "--prefix",
            topics.prefix,
            "--state-dir",
            str(tmp_path),
            "--insecure-dev",
            "--no-dashboard",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    _online(lst, topics, node, timeout=30)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    assert lst.wait_for(
        lambda m: any(
            Status.from_json(p).state == "offline" for t, p, _ in m if t == topics.status(node)
        ),
        5,
    )


def test_the_status_detail_is_versioned_and_its_typed_parts_read_back(
    service_factory: Callable[..., EdgeService],
    publisher: Publisher,
    listen: Any,
    topics: Topics,
    models: EdgeModels,
) -> None:
    """What the trainer, a fleet member and the console read of a node's detail goes through
    protocol.status_detail on both sides (protocol/README.md, "Status detail")."""
    lst = listen(topics.statuses())
    svc = service_factory(model=models.bundle_path, rollout_group="canary")
    _online(lst, topics, svc.config.node, version=1)
    for seq in range(20):
        publisher.publish(topics.window("m01"), encode_window(_window(models, "m01", seq)), qos=0)
    s = _status_where(lst, topics, svc.config.node, lambda st: st.metrics["classified"] >= 20)
    assert s.detail["v"] == DETAIL_VERSION and next(iter(s.detail)) == "v"
    bad: list[PayloadError] = []
    reader = DetailReader(s.detail, "edge", bad.append)
    parts = {p: reader.get(p) for p in PARTS if p.ROLE == "edge"}
    # not a fleet member; serving the built-in type alone: no `types` nor `type_loops` (v 1)
    assert {p for p, got in parts.items() if got is None} == {FleetDetail, TypeModels, TypeLoops}
    assert bad == [] and reader.rollbacks() == ((), 0)
    recent, group = parts[RecentMachines], parts[RolloutGroup]
    assert isinstance(recent, RecentMachines) and recent.ids == ("m01",)
    assert isinstance(group, RolloutGroup) and group.group == "canary"
    health = parts[ModelHealthDetail]
    assert isinstance(health, ModelHealthDetail) and health.serving.windows == 20


def test_a_fleet_member_counts_a_malformed_fleet_detail_and_ignores_that_node(
    service_factory: Callable[..., EdgeService], topics: Topics, models: EdgeModels
) -> None:
    svc = service_factory(model=models.bundle_path, fleet="line-1")
    assert svc.fleet is not None
    fleet = FleetDetail("line-1", ("pi-x",), 0, 0, 0, 1, 0, 6.0).to_json_obj()

    def heard(topic_node: str, node: str, detail: dict[str, Any]) -> None:
        status = Status(node, "edge", "online", "0.1.0", detail=detail)
        svc._on_status(f"{topics.prefix}/nodes/{topic_node}/status", status.to_json())

    heard("pi-x", "pi-x", {"v": 1, "fleet": {**fleet, "group": 3}})  # bad_id
    heard("pi-y", "pi-y", {"v": 1, "fleet": {**fleet, "owned": 1}})  # owned > seen: bad_field
    heard("pi-w", "pi-w", {"v": 3, "fleet": fleet})  # bad_version
    heard("pi v", "pi-v", {"v": 1, "fleet": fleet})  # another node's topic: bad_id
    heard("pi-z", "pi-z", {"v": 1, "fleet": fleet})
    members = svc.fleet.membership.members(time.monotonic())
    assert members == tuple(sorted((svc.config.node, "pi-z")))
    errors = svc.status().errors  # the node's own status still builds (its members are ids)
    assert (errors.get("bad_id"), errors.get("bad_field"), errors.get("bad_version")) == (2, 1, 1)
