"""`pi_edge run --signals` against a real Mosquitto: readings sent by `mosquitto_pub` (a client
we did not write) and by the simulator's `--signals` mode become windows that are classified
(predictions with the right machine and seq) and republished as protocol windows that equal
the windows the readings came from."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pi_edge import EdgeService
from protocol import CHANNELS, Prediction, Status, Topics, Window, decode_window
from protocol.signals import slot_ns
from sensor_sim.fleet import Fleet, FleetConfig

from ._model import EdgeModels
from .conftest import Listener
from .test_service import _online, service_factory  # noqa: F401 (a fixture)

pytestmark = pytest.mark.broker
REPO = Path(__file__).resolve().parents[2]
T = 60
BASE = 1_700_000_040  # a multiple of T: window 28_333_334 at 1 Hz


def signals_file(tmp_path: Path, topics: Topics) -> Path:
    """The shipped example's format, with topics under this test's prefix."""
    parts = ["sample_hz = 1.0\nmax_gap_s = 5.0\nreorder_s = 2.0\n"]
    for c in CHANNELS:
        parts.append(
            f'[[signal]]\ntopic = "{topics.prefix}/plant/{{machine}}/{c}"\nchannel = "{c}"\n'
            'value = "value"\ntime = "ts"\n'
        )
    path = tmp_path / "signals.toml"
    path.write_text("\n".join(parts))
    return path


def mosquitto_pub(broker: Any, topic: str, lines: list[str]) -> None:
    """One `mosquitto_pub -l` run: each line one message, QoS 1, in order."""
    exe = shutil.which("mosquitto_pub")
    assert exe, "mosquitto_pub missing: sudo apt-get install -y mosquitto-clients"
    subprocess.run(
        [exe, "-h", broker.host, "-p", str(broker.port), "-q", "1", "-t", topic, "-l"],
        input="\n".join(lines) + "\n",
        text=True,
        check=True,
        timeout=30,
    )


def wait_status(svc: EdgeService, cond: Callable[[Status], bool], timeout: float = 10) -> Status:
    """The node's status once `cond` holds (read in-process: no status interval to wait for)."""
    deadline = time.monotonic() + timeout
    while not cond(st := svc.status()):
        assert time.monotonic() < deadline, f"status never matched: {st.detail.get('signals')}"
        time.sleep(0.05)
    return st


def republished(listener: Listener, topics: Topics, machine: str) -> list[Window]:
    return [decode_window(p) for p in listener.on(topics.window(machine))]


def predictions(listener: Listener, topics: Topics, machine: str) -> list[Prediction]:
    return [Prediction.from_json(p) for p in listener.on(topics.prediction(machine))]


