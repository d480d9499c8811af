"""The simulator's control callback outlives any payload; a dead MQTT thread ends the run with
a retained "degraded" status and exit code 1 (issue 11, finding 1). Real Mosquitto."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nodekit.guard import paho_thread_alive
from protocol import Command, Status, Topics

from .conftest import running_sim, subscribed, wait_for

pytestmark = pytest.mark.broker
REPO = Path(__file__).resolve().parents[2]

HUGE = b'{"v":1,"cmd":"labels","params":{"fraction":' + b"9" * 5000 + b"}}"  # finding 1


def test_control_payloads_that_raise_do_not_stop_the_control_thread(
    broker: Any, topics: Topics, sub: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    got, client = sub
    real = Command.from_json

    def poisoned(data: bytes | str) -> Command:
        if data == b"POISON":  # an escape no decoder foresaw, whatever the decoder does today
            raise OverflowError("int too large to convert to float")
        return real(data)

    monkeypatch.setattr(Command, "from_json", staticmethod(poisoned))
    with running_sim(broker, topics, machines=2, hz=20.0) as run:
        assert wait_for(lambda: len(got.snapshot()) >= 10)
        for payload in (b"POISON", HUGE, b"POISON"):
            client.publish(topics.sim_control, payload, qos=1)
        ok = b'{"v":1,"cmd":"labels","params":{"fraction":0.5}}'
        client.publish(topics.sim_control, ok, qos=1)
        assert wait_for(lambda: run.sim.snapshot().control_ok == 1), run.sim.snapshot()
        assert run.sim._client is not None and paho_thread_alive(run.sim._client)
        status = run.sim.status()
        assert run.thread.is_alive()
    assert status.state == "online"
    assert status.errors["fault:sim-mqtt.on_message:OverflowError"] == 2
    huge = {k: n for k, n in status.errors.items() if "OverflowError" not in k}
    assert sum(huge.values()) == 1, status.errors  # the 5000 digits: refused or counted, once
    assert run.sim.snapshot().label_fraction == 0.5


def test_a_dead_mqtt_thread_ends_run_with_a_degraded_status_and_exit_1(
    broker: Any, topics: Topics
) -> None:
    code = (
        "import sys\n"
        "from sensor_sim.publisher import Simulator\n"
        "def dies(self, client, userdata, msg):\n"
        "    raise SystemExit('paho thread ends')\n"  # passes the guard on purpose
        "Simulator._on_message = dies\n"
        "from sensor_sim.__main__ import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    args = [
        *("run", "--broker", broker.address, "--prefix", topics.prefix, "--node", "sim-dies"),
        *("--machines", "1", "--hz", "5", "--no-dashboard"),
    ]
    with subscribed(broker, topics) as (got, client):
        proc = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            assert wait_for(lambda: len(got.snapshot()) >= 2, timeout=20)
            client.publish(topics.sim_control, b"{}", qos=1)
            rc = proc.wait(15)
            out = proc.stdout.read().decode() if proc.stdout else ""
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        assert rc == 1, out
        assert "degraded" in out, out
        assert wait_for(lambda: any(json.loads(p)["state"] == "degraded" for p in got.statuses))
    with subscribed(broker, topics) as (late, _):  # retained: a newcomer sees why
        assert wait_for(lambda: bool(late.statuses))
        last = Status.from_json(late.statuses[-1])
    assert last.state == "degraded" and last.detail["dead_threads"] == ["sim-mqtt"]
