"""The private broker: persistence across restarts, and no orphan when its owner is killed."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nodekit.mqtt import connect, make_client
from scripts.broker import Broker

pytestmark = pytest.mark.broker
REPO = Path(__file__).resolve().parents[1]


def test_retained_message_survives_a_broker_restart(tmp_path: Path) -> None:
    with Broker(run_dir=tmp_path) as broker:
        pub = make_client("retain-pub")
        connect(pub, broker.address)
        pub.loop_start()
        time.sleep(0.5)
        pub.publish("persist/model", b"bundle-bytes", qos=1, retain=True).wait_for_publish(5)
        pub.loop_stop()
        pub.disconnect()
        broker.restart()
        got = threading.Event()
        payloads: list[bytes] = []
        sub = make_client("retain-sub")
        sub.on_connect = lambda c, *a: c.subscribe("persist/model", qos=1)
        sub.on_message = lambda c, u, m: (payloads.append(m.payload), got.set())
        connect(sub, broker.address)
        sub.loop_start()
        try:
            assert got.wait(10) and payloads == [b"bundle-bytes"]
        finally:
            sub.loop_stop()
            sub.disconnect()


def test_broker_dies_with_a_killed_owner() -> None:
    code = (
        "from scripts.broker import Broker; import time\n"
        "b = Broker().start(); print(b._proc.pid, flush=True); time.sleep(60)\n"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    assert owner.stdout is not None
    pid = int(owner.stdout.readline())
    owner.kill()
    owner.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, 9)
    raise AssertionError(f"mosquitto {pid} outlived its killed owner")
