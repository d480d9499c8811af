"""`pi_edge run --signals` with [[opcua]] and [[modbus]] sources, against servers nobody here
wrote (node-opcua's OPC UA server, modbus-serial's Modbus TCP server; tests/tools/plant) and a
real Mosquitto: values driven on the servers become windows (scaled, decoded, on the grid) that
are classified and republished; bad values, refused node ids and exception responses are
counted; both servers vanish (SIGKILL) and come back, and the node reconnects and windows
resume — never a crash, never a degraded status."""

from __future__ import annotations

import struct
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pi_edge import EdgeService
from protocol import Status, Topics, Window, decode_window

from ._model import EdgeModels
from ._plant_servers import PlantServer, free_port
from .conftest import Listener
from .test_service import _online, service_factory  # noqa: F401 (a fixture)
from .test_signals_ingest import predictions, wait_status

pytestmark = pytest.mark.broker
HZ = 20.0  # a 60-sample window is 3 s


def signals_file(tmp_path: Path, ua_port: int, mb_port: int) -> Path:
    """press3: temperature and vibration from OPC UA, pressure and power from Modbus;
    ghost: a node id the server does not have, registers past the device's end."""
    text = f"""
sample_hz = {HZ}
max_gap_s = 0.5
reorder_s = 0.2

[[opcua]]
url = "opc.tcp://127.0.0.1:{ua_port}"
name = "plc1"
timeout_s = 2.0
[[opcua.node]]
node_id = "ns=1;s=Press3.Temperature"
machine = "press3"
channel = "temperature"
scale = 0.1
[[opcua.node]]
node_id = "ns=1;s=Press3.Vibration"
machine = "press3"
channel = "vibration"
[[opcua.node]]
node_id = "ns=1;s=Ghost.Temperature"
machine = "ghost"
channel = "temperature"

[[modbus]]
host = "127.0.0.1"
port = {mb_port}
unit = 1
name = "drive1"
timeout_s = 0.5
[[modbus.register]]
machine = "press3"
channel = "pressure"
table = "holding"
address = 10
data_type = "float32"
word_order = "little"
[[modbus.register]]
machine = "press3"
channel = "power"
table = "input"
address = 3
data_type = "int16"
scale = 10.0
[[modbus.register]]
machine = "ghost"
channel = "vibration"
address = 5000
[[modbus.register]]
machine = "ghost"
channel = "pressure"
address = 5001
[[modbus.register]]
machine = "ghost"
channel = "power"
address = 5002
"""
    path = tmp_path / "signals.toml"
    path.write_text(text)
    return path


def drive(ua: PlantServer, mb: PlantServer, temperature: float, vibration: float) -> None:
    """The plant's values: OPC UA doubles, a float32 in two registers (low word first) and
    an int16 of -7 in input register 3."""
    ua.send(set="Press3.Temperature", value=temperature)
    ua.send(set="Press3.Vibration", value=vibration)
    hi, lo = struct.unpack(">HH", struct.pack(">f", 3.25))
    mb.send(holding={"10": lo, "11": hi}, input={"3": 0xFFF9})


def expected(temperature: float, vibration: float) -> np.ndarray:
    row = np.array([temperature * 0.1, vibration, 3.25, -7 * 10.0], np.float32)
    return np.tile(row, (60, 1))


def windows(listener: Listener, topics: Topics) -> list[Window]:
    return [decode_window(p) for p in listener.on(topics.window("press3"))]


def wait_window(
    listener: Listener, topics: Topics, want: np.ndarray, after_seq: int = -1, timeout: float = 30
) -> Window:
    """The first republished press3 window after `after_seq` whose data is `want`, exactly."""
    found: list[Window] = []

    def pred(msgs: list[tuple[str, bytes, bool]]) -> bool:
        for t, p, _ in msgs:
            if t == topics.window("press3"):
                w = decode_window(p)
                if w.seq > after_seq and np.array_equal(w.data, want):
                    found.append(w)
                    return True
        return False

    seen = windows(listener, topics)
    assert listener.wait_for(pred, timeout), (
        f"no press3 window of {want[0].tolist()} after seq {after_seq}; last seen: "
        f"{[(w.seq, w.data[0].tolist()) for w in seen[-3:]]}"
    )
    return found[0]


def source(status: Status, name: str) -> dict[str, Any]:
    (info,) = [s for s in status.detail["sources"] if s["name"] == name]
    return dict(info)


