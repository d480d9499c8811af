"""A live node fed good windows mixed with poison ones by the real `mosquitto_pub`.

Finding 1 of issue 11: one JSON window with a 400-digit number killed pi_edge's receive thread
while its status kept saying "online". Here every poison payload must be refused and counted by
its kind, every good window classified, and the node must still classify and report "online"
afterwards.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nodekit.settings import build
from pi_edge import EdgeConfig, EdgeService
from protocol import Prediction, Status, Topics, Window, encode_window
from protocol.window import window_to_json

from ._model import EdgeModels
from .conftest import Listener

pytestmark = pytest.mark.broker
MACHINE = "p1"


def poison(models: EdgeModels) -> list[tuple[str, bytes]]:
    """(kind the node must count, payload) for each poison window."""
    frame = encode_window(Window(MACHINE, 0, 1, models.x_test[0]))
    rows = ",".join(["[50.0,0.3,11.0,125.0]"] * 59)
    bad_id = bytearray(frame)
    bad_id[24:26] = b"\xff\xfe"  # the machine id bytes: not UTF-8
    return [
        ("bad_number", b'{"data":[[' + b"9" * 400 + b",0,0,0]]}"),  # the exact finding
        ("bad_number", b'{"seq":' + b"9" * 5000 + b',"data":[[1,2,3,4]]}'),
        ("bad_number", f'{{"data":[[0.{"1" * 60},0,0,0],{rows}]}}'.encode()),
        ("too_deep", b'{"data":' + b"[" * 50_000 + b"]" * 50_000 + b"}"),
        ("bad_field", f'{{"seq":"7","data":[[1,2,3,4],{rows}]}}'.encode()),
        ("bad_field", f'{{"seq":true,"data":[[1,2,3,4],{rows}]}}'.encode()),
        ("bad_field", f'{{"seq":{2**64},"data":[[1,2,3,4],{rows}]}}'.encode()),
        ("bad_shape", b'{"data":[[true,false,null,1]]}'),
        ("bad_shape", b'{"data":"abc"}'),
        ("bad_shape", b'{"data":[[1,2,3,4],[1,2,3]]}'),
        ("non_finite", b'{"data":[[NaN,0,0,0]]}'),
        ("non_finite", b'{"data":[[1e999,0,0,0]]}'),
        ("bad_json", b'{"data":[[1,2,3,4]'),
        ("bad_utf8", b'{"machine":"p\xff","data":[[1,2,3,4]]}'),
        ("bad_id", bytes(bad_id)),
        ("bad_id", b'{"machine":"p1\\n","data":[[1,2,3,4]]}'),
        ("truncated", frame[:-10]),
        ("truncated", frame[:5]),
        ("bad_magic", b"[" * 1000),
        ("bad_shape", encode_window(Window(MACHINE, 1, 1, np.ones((30, 4), np.float32)))),
    ]


@pytest.fixture
def node(broker: Any, topics: Topics, models: EdgeModels, state_dir: Path) -> Iterator[EdgeService]:
    config = build(
        EdgeConfig,
        broker=broker.address,
        prefix=topics.prefix,
        node=f"edge-{time.time_ns()}",
        public_key=models.public_key_path,
        model=models.bundle_path,
        state_dir=state_dir,
        dashboard=False,
        status_interval_s=0.3,
        batch_wait_ms=1.0,
        batch_max=16,
    )
    svc = EdgeService(config, public_key=models.public_key).start()
    yield svc
    svc.stop()


def mosquitto_pub(broker: Any, topic: str, payload: bytes, tmp_path: Path) -> None:
    """Send `payload` byte for byte with the Mosquitto client (QoS 1: it has arrived on return)."""
    binary = shutil.which("mosquitto_pub")
    assert binary, "mosquitto_pub is missing: run `make setup` (it installs mosquitto-clients)"
    path = tmp_path / "payload"
    path.write_bytes(payload)
    host, port = broker.address.rsplit(":", 1)
    cmd = [binary, "-h", host, "-p", port, "-q", "1", "-t", topic, "-f", str(path)]
    done = subprocess.run(cmd, capture_output=True, timeout=20, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")


def good(models: EdgeModels, seq: int) -> bytes:
    """A 60×4 window the model can classify, as JSON or as a binary frame."""
    window = Window(MACHINE, seq, time.time_ns(), models.x_test[seq % len(models.x_test)])
    return window_to_json(window) if seq % 2 else encode_window(window)


def wait_status(lst: Listener, topic: str, cond: Any, timeout: float = 15.0) -> Status:
    found: list[Status] = []

    def pred(msgs: list[tuple[str, bytes, bool]]) -> bool:
        for t, p, _ in reversed(msgs):
            if t == topic and cond(status := Status.from_json(p)):
                found.append(status)
                return True
        return False

    assert lst.wait_for(pred, timeout), f"no matching status on {topic}"
    return found[0]


def test_poison_windows_are_counted_and_every_good_one_is_classified(
    node: EdgeService,
    broker: Any,
    listen: Any,
    topics: Topics,
    models: EdgeModels,
    tmp_path: Path,
) -> None:
    lst = listen(topics.predictions(), topics.statuses())
    status_topic = topics.status(node.config.node)
    wait_status(lst, status_topic, lambda s: s.state == "online" and s.model_version == 1)
    bad = poison(models)
    seq = 0
    for _, payload in bad:
        mosquitto_pub(broker, topics.window(MACHINE), good(models, seq), tmp_path)
        mosquitto_pub(broker, topics.window(MACHINE), payload, tmp_path)
        seq += 1

    prediction_topic = topics.prediction(MACHINE)
    lst.wait_for(lambda m: sum(t == prediction_topic for t, _, _ in m) >= seq)
    seqs = sorted(Prediction.from_json(p).seq for p in lst.on(prediction_topic))
    assert seqs == list(range(seq)), "a good window got no prediction"
    expected = Counter(kind for kind, _ in bad)
    status = wait_status(lst, status_topic, lambda s: sum(s.errors.values()) >= len(bad))
    assert status.state == "online"
    assert status.errors == dict(expected), "each poison window is counted once, by its kind"

    # the node is alive: one more good window is classified, and it still says online
    mosquitto_pub(broker, topics.window(MACHINE), good(models, seq), tmp_path)
    assert lst.wait_for(lambda m: sum(t == prediction_topic for t, _, _ in m) > seq)
    assert Prediction.from_json(lst.on(prediction_topic)[-1]).seq == seq
    after = wait_status(lst, status_topic, lambda s: s.metrics["classified"] >= seq + 1)
    assert after.state == "online" and after.errors == dict(expected)
