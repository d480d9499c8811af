"""The dashboard: render() as text, keys as control commands over the broker."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from rich.console import Console

from protocol import DEFAULT_PREFIX
from sensor_sim import MachineRow, Snapshot
from sensor_sim.dashboard import KeyReader, command_for_key, render, run_live

from .conftest import running_sim, wait_for


def _text(snapshot: Snapshot, width: int = 120) -> str:
    console = Console(width=width, color_system=None, force_terminal=False)
    with console.capture() as cap:
        console.print(render(snapshot))
    return cap.get()


SNAP = Snapshot(
    broker="127.0.0.1:18830",
    connected=True,
    prefix=DEFAULT_PREFIX,
    target_hz=10.0,
    label_fraction=0.05,
    control_ok=3,
    control_rejected=2,
    errors={"bad_json": 2},
    machines=(
        MachineRow("m01", "normal", "off", 10.0, 4),
        MachineRow("m02", "bearing_fault", "offset temperature=5", 9.5, 1),
    ),
)


def test_render_shows_header_with_connection_rate_and_control_counts():
    first, second = _text(SNAP).splitlines()[:2]
    assert "127.0.0.1:18830 connected" in first
    assert "rate 19.5 windows/s (target 20)" in second
    assert "control ok 3 / rejected 2" in second


def test_render_shows_one_row_per_machine_with_state_drift_rate_and_labels():
    rows = [line.split("│") for line in _text(SNAP).splitlines() if "m0" in line]
    cells = [[c.strip() for c in row if c.strip()] for row in rows]
    assert cells == [
        ["m01", "normal", "off", "10.0", "4"],
        ["m02", "bearing_fault", "offset temperature=5", "9.5", "1"],
    ]


def test_render_flags_a_lost_broker_and_lists_errors():
    from dataclasses import replace

    text = _text(replace(SNAP, connected=False))
    assert "DISCONNECTED" in text and "errors: bad_json 2" in text


@pytest.mark.parametrize(
    "key, drift, expected",
    [
        ("d", "off", b'{"v":1,"cmd":"drift","machines":["all"],"mode":"step"}'),
        ("d", "step", b'{"v":1,"cmd":"drift","machines":["all"],"mode":"off"}'),
        ("o", "step", b'{"v":1,"cmd":"drift","machines":["all"],"mode":"off"}'),
        ("r", "off", b'{"v":1,"cmd":"repair","machines":["all"]}'),
        ("x", "off", None),
    ],
)
def test_keys_map_to_control_commands(key, drift, expected):
    snap = Snapshot("b", True, (MachineRow("m01", "normal", drift, 0.0, 0),))
    cmd = command_for_key(key, snap, np.random.default_rng(0))
    assert (cmd.to_json() if cmd else None) == expected


def test_f_key_forces_a_fault_class_on_one_known_machine():
    cmd = command_for_key("f", SNAP, np.random.default_rng(0))
    assert cmd.cmd == "fault" and cmd.machines[0] in ("m01", "m02")
    assert cmd.state in ("bearing_fault", "drive_wear", "pump_fault")


def test_key_reader_is_disabled_without_a_terminal(tmp_path):
    with open(tmp_path / "stdin", "w+") as stream:
        reader = KeyReader(stream)
        with reader.active():
            assert reader.read() is None
    assert not reader.enabled


class ScriptedKeys(KeyReader):
    """Keys typed by the test instead of a person (the terminal is the only thing replaced)."""

    def __init__(self, keys: list[str]) -> None:
        self.enabled = False
        self.keys = keys

    def read(self) -> str | None:
        return self.keys.pop(0) if self.keys else None


@pytest.mark.broker
def test_dashboard_keys_act_on_this_simulator_without_sending_control_and_q_quits(broker, topics):
    """Keys are applied locally: in the secure profile a sensor may not publish sim/control."""
    from .conftest import subscribed

    with subscribed(broker, topics) as (_, client):
        seen: list[bytes] = []
        client.subscribe(topics.sim_control, qos=1)
        client.message_callback_add(topics.sim_control, lambda c, u, m: seen.append(m.payload))
        with running_sim(broker, topics, machines=2, hz=10.0) as run:
            run.stop.set()  # stop the background loop; run_live drives the simulator here
            run.thread.join(5)
            keys = ScriptedKeys(["d"])
            stop = threading.Event()
            console = Console(width=100, color_system=None, force_terminal=False)
            done: list[object] = []
            t = threading.Thread(target=lambda: done.append(run_live(run.sim, console, stop, keys)))
            t.start()
            try:
                assert wait_for(lambda: all(r.drift == "step" for r in run.sim.snapshot().machines))
                keys.keys.append("q")
                t.join(5)
            finally:
                stop.set()
                t.join(5)
        assert done, "q did not end the live dashboard"
        assert seen == []  # nothing went out on sim/control


def test_key_reader_reads_single_keys_from_a_terminal_without_blocking():
    import os

    master, slave = os.openpty()
    with os.fdopen(slave, "r") as stream:
        reader = KeyReader(stream)
        assert reader.enabled
        with reader.active():
            assert reader.read() is None  # nothing typed: returns at once
            os.write(master, b"d")
            key = None
            for _ in range(50):
                key = reader.read()
                if key:
                    break
                threading.Event().wait(0.01)
            assert key == "d"
    os.close(master)