def test_readings_from_mosquitto_pub_are_assembled_classified_and_republished(
    service_factory: Callable[..., EdgeService],  # noqa: F811
    models: EdgeModels,
    broker: Any,
    topics: Topics,
    listen: Callable[..., Listener],
    tmp_path: Path,
) -> None:
    machine = "press3"
    svc = service_factory(
        model=models.bundle_path, signals=signals_file(tmp_path, topics), republish_windows=True
    )
    status = listen(topics.status(svc.config.node))
    _online(status, topics, svc.config.node, 1)
    out = listen(topics.prediction(machine), topics.window(machine))
    x = models.x_test[3].astype(np.float32)
    units = (1.0, 1e3, 1e6, 1e9)  # temperature in s, vibration ms, pressure µs, power ns
    for c, name in enumerate(CHANNELS):
        lines = [
            json.dumps({"ts": (BASE + r) * units[c], "value": float(x[r, c])}) for r in range(T)
        ]
        if name == "temperature":
            lines[5], lines[6] = lines[6], lines[5]  # out of order
            lines.insert(20, json.dumps({"ts": BASE + 20, "value": 999.0}))  # then corrected
            lines.insert(30, json.dumps({"ts": BASE + 30, "value": "hot"}))  # refused
        if name == "vibration":
            del lines[10]  # a hole: forward-filled from slot 9
        mosquitto_pub(broker, f"{topics.prefix}/plant/{machine}/{name}", lines)
    taken = 4 * T - 1 + 1  # one hole, one correction; the "hot" one is refused
    wait_status(svc, lambda s: s.detail["signals"].get("signal_samples") == taken)
    time.sleep(0.3)  # a window would have been published by now
    assert republished(out, topics, machine) == []  # the hole keeps the window open…
    for name in CHANNELS:  # …until a reading reorder_s (2 slots) past its end arrives
        nxt = [json.dumps({"ts": BASE + T + r, "value": 1.0}) for r in range(3)]
        mosquitto_pub(broker, f"{topics.prefix}/plant/{machine}/{name}", nxt)
    assert out.wait_for(
        lambda m: (
            any(t == topics.prediction(machine) for t, _, _ in m)
            and any(t == topics.window(machine) for t, _, _ in m)
        )
    ), "no prediction or republished window for the assembled window"
    (window,) = republished(out, topics, machine)
    want = x.copy()
    want[10, 1] = x[9, 1]
    assert (window.machine, window.seq) == (machine, BASE // T)
    assert window.timestamp_ns == slot_ns(BASE, 1.0) == BASE * 10**9
    np.testing.assert_array_equal(window.data, want)
    (pred,) = predictions(out, topics, machine)
    assert (pred.machine, pred.seq, pred.model_version) == (machine, BASE // T, 1)

    st = wait_status(svc, lambda s: s.detail["signals"].get("signal_samples") == taken + 4 * 3)
    assert st.errors.get("signal_bad_value") == 1 and st.errors.get("signal_duplicate") == 1
    assert st.detail["signals"]["signal_windows"] == 1
    assert st.detail["signals"]["signal_filled"] == 1


def _regenerate(machines: int, seed: int, hz: float, n: int) -> list[list[np.ndarray]]:
    """The simulator's windows, made again from its seed: [tick][machine] → T × C data."""
    fleet = Fleet(
        FleetConfig(machines=machines, label_fraction=0.0, mtbf_s=0.0),
        np.random.default_rng(seed),
    )
    return [[w.data for w in fleet.tick(1.0 / hz, 0)] for _ in range(n)]


def test_the_simulators_signal_mode_rebuilds_exactly_its_windows(
    service_factory: Callable[..., EdgeService],  # noqa: F811
    models: EdgeModels,
    broker: Any,
    topics: Topics,
    listen: Callable[..., Listener],
    tmp_path: Path,
) -> None:
    path = signals_file(tmp_path, topics)
    svc = service_factory(model=models.bundle_path, signals=path, republish_windows=True)
    status = listen(topics.status(svc.config.node))
    _online(status, topics, svc.config.node, 1)
    out = listen(topics.windows(), topics.predictions())
    hz, seed, machines = 2.0, 7, 2
    sim = subprocess.run(
        [
            sys.executable,
            *("-m", "sensor_sim", "run", "--broker", broker.address, "--prefix", topics.prefix),
            *("--signals", str(path), "--machines", str(machines), "--hz", str(hz)),
            *("--seed", str(seed), "--label-fraction", "0", "--fault-mtbf", "0"),
            *("--duration", "2.2", "--no-dashboard"),
        ],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sim.returncode == 0, sim.stderr
    ids = ("m01", "m02")
    n = 4  # ticks at 0, 0.5, 1.0, 1.5 (and 2.0) s

    def enough(msgs: list[tuple[str, bytes, bool]]) -> bool:
        return all(
            sum(t == topics.prediction(m) for t, _, _ in msgs) >= n
            and sum(t == topics.window(m) for t, _, _ in msgs) >= n
            for m in ids
        )

    assert out.wait_for(enough, timeout=20), sim.stderr[-2000:]
    published = int(sim.stderr.split("published ")[-1].split(" windows")[0])  # RunReport
    assert published % machines == 0 and published // machines >= n
    expected = _regenerate(machines, seed, hz, published // machines)
    for i, m in enumerate(ids):
        windows = sorted(republished(out, topics, m), key=lambda w: w.seq)
        seqs = [w.seq for w in windows]
        first = seqs[0]
        assert first * T >= int(time.time()) - 3 * T  # the last whole window before start
        assert seqs == list(range(first, first + len(windows)))  # none lost, none twice
        assert len(windows) == published // machines
        for k, w in enumerate(windows):
            assert w.timestamp_ns == slot_ns((first + k) * T, 1.0)
            np.testing.assert_array_equal(w.data, expected[k][i])  # float32, exactly
        assert sorted(p.seq for p in predictions(out, topics, m)) == seqs
    st = svc.status()
    assert st.detail["signals"]["signal_windows"] == published
    assert not any(k.startswith("signal_") for k in st.errors), st.errors
