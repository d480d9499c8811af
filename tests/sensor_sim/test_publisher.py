"""The live simulator against a real Mosquitto: rate, control, rejection, status."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from protocol import CHANNELS, PayloadError, Status, Topics
from protocol.status_detail import DetailReader, SimMachine, SimMachines
from sensor_sim.__main__ import main

from .conftest import running_sim, wait_for

pytestmark = pytest.mark.broker
TEMP = CHANNELS.index("temperature")


def test_windows_are_decodable_at_the_configured_rate_and_machine_count(broker, topics, sub):
    got, _ = sub
    with running_sim(broker, topics, machines=4, hz=10.0, duration_s=2.0) as run:
        run.thread.join(5)
        assert run.reports, "the simulator did not finish its 2 s run"
        report = run.reports[0]
        assert wait_for(lambda: len(got.snapshot()) >= report.windows, timeout=2)
    windows = got.snapshot()
    assert not got.undecodable
    assert report.rate == pytest.approx(40.0, rel=0.10)
    assert len(windows) == pytest.approx(80, rel=0.10)
    per_machine = {}
    for w in windows:
        per_machine.setdefault(w.machine, []).append(w.seq)
        assert w.shape == (60, 4) and w.label is None
    assert sorted(per_machine) == ["m01", "m02", "m03", "m04"]
    for seqs in per_machine.values():
        assert seqs == list(range(len(seqs))) and len(seqs) == pytest.approx(20, abs=2)
    ts = sorted({w.timestamp_ns for w in windows})
    gaps = np.diff(ts) / 1e9
    assert np.median(gaps) == pytest.approx(0.1, abs=0.02)  # steady ticks, no bunching


def _temps_between(windows, start_ns, end_ns, machine=None):
    vals = [
        w.data[:, TEMP].mean()
        for w in windows
        if start_ns <= w.timestamp_ns < end_ns and (machine is None or w.machine == machine)
    ]
    return np.asarray(vals)


def test_cli_drift_step_switches_within_1s_and_moves_normal_temperature_50_to_58(
    broker, topics, sub
):
    got, _ = sub
    with running_sim(broker, topics, machines=4, hz=10.0):
        assert wait_for(lambda: len(got.snapshot()) >= 40)
        sent = time.time_ns()
        rc = main(
            ["drift", "--mode", "step", "--broker", broker.address, "--prefix", topics.prefix]
        )
        assert rc == 0
        assert wait_for(lambda: max(w.timestamp_ns for w in got.snapshot()) > sent + 2.0e9)
    windows = got.snapshot()
    before = _temps_between(windows, 0, sent)
    after = _temps_between(windows, sent + int(1e9), sent + int(2e9))
    assert before.mean() == pytest.approx(50, abs=0.6)
    assert after.mean() == pytest.approx(58, abs=0.6)
    assert after.min() > 54  # every window after 1 s is drifted
    first_drifted = min(
        w.timestamp_ns for w in windows if w.timestamp_ns > sent and w.data[:, TEMP].mean() > 54
    )
    assert (first_drifted - sent) / 1e9 < 1.0


def test_plain_mqtt_offset_command_shifts_only_the_named_machine_by_5(broker, topics, sub):
    got, client = sub
    with running_sim(broker, topics, machines=2, hz=20.0) as run:
        assert wait_for(lambda: len(got.snapshot()) >= 10)
        payload = {
            "v": 1,
            "cmd": "drift",
            "mode": "offset",
            "machines": ["m01"],
            "params": {"temperature": 5.0},
        }
        sent = time.time_ns()
        client.publish(topics.sim_control, json.dumps(payload), qos=1)
        assert wait_for(lambda: max(w.timestamp_ns for w in got.snapshot()) > sent + 2.5e9)
        snap = run.sim.snapshot()
    windows = got.snapshot()
    m01 = _temps_between(windows, sent + int(1e9), sent + int(2.5e9), "m01")
    m02 = _temps_between(windows, sent + int(1e9), sent + int(2.5e9), "m02")
    assert m01.mean() == pytest.approx(55, abs=0.8)
    assert m02.mean() == pytest.approx(50, abs=0.8)
    assert [r.drift for r in snap.machines] == ["offset temperature=5", "off"]
    assert snap.control_ok == 1


def test_malformed_control_payloads_are_rejected_and_counted_while_publishing_goes_on(
    broker, topics, sub
):
    got, client = sub
    bad = [
        b"not json {",
        b'{"cmd":"drift","mode":"sideways"}',
        b'{"cmd":"fault","state":"bearing_fault","machines":["../m01"]}',
        b'{"cmd":"drift","mode":"offset","params":{"temperature":NaN}}',
        b'{"cmd":"repair","machines":["m99"]}',
    ]
    with running_sim(broker, topics, machines=2, hz=20.0) as run:
        assert wait_for(lambda: len(got.snapshot()) >= 10)
        for payload in bad:
            client.publish(topics.sim_control, payload, qos=1)
        assert wait_for(lambda: run.sim.snapshot().control_rejected == len(bad))
        mark = time.time_ns()
        count_at_mark = len(got.snapshot())
        client.publish(
            topics.sim_control, b'{"cmd":"fault","state":"pump_fault","machines":["m02"]}', qos=1
        )
        assert wait_for(lambda: run.sim.snapshot().control_ok == 1)
        time.sleep(1.0)
        snap = run.sim.snapshot()
        assert run.thread.is_alive()
    assert snap.errors == {
        "bad_json": 1,
        "bad_field": 1,
        "non_finite": 1,  # the NaN param
        "bad_id": 1,
        "unknown_machine": 1,
    }
    assert [r.state for r in snap.machines] == ["normal", "pump_fault"]
    after = [w for w in got.snapshot()[count_at_mark:] if w.timestamp_ns >= mark]
    assert len(after) >= 30  # 2 machines × 20 Hz kept flowing
    assert {w.machine for w in after} == {"m01", "m02"}
    statuses = [Status.from_json(p) for p in got.statuses]
    assert any(
        s.errors.get("bad_json") == 1 and s.metrics["control_rejected"] == 5
        for s in statuses
        if s.state == "online"
    )


def test_status_is_retained_online_while_running_and_offline_after_close(broker, topics):
    from .conftest import subscribed

    with running_sim(broker, topics, machines=1, hz=5.0), subscribed(broker, topics) as (got, _):
        assert wait_for(lambda: bool(got.statuses))
        first = Status.from_json(got.statuses[0])
    assert (first.role, first.state, first.node) == ("simulator", "online", "simulator")
    assert first.detail["machines"]["m01"]["state"] == "normal"
    bad: list[PayloadError] = []  # what the console reads of it, through the contract's codec
    machines = DetailReader(first.detail, first.role, bad.append).get(SimMachines)
    assert first.detail["v"] == 1 and bad == []
    assert machines is not None and set(machines.machines) == {"m01"}
    m01 = machines.machines["m01"]
    assert m01 == SimMachine("normal", "off", m01.labels) and not m01.drifting
    with subscribed(broker, topics) as (got, _):  # a late subscriber gets the retained one
        assert wait_for(lambda: bool(got.statuses))
        assert Status.from_json(got.statuses[-1]).state == "offline"


def test_max_rate_mode_measures_a_ceiling_well_above_the_paced_rate(broker, topics):
    # Pin this process (simulator loop + paho thread) to one core while measuring.
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(saved)})
    try:
        with running_sim(broker, topics, machines=16, max_rate=True, duration_s=2.0) as run:
            run.thread.join(10)
    finally:
        os.sched_setaffinity(0, saved)
    report = run.reports[0]
    print(f"\nmax publish rate on one core: {report.describe()}")
    assert report.target_rate is None
    assert report.rate > 1000  # 16 × 10 Hz = 160/s is the default load
    assert report.publish_failed == 0


def test_topic_prefix_isolates_simulators(broker, topics, sub):
    got, _ = sub
    other = Topics(topics.prefix + "_other")
    with running_sim(broker, other, machines=1, hz=20.0, duration_s=0.5) as run:
        run.thread.join(3)
    time.sleep(0.1)
    assert got.snapshot() == []


def test_the_technician_labels_each_machine_and_every_change_of_its_true_state(broker, topics):
    """Key `l`: an open label event per machine with its true class, and a new one when a
    machine's state changes; read by mosquitto_sub, a client we did not write."""
    import shutil
    import subprocess

    from protocol import Command
    from protocol.labels import LabelEvent

    exe = shutil.which("mosquitto_sub")
    assert exe, "mosquitto_sub missing: sudo apt-get install -y mosquitto-clients"
    reader = subprocess.Popen(
        [
            exe,
            "-h",
            broker.host,
            "-p",
            str(broker.port),
            "-q",
            "1",
            "-t",
            topics.labels,
            "-C",
            "4",
            "-W",
            "20",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)  # mosquitto_sub subscribes
    with running_sim(broker, topics, machines=3, hz=10.0) as run:
        run.sim.send_command(Command("fault", machines=("m02",), state="drive_wear"))
        assert wait_for(lambda: run.sim.snapshot().machines[1].state == "drive_wear")
        before = time.time()
        assert run.sim.technician() is True
        assert wait_for(lambda: run.sim.labels_events == 3)
        run.sim.send_command(Command("repair", machines=("m02",)))
        assert wait_for(lambda: run.sim.labels_events == 4)
        out, _ = reader.communicate(timeout=30)
        assert run.sim.technician() is False
    events = [LabelEvent.from_json(line) for line in out.splitlines()]
    assert sorted((e.machine, e.cls, e.end) for e in events) == [
        ("m01", "normal", None),
        ("m02", "drive_wear", None),
        ("m02", "normal", None),
        ("m03", "normal", None),
    ]
    assert all(before - 0.2 <= e.start <= time.time() for e in events)
    m02 = [e for e in events if e.machine == "m02"]
    assert m02[0].start < m02[1].start  # the repair's label starts later and ends the fault's