def test_opcua_and_modbus_values_are_windows_classified_and_survive_both_servers_restarting(
    service_factory: Callable[..., EdgeService],  # noqa: F811
    models: EdgeModels,
    topics: Topics,
    listen: Callable[..., Listener],
    tmp_path: Path,
) -> None:
    ua_port, mb_port = free_port(), free_port()
    names = ("Press3.Temperature", "Press3.Vibration")
    ua = PlantServer("opcua_server.js", ua_port, *names).start()
    mb = PlantServer("modbus_server.js", mb_port).start()
    try:
        drive(ua, mb, 482.5, 0.75)
        svc = service_factory(
            model=models.bundle_path,
            signals=signals_file(tmp_path, ua_port, mb_port),
            republish_windows=True,
            metrics_port=0,
        )
        _online(listen(topics.status(svc.config.node)), topics, svc.config.node, 1)
        out = listen(topics.prediction("press3"), topics.window("press3"))

        # the driven values, scaled and decoded, fill whole windows; each is classified
        first = wait_window(out, topics, expected(482.5, 0.75))
        assert first.machine == "press3"
        assert first.timestamp_ns % int(1e9 / HZ) == 0  # on the grid
        assert out.wait_for(
            lambda m: any(p.seq == first.seq for p in predictions(out, topics, "press3"))
        ), f"no prediction for window {first.seq}"
        (pred,) = [p for p in predictions(out, topics, "press3") if p.seq == first.seq]
        assert pred.model_version == 1
        st = wait_status(
            svc,
            lambda s: (
                s.errors.get("source_bad_point", 0) >= 1  # Ghost.Temperature is no node
                and s.errors.get("source_bad_value", 0) >= 3  # registers past 999: exception 2
            ),
        )
        assert source(st, "plc1")["state"] == source(st, "drive1")["state"] == "connected"

        # a change on the server is in the next windows
        ua.send(set="Press3.Temperature", value=500.0)
        changed = wait_window(out, topics, expected(500.0, 0.75), first.seq)

        # a bad status: no vibration reading (counted), the window is dropped, not made up
        bad_before = source(svc.status(), "plc1").get("bad", 0)
        ua.send(set="Press3.Vibration", status="BadSensorFailure")
        st = wait_status(
            svc,
            lambda s: (
                source(s, "plc1").get("bad", 0) > bad_before + HZ  # a second of slots
                and s.detail["signals"].get("signal_gap_dropped", 0) >= 1
            ),
        )
        ua.send(set="Press3.Vibration", value=0.25)
        good_again = wait_window(out, topics, expected(500.0, 0.25), changed.seq)

        # both servers vanish: counted, the node stays online; they come back: windows resume
        ua.kill()
        mb.kill()
        st = wait_status(
            svc,
            lambda s: all(
                source(s, n)["state"] == "reconnecting"
                and source(s, n).get("connection_failures", 0) >= 1
                for n in ("plc1", "drive1")
            ),
        )
        assert st.state == "online" and st.errors.get("source_disconnected", 0) >= 2
        gone = max(w.seq for w in windows(out, topics))
        ua.start()
        mb.start()
        drive(ua, mb, 510.0, 0.5)
        back = wait_window(out, topics, expected(510.0, 0.5), max(gone, good_again.seq), 60)
        st = wait_status(
            svc,
            lambda s: all(source(s, n).get("reconnects", 0) >= 1 for n in ("plc1", "drive1")),
        )
        assert all(source(st, n)["state"] == "connected" for n in ("plc1", "drive1"))
        assert st.state == "online" and not svc.dead_threads
        assert not [k for k in svc.faults.counts() if "source" in k], svc.faults.counts()
        assert out.wait_for(
            lambda m: any(p.seq == back.seq for p in predictions(out, topics, "press3"))
        ), f"no prediction for window {back.seq} after the servers came back"
        with urllib.request.urlopen(f"http://127.0.0.1:{svc.metrics_port}/metrics") as resp:
            metrics = resp.read().decode()
        for name, kind in (("plc1", "opcua"), ("drive1", "modbus")):
            assert f'edgeloop_source_connected{{kind="{kind}",source="{name}"}} 1.0' in metrics
            line = (
                f'edgeloop_source_events_total{{event="reconnects",kind="{kind}",source="{name}"}}'
            )
            assert line in metrics
    finally:
        ua.stop()
        mb.stop()
