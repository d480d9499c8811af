"""Sparkplug B: the pure rules (seq, bdSeq, by exception), and a node against a real Mosquitto
whose every captured payload is decoded by Eclipse Tahu's JavaScript library (not our code).

The decoder is tests/tools/sparkplug/decode.js (`sparkplug-payload`, pinned in its
package-lock.json); `make setup` installs it with `npm ci --prefix tests/tools/sparkplug`.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nodekit.guard import Faults
from nodekit.settings import resolve
from pi_edge import EdgeService
from pi_edge.config import EdgeConfig
from pi_edge.report.outputs import HistoryRow
from pi_edge.report.sparkplug import (
    CONFIDENCE_DEADBAND,
    STATE_FILE,
    BdSeqStore,
    Devices,
    Reading,
    SparkplugNode,
    device_metrics,
)
from protocol import ConfigError, PayloadError, Topics, Window, encode_window
from protocol.sparkplug import (
    REBIRTH,
    DataType,
    Metric,
    Seq,
    SparkplugTopics,
    next_bd_seq,
)
from protocol.sparkplug.payload import decode_payload, encode_payload, rebirth_requested

from ._model import EdgeModels
from .conftest import Listener, Publisher
from .test_service import service_factory  # noqa: F401 (a fixture)

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tests" / "tools" / "sparkplug"
DEVICE_TYPES = {
    "state": "String",
    "fault": "Boolean",
    "class": "String",
    "window class": "String",
    "confidence": "Float",
    "drift": "String",
    "model version": "Int64",
}
NODE_TYPES = {
    "bdSeq": "Int64",
    "Node Control/Rebirth": "Boolean",
    "edgeloop version": "String",
    "model version": "Int64",
}


def _node() -> list[str]:
    exe = shutil.which("node")
    assert exe, "node missing: sudo apt-get install -y nodejs npm (or make system-deps)"
    assert (TOOL / "node_modules" / "sparkplug-payload").is_dir(), (
        "the independent Sparkplug decoder is not installed: npm ci --prefix tests/tools/sparkplug"
    )
    return [exe, str(TOOL / "decode.js")]


def tahu_decode(lines: list[str]) -> list[dict[str, Any]]:
    """Decode 'TOPIC HEX' lines with Eclipse Tahu's sparkplug-payload (node)."""
    out = subprocess.run(
        [*_node(), "--hex"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [json.loads(line) for line in out.stdout.splitlines()]


def tahu_encode(payload: dict[str, Any]) -> bytes:
    out = subprocess.run(
        [*_node(), "--encode", json.dumps(payload)], capture_output=True, check=True, timeout=60
    )
    return out.stdout


# -- pure ---------------------------------------------------------------------------------------
def test_seq_counts_every_message_after_nbirth_and_wraps_after_255() -> None:
    s = Seq()
    assert s.reset() == 0
    seen = [s.next() for _ in range(300)]
    assert seen[:3] == [1, 2, 3]
    assert seen[254:257] == [255, 0, 1]
    assert all(0 <= v <= 255 for v in seen)
    assert s.reset() == 0 and s.next() == 1  # a rebirth starts again


def test_bd_seq_is_persisted_and_advances_once_per_session_wrapping_at_255(tmp_path: Path) -> None:
    path = tmp_path / "state" / STATE_FILE
    assert BdSeqStore(path).load() is None
    assert [BdSeqStore(path).advance() for _ in range(3)] == [0, 1, 2]  # a new store each time
    assert json.loads(path.read_text())["bd_seq"] == 2
    path.write_text(json.dumps({"v": 1, "bd_seq": 255}))
    assert BdSeqStore(path).advance() == 0
    for damaged in ("{", '{"bd_seq": 300}', '{"bd_seq": true}', "[]"):
        path.write_text(damaged)
        assert BdSeqStore(path).load() is None
        assert BdSeqStore(path).advance() == 0
    assert (next_bd_seq(None), next_bd_seq(0), next_bd_seq(254), next_bd_seq(-3)) == (0, 1, 255, 0)


def _reading(**kw: Any) -> Reading:
    base = Reading("normal", "normal", "normal", 0.9, "ok", 1, 1_700_000_000_000)
    return base._replace(**kw)


def test_devices_report_by_exception_with_a_confidence_deadband() -> None:
    d = Devices(silence_s=10.0)
    [(kind, dev, metrics)] = d.take({"m01": _reading()}, now=0.0)
    assert (kind, dev) == ("DBIRTH", "m01")
    assert {m.name: m.datatype.name for m in metrics} == DEVICE_TYPES
    assert d.take({"m01": _reading()}, now=0.1) == []  # nothing changed: nothing sent
    # confidence creeps by less than the deadband each time: sent once it moved ≥ 0.05 in all
    sent = []
    for i in range(1, 8):
        sent += d.take({"m01": _reading(confidence=0.9 - 0.02 * i)}, now=0.1 * i)
    confidences = [m.value for _, _, ms in sent for m in ms]
    assert [round(float(c or 0), 2) for c in confidences] == [0.84, 0.78]
    assert all(k == "DDATA" and [m.name for m in ms] == ["confidence"] for k, _, ms in sent)
    # a fault: state, fault and class change; confidence back up by more than the deadband
    [(kind, _, metrics)] = d.take(
        {"m01": _reading(state="fault", cls="bearing_fault", confidence=0.99)}, now=1.0
    )
    assert kind == "DDATA"
    assert [(m.name, m.value) for m in metrics] == [
        ("state", "fault"),
        ("fault", True),
        ("class", "bearing_fault"),
        ("confidence", 0.99),
    ]
    assert CONFIDENCE_DEADBAND == 0.05


def test_a_silent_machine_dies_comes_back_with_a_birth_and_an_evicted_one_dies() -> None:
    d = Devices(silence_s=2.0)
    d.take({"m01": _reading(), "m02": _reading()}, now=0.0)
    d.take({"m01": _reading()}, now=1.5)
    assert d.silent(now=1.9) == []
    assert [(k, m) for k, m, _ in d.silent(now=2.5)] == [("DDEATH", "m02")]
    assert d.silent(now=2.6) == []  # dead once
    assert d.alive() == ["m01"]
    assert [k for k, _, _ in d.births()] == ["DBIRTH"]  # after an NBIRTH: the live ones only
    back = d.take({"m02": _reading(drift="drift")}, now=3.0)
    assert [(k, m) for k, m, _ in back] == [("DBIRTH", "m02")]
    assert {m.name: m.value for m in back[0][2]}["drift"] == "drift"
    assert [(k, m) for k, m, _ in d.forget(["m02", "never-seen"])] == [("DDEATH", "m02")]
    assert len(d) == 1


def test_unknown_state_has_a_null_class_and_no_fault() -> None:
    values = {m.name: m.value for m in device_metrics(_reading(state="unknown", cls=None))}
    assert values["class"] is None and values["fault"] is False and values["state"] == "unknown"


def test_topics_refuse_ids_sparkplug_forbids_and_the_flag_checks_the_group() -> None:
    t = SparkplugTopics("plant1", "pi-1")
    assert (t.nbirth, t.ndeath, t.ncmd) == (
        "spBv1.0/plant1/NBIRTH/pi-1",
        "spBv1.0/plant1/NDEATH/pi-1",
        "spBv1.0/plant1/NCMD/pi-1",
    )
    assert t.dbirth("m01") == "spBv1.0/plant1/DBIRTH/pi-1/m01"
    assert t.ddeath("m01") == "spBv1.0/plant1/DDEATH/pi-1/m01"
    for bad in ("a/b", "a+", "#", ""):
        with pytest.raises(PayloadError):
            SparkplugTopics(bad, "pi-1")
        with pytest.raises(PayloadError):
            t.ddata(bad)
    with pytest.raises(ConfigError, match="sparkplug"):
        resolve(EdgeConfig, flags={"sparkplug": "hall/1"})
    cfg = resolve(EdgeConfig, env={"EDGELOOP_SPARKPLUG": "plant1"})
    assert cfg.report.sparkplug == "plant1" and cfg.report.sparkplug_silence_s == 30.0
    assert resolve(EdgeConfig, env={}).report.sparkplug is None  # off by default


def test_a_garbage_or_oversized_command_is_a_payload_error_and_only_true_asks_for_rebirth() -> None:
    for bad in (b"\xff\xff\xff", b"\x12\x05abc", bytes(70_000)):
        with pytest.raises(PayloadError) as err:
            decode_payload(bad)
        assert err.value.kind == "bad_sparkplug"
    no = encode_payload([Metric(REBIRTH, DataType.Boolean, False)], timestamp_ms=1)
    assert not rebirth_requested(decode_payload(no))
    assert not rebirth_requested(decode_payload(b""))  # an empty payload is an empty message


def test_our_payloads_decode_with_the_tahu_library_and_its_commands_with_ours() -> None:
    metrics = [
        Metric("bdSeq", DataType.Int64, 255),
        Metric("state", DataType.String, "fault"),
        Metric("class", DataType.String, None),
        Metric("confidence", DataType.Float, 0.75),
        Metric("fault", DataType.Boolean, True),
        Metric("model version", DataType.Int64, 4_000_000_000),
    ]
    data = encode_payload(metrics, timestamp_ms=1_700_000_000_123, seq=17)
    [got] = tahu_decode([f"t {data.hex()}"])
    payload = got["payload"]
    assert payload["timestamp"] == 1_700_000_000_123 and payload["seq"] == 17
    assert [(m["name"], m["type"], m["value"]) for m in payload["metrics"]] == [
        ("bdSeq", "Int64", 255),
        ("state", "String", "fault"),
        ("class", "String", None),
        ("confidence", "Float", 0.75),
        ("fault", "Boolean", True),
        ("model version", "Int64", 4_000_000_000),
    ]
    ncmd = tahu_encode(
        {"timestamp": 1, "metrics": [{"name": REBIRTH, "type": "Boolean", "value": True}]}
    )
    assert rebirth_requested(decode_payload(ncmd))


# -- against a real broker ----------------------------------------------------------------------
class Capture:
    """`mosquitto_sub -F '%t %x'` on spBv1.0/{group}/#, written to a file as it arrives."""

    def __init__(self, broker: Any, group: str, path: Path) -> None:
        exe = shutil.which("mosquitto_sub")
        assert exe, "mosquitto_sub missing: sudo apt-get install -y mosquitto-clients"
        self.path = path
        self._fh = path.open("w")
        cmd = [exe, "-h", broker.host, "-p", str(broker.port), "-V", "mqttv5"]
        cmd += ["-t", f"spBv1.0/{group}/#", "-F", "%t %x"]
        self.proc = subprocess.Popen(cmd, stdout=self._fh)

    def lines(self) -> list[str]:
        return [line for line in self.path.read_text().splitlines() if line.strip()]

    def wait_for(self, pred: Callable[[list[str]], bool], timeout: float = 20.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.lines()
            if pred(lines):
                return lines
            time.sleep(0.05)
        raise AssertionError(f"timed out; captured so far: {[ln[:60] for ln in self.lines()]}")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self._fh.close()


@pytest.fixture
def capture(broker: Any, tmp_path: Path) -> Iterator[Callable[[str], Capture]]:
    made: list[Capture] = []

    def _make(group: str) -> Capture:
        cap = Capture(broker, group, tmp_path / f"capture-{len(made)}.txt")
        made.append(cap)
        time.sleep(0.5)  # mosquitto_sub has subscribed
        return cap

    yield _make
    for cap in made:
        cap.close()


def _kinds(lines: list[str]) -> list[str]:
    return [line.split(" ", 1)[0].split("/")[2] for line in lines]


def _count(kind: str, n: int, device: str | None = None) -> Callable[[list[str]], bool]:
    def pred(lines: list[str]) -> bool:
        topics = [line.split(" ", 1)[0] for line in lines]
        hits = [t for t in topics if t.split("/")[2] == kind]
        if device is not None:
            hits = [t for t in hits if t.endswith(f"/{device}")]
        return len(hits) >= n

    return pred


def _metrics(msg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in msg["payload"].get("metrics", [])}


@pytest.mark.broker
def test_a_node_is_a_sparkplug_edge_node_with_births_data_deaths_rebirth_and_will(
    service_factory: Callable[..., EdgeService],  # noqa: F811
    models: EdgeModels,
    broker: Any,
    topics: Topics,
    publisher: Publisher,
    capture: Callable[[str], Capture],
    state_dir: Path,
) -> None:
    group = f"g{time.time_ns()}"
    cap = capture(group)
    svc = service_factory(
        model=models.bundle_path, sparkplug=group, sparkplug_silence_s=1.5, state_windows=2
    )
    node = svc.config.node
    spb = SparkplugTopics(group, node)
    assert svc.wait_for_model(1)
    seq = 0

    def feed(*machines: str, n: int = 4, same: bool = False) -> None:
        nonlocal seq
        for _ in range(n):
            for m in machines:  # classes vary (data by exception), or one window again and again
                x = models.x_test[0 if same else seq % len(models.x_test)]
                publisher.publish(topics.window(m), encode_window(Window(m, seq, 0, x)), qos=0)
            seq += 1
            time.sleep(0.05)

    # births: NBIRTH, then a DBIRTH per machine as it first appears
    feed("m01", "m02")
    cap.wait_for(lambda ls: _count("DBIRTH", 1, "m01")(ls) and _count("DBIRTH", 1, "m02")(ls))
    # m01 goes on, m02 goes silent: DDEATH m02 after 1.5 s; m02 back: DBIRTH m02 again
    deadline = time.monotonic() + 15
    while not _count("DDEATH", 1, "m02")(cap.lines()) and time.monotonic() < deadline:
        feed("m01", n=2)
    assert _count("DDEATH", 1, "m02")(cap.lines()), "no DDEATH for the silent machine"
    assert not _count("DDEATH", 1, "m01")(cap.lines()), "a machine with windows died"
    feed("m01", "m02", n=2)
    cap.wait_for(_count("DBIRTH", 2, "m02"))

    # rebirth: an NCMD encoded by the Tahu library, sent by mosquitto_pub
    ncmd = state_dir.parent / "ncmd.bin"
    ncmd.write_bytes(
        tahu_encode(
            {"timestamp": 1, "metrics": [{"name": REBIRTH, "type": "Boolean", "value": True}]}
        )
    )
    pub = shutil.which("mosquitto_pub")
    assert pub, "mosquitto_pub missing: sudo apt-get install -y mosquitto-clients"
    cmd = [pub, "-h", broker.host, "-p", str(broker.port), "-t", spb.ncmd, "-f", str(ncmd)]
    subprocess.run([*cmd, "-q", "1"], check=True, timeout=30)
    cap.wait_for(_count("NBIRTH", 2))
    cap.wait_for(lambda ls: _count("DBIRTH", 2, "m01")(ls) and _count("DBIRTH", 3, "m02")(ls))

    # the connection dies without DISCONNECT, twice: each time the broker publishes the Will
    # (NDEATH) of that session; paho reconnects with a new bdSeq (and Will) and births again
    assert svc.sparkplug is not None
    for deaths in (1, 2):
        sock = svc.sparkplug._client.socket()
        sock.shutdown(socket.SHUT_RDWR)
        cap.wait_for(_count("NDEATH", deaths))
        cap.wait_for(_count("NBIRTH", 2 + deaths))
        feed("m01", n=2)
        cap.wait_for(_count("DBIRTH", 2 + deaths, "m01"))
    feed("m01", n=6, same=True)  # the same class 6 times: a debounced state (2 windows)
    time.sleep(0.5)
    # a clean stop publishes NDEATH itself
    svc.stop()
    lines = cap.wait_for(_count("NDEATH", 3))

    decoded = tahu_decode(lines)
    assert all("error" not in d for d in decoded), [d for d in decoded if "error" in d]
    kinds = _kinds(lines)
    assert all(d["topic"].startswith(f"spBv1.0/{group}/") for d in decoded)
    assert all(d["topic"].split("/")[3] == node for d in decoded)

    # every payload: the metrics and types Sparkplug hosts expect
    nbirths = [d for d, k in zip(decoded, kinds, strict=True) if k == "NBIRTH"]
    ndeaths = [d for d, k in zip(decoded, kinds, strict=True) if k == "NDEATH"]
    for d in nbirths:
        metrics = _metrics(d)
        assert {n: m["type"] for n, m in metrics.items()} == NODE_TYPES
        assert metrics[REBIRTH]["value"] is False and metrics["model version"]["value"] == 1
        assert d["payload"]["seq"] == 0
    for d in ndeaths:
        assert list(_metrics(d)) == ["bdSeq"] and "seq" not in d["payload"]
    last: dict[str, dict[str, Any]] = {}  # device -> metric -> value last reported
    data = 0
    for d, kind in zip(decoded, kinds, strict=True):
        device = d["topic"].split("/")[-1]
        metrics = _metrics(d)
        if kind == "DBIRTH":
            assert {n: m["type"] for n, m in metrics.items()} == DEVICE_TYPES
            values = {n: m["value"] for n, m in metrics.items()}
            assert values["state"] in ("normal", "fault", "unknown")
            assert values["fault"] is (values["state"] == "fault")
            assert (values["class"] is None) is (values["state"] == "unknown")
            assert values["drift"] in ("ok", "suspect", "drift")
            assert 0.0 <= values["confidence"] <= 1.0 and values["model version"] == 1
            assert all(m["timestamp"] > 1_600_000_000_000 for m in metrics.values())
            last[device] = values
        elif kind == "DDATA":
            data += 1
            assert metrics and set(metrics) <= set(DEVICE_TYPES)
            for name, m in metrics.items():  # only what changed, in the declared type
                assert m["type"] == DEVICE_TYPES[name]
                if name == "confidence":
                    assert abs(m["value"] - last[device][name]) >= CONFIDENCE_DEADBAND - 1e-6
                else:
                    assert m["value"] != last[device][name], (name, m)
                last[device][name] = m["value"]
        elif kind == "DDEATH":
            assert metrics == {} and device in ("m01", "m02")
    assert data >= 1, "no DDATA: the test windows should change some machine's class"
    assert last["m01"]["state"] in ("normal", "fault"), "the steady machine has a state"
    assert last["m01"]["class"] == last["m01"]["window class"]

    # seq: 0 on each NBIRTH, then +1 on every message of the session; NDEATH has none
    expected = None
    assert kinds.count("NCMD") == 1  # ours, from mosquitto_pub: the node publishes none
    for d, kind in zip(decoded, kinds, strict=True):
        if kind in ("NDEATH", "NCMD"):
            continue
        s = d["payload"]["seq"]
        if kind == "NBIRTH":
            assert s == 0
        else:
            assert s == expected, (kind, d["topic"], s, expected)
        expected = (s + 1) % 256

    # bdSeq: a birth and the death of the same session carry the same value; +1 per session
    bd = [
        (k, _metrics(d)["bdSeq"]["value"])
        for d, k in zip(decoded, kinds, strict=True)
        if k in ("NBIRTH", "NDEATH")
    ]
    b0 = bd[0][1]
    b1, b2 = (b0 + 1) % 256, (b0 + 2) % 256
    assert bd == [
        ("NBIRTH", b0),
        ("NBIRTH", b0),  # the rebirth: same session
        ("NDEATH", b0),  # the Will
        ("NBIRTH", b1),
        ("NDEATH", b1),  # the Will of the second session
        ("NBIRTH", b2),
        ("NDEATH", b2),  # the clean stop
    ]
    assert json.loads((state_dir / STATE_FILE).read_text())["bd_seq"] == b2  # the next start: +1
    assert kinds.index("DDEATH") < len(kinds) - 1 - kinds[::-1].index("DBIRTH")


def _rows(machines: list[str], label: str = "normal") -> list[HistoryRow]:
    now = time.time()
    return [HistoryRow(now, m, 0, label, 0.9, None, 1, "ok", False, 1.0) for m in machines]


def _node_for(address: str, group: str, tmp_path: Path, **kw: Any) -> SparkplugNode:
    kw.setdefault("node", f"spb-{time.time_ns()}")
    return SparkplugNode(
        group=group,
        broker=address,
        state_dir=tmp_path / "state",
        normal="normal",
        sw_version="test",
        model_version=lambda: 7,
        faults=Faults(logging.getLogger("test"), 10.0),
        count_error=lambda kind: (True, 0),
        **kw,
    )


@pytest.mark.broker
def test_seq_wraps_from_255_to_0_on_the_wire(
    broker: Any, capture: Callable[[str], Capture], tmp_path: Path
) -> None:
    group = f"wrap{time.time_ns()}"
    cap = capture(group)
    spb = _node_for(broker.address, group, tmp_path).start()
    try:
        cap.wait_for(_count("NBIRTH", 1))
        machines = [f"m{i:03d}" for i in range(300)]  # one round: 300 DBIRTHs, seq 1..300 mod 256
        spb.observe(_rows(machines), lambda m: None)
        lines = cap.wait_for(_count("DBIRTH", 300))
    finally:
        spb.stop()
    decoded = tahu_decode(lines)
    seqs = [d["payload"]["seq"] for d in decoded if d["topic"].split("/")[2] != "NDEATH"]
    assert seqs == [i % 256 for i in range(301)]
    assert [d["topic"].rsplit("/", 1)[1] for d in decoded[1:301]] == machines


@pytest.mark.broker
def test_in_the_secure_profile_the_edge_user_is_a_sparkplug_node_and_the_operator_commands_it(
    secure_broker: Any, secure_profile: Any, tmp_path: Path
) -> None:
    group = f"sec{time.time_ns()}"
    operator = Listener(
        secure_broker.address,
        [f"spBv1.0/{group}/#"],
        f"spb-operator-{time.time_ns()}",
        credentials=secure_profile.credentials("operator"),
    )
    spb = _node_for(
        secure_broker.address,
        group,
        tmp_path,
        node="edge",  # the identity's node id; it logs in as edge~spb
        credentials=secure_profile.credentials("edge"),
    ).start()
    topics = spb.topics
    try:
        assert operator.wait_for(lambda msgs: topics.nbirth in {t for t, _, _ in msgs})
        spb.observe(_rows(["m01"]), lambda m: "normal")
        assert operator.wait_for(lambda _: len(operator.on(topics.dbirth("m01"))) == 1)
        ncmd = tahu_encode(
            {"timestamp": 1, "metrics": [{"name": REBIRTH, "type": "Boolean", "value": True}]}
        )
        info = operator.client.publish(topics.ncmd, ncmd, qos=1)
        info.wait_for_publish(10)
        assert operator.wait_for(lambda _: len(operator.on(topics.nbirth)) == 2)
        assert operator.wait_for(lambda _: len(operator.on(topics.dbirth("m01"))) == 2)
    finally:
        spb.stop()
    assert operator.wait_for(lambda _: len(operator.on(topics.ndeath)) == 1)
    operator.close()
    [birth, ndeath] = tahu_decode(
        [
            f"{topics.nbirth} {operator.on(topics.nbirth)[0].hex()}",
            f"{topics.ndeath} {operator.on(topics.ndeath)[0].hex()}",
        ]
    )
    assert _metrics(birth)["bdSeq"]["value"] == _metrics(ndeath)["bdSeq"]["value"] == 0
    assert _metrics(birth)["model version"]["value"] == 7
