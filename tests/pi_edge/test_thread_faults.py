"""No thread of a pi_edge node dies quietly (issue 11, finding 1), against a real Mosquitto.

An exception in a paho callback or a worker loop is counted and the thread goes on; a thread
that dies anyway turns the node "degraded" (retained status naming it) and `pi_edge run` exits 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import pi_edge.service as service_module
from nodekit.guard import paho_thread_alive
from nodekit.settings import build
from pi_edge import EdgeConfig, EdgeService
from protocol import Topics, Window, encode_window

from ._model import EdgeModels
from .conftest import Listener, Publisher

pytestmark = pytest.mark.broker
REPO = Path(__file__).resolve().parents[2]


def _config(broker: Any, topics: Topics, state_dir: Path, **kw: Any) -> EdgeConfig:
    base: dict[str, Any] = {
        "broker": broker.address,
        "prefix": topics.prefix,
        "node": f"edge-{time.time_ns()}",
        "state_dir": state_dir,
        "dashboard": False,
        "status_interval_s": 0.2,
    }
    base.update(kw)
    return build(EdgeConfig, **base)


@pytest.fixture
def node(broker: Any, topics: Topics, state_dir: Path) -> Iterator[Callable[..., EdgeService]]:
    made: list[EdgeService] = []

    def _make(public_key: bytes | None = None, **kw: Any) -> EdgeService:
        svc = EdgeService(_config(broker, topics, state_dir, **kw), public_key=public_key)
        made.append(svc)
        return svc.start()

    yield _make
    for svc in made:
        svc.stop()


def _statuses(listener: Listener, topic: str) -> list[dict[str, Any]]:
    return [json.loads(p) for p in listener.on(topic)]


def _wait_status(
    listener: Listener, topic: str, cond: Callable[[dict[str, Any]], bool], timeout: float = 15
) -> dict[str, Any]:
    def pred(msgs: list[tuple[str, bytes, bool]]) -> bool:
        return any(t == topic and cond(json.loads(p)) for t, p, _ in msgs)

    assert listener.wait_for(pred, timeout), f"no such status on {topic}: {listener.on(topic)}"
    return next(s for s in reversed(_statuses(listener, topic)) if cond(s))


def test_a_window_that_raises_in_the_callback_does_not_stop_classification(
    node: Callable[..., EdgeService],
    publisher: Publisher,
    listen: Any,
    topics: Topics,
    models: EdgeModels,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = service_module.decode_any

    def poisoned(data: bytes, *args: Any) -> Any:
        if data == b"POISON":  # stands in for the 400-digit JSON number of finding 1
            raise OverflowError("int too large to convert to float")
        return real(data, *args)

    monkeypatch.setattr(service_module, "decode_any", poisoned)
    lst = listen(topics.predictions(), topics.statuses())
    svc = node(public_key=models.public_key, model=models.bundle_path)
    status_topic = topics.status(svc.config.node)
    _wait_status(lst, status_topic, lambda s: s["state"] == "online")
    x = models.x_test
    for seq in range(3):
        publisher.publish(topics.window("m01"), b"POISON", qos=0)
        good = encode_window(Window("m01", seq, time.time_ns(), x[seq]))
        publisher.publish(topics.window("m01"), good, qos=0)
    topic = topics.prediction("m01")
    assert lst.wait_for(lambda m: sum(t == topic for t, _, _ in m) >= 3, 15), "no predictions"
    kind = "fault:edge-mqtt.on_message:OverflowError"
    status = _wait_status(lst, status_topic, lambda s: s["errors"].get(kind) == 3)
    assert status["state"] == "online" and status["metrics"]["faults"] == 3
    assert paho_thread_alive(svc._client) and svc.watch.dead() == []
    assert svc.snapshot().faults == {"edge-mqtt.on_message:OverflowError": 3}


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_worker_turns_the_node_degraded_with_a_retained_status(
    node: Callable[..., EdgeService],
    listen: Any,
    topics: Topics,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lst = listen(topics.statuses())

    def dies(self: EdgeService) -> None:
        time.sleep(0.5)
        raise SystemExit("the worker thread ends: not an Exception, the guard lets it pass")

    monkeypatch.setattr(EdgeService, "_work_once", dies)
    svc = node(insecure_dev=True)
    topic = topics.status(svc.config.node)
    _wait_status(lst, topic, lambda s: s["state"] == "online")
    status = _wait_status(lst, topic, lambda s: s["state"] == "degraded", timeout=10)
    assert status["detail"]["dead_threads"] == ["edge-worker"]
    assert svc.failed.is_set() and svc.dead_threads == ("edge-worker",)
    svc.stop()
    late = listen(topic)  # the degraded status stays retained after the stop, not "offline"
    assert late.wait_for(bool, 5)
    _, payload, retained = late.messages[-1]
    assert retained and json.loads(payload)["state"] == "degraded"


def test_run_exits_1_with_a_degraded_status_when_pahos_thread_dies(
    broker: Any, listen: Any, publisher: Publisher, topics: Topics, tmp_path: Path
) -> None:
    node_id = f"edge-paho-{os.getpid()}"
    lst = listen(topics.statuses())
    # a callback that raises a BaseException kills paho's network thread (the guard passes
    # SystemExit on purpose): the main thread's watchdog must notice it
    code = (
        "import sys\n"
        "from pi_edge.service import EdgeService\n"
        "def dies(self, client, userdata, msg):\n"
        "    raise SystemExit('paho thread ends')\n"
        "EdgeService._on_message = dies\n"
        "from pi_edge.__main__ import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    args = [
        *("run", "--broker", broker.address, "--node", node_id, "--prefix", topics.prefix),
        *("--state-dir", str(tmp_path), "--insecure-dev", "--no-dashboard"),
        *("--status-interval", "0.5"),
    ]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        topic = topics.status(node_id)
        _wait_status(lst, topic, lambda s: s["state"] == "online", timeout=30)
        publisher.publish(topics.window("m01"), b"anything", qos=0)
        rc = proc.wait(15)
        out = proc.stdout.read().decode() if proc.stdout else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert rc == 1, out
    assert "edge-mqtt" in out and "service manager" in out, out
    status = _wait_status(lst, topic, lambda s: s["state"] == "degraded", timeout=5)
    assert status["detail"]["dead_threads"] == ["edge-mqtt"]
    late = listen(topic)
    assert late.wait_for(bool, 5)
    assert json.loads(late.messages[-1][1])["state"] == "degraded"
