"""One pi_edge serving two machine types takes per-signal readings for both, against a real
Mosquitto and two real converted models of different shapes: the built-in type's (60 × 4 at
1 Hz, its file as before machine types) and the made-up type `press` (32 × 3 at the type's
50 Hz, its own file naming `machine_type = "press"`). Each type's readings are assembled into
its own windows and classified by its own model in its own class names; a reading of a machine
on another type's topic is refused and counted. And the simulator publishes a second type's
(the fan's) readings on its own file and grid, which the node rebuilds exactly; a Modbus
source in the second type's file feeds that type's model."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench._sites import site_toml
from pi_edge import EdgeService
from protocol import CHANNELS, CLASSES, Topics
from sensor_sim.fan import FAN_TYPE
from sensor_sim.fleet import Fleet, FleetConfig

from ._model import EdgeModels
from ._plant_servers import PlantServer, free_port
from ._type_model import PRESS, TypeModel
from .conftest import Publisher
from .test_machine_types import node, site_file  # noqa: F401 (fixtures)
from .test_service import _online
from .test_signals_ingest import REPO, predictions, republished, wait_status

pytestmark = pytest.mark.broker
BASE = 1_700_000_160  # a multiple of 60 s and of 32 / 50 s: both types' windows start on it


def _file(path: Path, topics: Topics, channels: tuple[str, ...], head: str) -> Path:
    """Every channel on {prefix}/plant/{machine}/{channel}, times in ms under `ts`."""
    parts = [head]
    for c in channels:
        parts.append(
            f'[[signal]]\ntopic = "{topics.prefix}/plant/{{machine}}/{c}"\nchannel = "{c}"\n'
            'time = "ts"\n'
        )
    path.write_text("\n".join(parts))
    return path


def _send(
    pub: Publisher,
    topics: Topics,
    machine: str,
    channels: tuple[str, ...],
    xs: np.ndarray,
    hz: float,
) -> None:
    """Windows `xs` (n × T × C) as readings from slot BASE·hz on, in time order, one message per
    sample and channel."""
    first = round(BASE * hz)
    rows = xs.reshape(-1, xs.shape[-1])
    for r, row in enumerate(rows):
        ms = (first + r) * 1000.0 / hz
        for c, name in enumerate(channels):
            payload = json.dumps({"ts": ms, "value": float(row[c])}).encode()
            pub.publish(f"{topics.prefix}/plant/{machine}/{name}", payload)


def test_one_node_assembles_and_classifies_each_types_readings_with_its_own_model(
    node: Callable[..., EdgeService],  # noqa: F811
    publisher: Publisher,
    listen: Callable[..., Any],
    topics: Topics,
    models: EdgeModels,
    press_model: TypeModel,
    site_file: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    seed = _file(tmp_path / "seed.toml", topics, CHANNELS, "sample_hz = 1.0\n")  # as before
    press = _file(tmp_path / "press.toml", topics, PRESS.channel_names, 'machine_type = "press"\n')
    publisher.publish(topics.model_current, models.bundle(3, site=topics.prefix), retain=True)
    publisher.publish(
        topics.model_of("press"), press_model.bundle(5, site=topics.prefix), retain=True
    )
    svc = node(site=site_file, signals=(seed, press), node="pi-signals")
    deadline = time.monotonic() + 30
    while any(lane.manager.model is None for lane in svc.lanes.lanes):
        assert time.monotonic() < deadline, "the two models were not installed"
        time.sleep(0.05)
    out = listen(topics.prediction("press-1"), topics.prediction("m01"))

    n_press, n_seed = 12, 8
    _send(publisher, topics, "press-1", PRESS.channel_names, press_model.x_test[:n_press], 50.0)
    _send(publisher, topics, "m01", CHANNELS, models.x_test[:n_seed], 1.0)
    # readings on the other type's topics: refused, never assembled into either type's windows
    publisher.publish(f"{topics.prefix}/plant/m01/force", b'{"ts": 1700000160000, "value": 1}')
    publisher.publish(f"{topics.prefix}/plant/press-1/power", b'{"ts": 1700000160000, "value": 1}')
    assert out.wait_for(
        lambda _: (
            len(out.on(topics.prediction("press-1"))) == n_press
            and len(out.on(topics.prediction("m01"))) == n_seed
        ),
        30,
    ), "not every assembled window was classified"

    press_preds = [json.loads(p) for p in out.on(topics.prediction("press-1"))]
    assert {p["machine_type"] for p in press_preds} == {"press"}
    assert {tuple(p["classes"]) for p in press_preds} == {PRESS.classes}
    assert {p["model_version"] for p in press_preds} == {5}
    first = BASE * 50 // 32  # the press's epoch-aligned window index at 50 Hz
    assert sorted(p["seq"] for p in press_preds) == list(range(first, first + n_press))
    truth = {first + i: PRESS.classes[k] for i, k in enumerate(press_model.y_test[:n_press])}
    right = sum(p["label"] == truth[p["seq"]] for p in press_preds)
    assert right / n_press >= 0.9, f"press model right on {right}/{n_press}"

    seed_preds = predictions(out, topics, "m01")
    assert {p.classes for p in seed_preds} == {CLASSES} and {
        p.model_version for p in seed_preds
    } == {3}
    first = BASE // 60
    assert sorted(p.seq for p in seed_preds) == list(range(first, first + n_seed))
    raw = [json.loads(p) for p in out.on(topics.prediction("m01"))]
    assert all("machine_type" not in p for p in raw)  # the built-in type: as before types
    truth = {first + i: CLASSES[k] for i, k in enumerate(models.y_test[:n_seed])}
    right = sum(p.label == truth[p.seq] for p in seed_preds)
    assert right / n_seed >= 0.75, f"default model right on {right}/{n_seed}"

    status = wait_status(svc, lambda s: s.errors.get("signal_wrong_type") == 2)
    signals = status.detail["signals"]
    assert signals["signal_windows"] == n_press + n_seed
    assert signals["types"]["press"]["signal_windows"] == n_press
    assert signals["types"]["press"]["signal_samples"] == n_press * 32 * 3
    assert signals["types"]["default"]["signal_samples"] == n_seed * 60 * 4
    assert not any(k.startswith("signal_") and k != "signal_wrong_type" for k in status.errors)
    lanes = {lane.name: lane for lane in svc.lanes.lanes}
    assert (lanes["press"].windows, lanes["default"].windows) == (n_press, n_seed)


def test_the_simulators_seed_and_fan_readings_are_rebuilt_exactly_by_one_node(
    node: Callable[..., EdgeService],  # noqa: F811
    listen: Callable[..., Any],
    topics: Topics,
    broker: Any,
    tmp_path: Path,
) -> None:
    """`sensor_sim run --signals seed,fans --fans 1`: the seed machine's readings on the first
    file's 1 Hz grid, the fan's on the fan type's (1000 Hz, 128 samples); a node of both types
    rebuilds and republishes exactly the simulator's windows of each (the fan type has no model
    here: its windows are counted unclassified, and still republished)."""
    site = tmp_path / "site.toml"
    site.write_text(site_toml([FAN_TYPE], ["m*"]))
    seed = _file(tmp_path / "seed.toml", topics, CHANNELS, "sample_hz = 1.0\n")
    fans = _file(tmp_path / "fans.toml", topics, FAN_TYPE.channel_names, 'machine_type = "fan"\n')
    svc = node(site=site, signals=(seed, fans), republish_windows=True, node="pi-sim-types")
    _online(listen(topics.status("pi-sim-types")), topics, "pi-sim-types")
    out = listen(topics.windows())
    hz, seed_no = 2.0, 11
    sim = subprocess.run(
        [
            sys.executable,
            *("-m", "sensor_sim", "run", "--broker", broker.address, "--prefix", topics.prefix),
            *("--signals", f"{seed},{fans}", "--machines", "1", "--fans", "1", "--hz", str(hz)),
            *("--seed", str(seed_no), "--label-fraction", "0", "--fault-mtbf", "0"),
            *("--duration", "2.2", "--no-dashboard"),
        ],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sim.returncode == 0, sim.stderr
    published = int(sim.stderr.split("published ")[-1].split(" windows")[0])  # RunReport
    ticks = published // 2
    assert ticks >= 4
    assert out.wait_for(
        lambda _: all(len(republished(out, topics, m)) == ticks for m in ("m01", "fan-01")), 20
    ), sim.stderr[-2000:]
    fleet = Fleet(
        FleetConfig(machines=1, fans=1, label_fraction=0.0, mtbf_s=0.0),
        np.random.default_rng(seed_no),
    )
    expected = [fleet.tick(1.0 / hz, 0) for _ in range(ticks)]
    for i, (machine, t) in enumerate((("m01", 60), ("fan-01", 128))):
        windows = sorted(republished(out, topics, machine), key=lambda w: w.seq)
        seqs = [w.seq for w in windows]
        if machine == "m01":  # 60 s windows every 0.5 s: one after the other
            assert seqs == list(range(seqs[0], seqs[0] + ticks))
        else:  # 0.128 s windows every 0.5 s: the simulator skips to the clock's latest window
            assert len(set(seqs)) == ticks and all(b - a >= 3 for a, b in itertools.pairwise(seqs))
        for k, w in enumerate(windows):
            assert w.data.shape == expected[k][i].data.shape == (t, 4 if i == 0 else 3)
            np.testing.assert_array_equal(w.data, expected[k][i].data)  # float32, exactly
    st = wait_status(svc, lambda s: s.detail["signals"]["signal_windows"] == published)
    assert st.detail["signals"]["types"]["fan"]["signal_samples"] == ticks * 128 * 3
    assert not any(k.startswith("signal_") for k in st.errors), st.errors
    lanes = {lane.name: lane for lane in svc.lanes.lanes}
    assert (lanes["fan"].unclassified, lanes["default"].unclassified) == (ticks, ticks)


def test_a_modbus_source_in_the_second_types_file_feeds_that_types_model(
    node: Callable[..., EdgeService],  # noqa: F811
    publisher: Publisher,
    listen: Callable[..., Any],
    topics: Topics,
    models: EdgeModels,
    press_model: TypeModel,
    site_file: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A press's three channels polled from a Modbus TCP server nobody here wrote
    (modbus-serial) on the press's 50 Hz grid: 32-sample windows of the driven values, classified
    by the press model in its class names, on a node that also serves the built-in type."""
    port = free_port()
    mb = PlantServer("modbus_server.js", port).start()
    try:
        mb.send(holding={"0": 35, "1": 20, "2": 9})  # force kN, stroke mm, current A
        regs = "".join(
            f'[[modbus.register]]\nmachine = "press-1"\nchannel = "{c}"\naddress = {i}\n'
            for i, c in enumerate(PRESS.channel_names)
        )
        press = tmp_path / "press.toml"
        press.write_text(
            'machine_type = "press"\nmax_gap_s = 0.2\nreorder_s = 0.1\n'
            f'[[modbus]]\nhost = "127.0.0.1"\nport = {port}\nname = "press-drive"\n{regs}'
        )
        seed = _file(tmp_path / "seed.toml", topics, CHANNELS, "sample_hz = 1.0\n")
        publisher.publish(
            topics.model_of("press"), press_model.bundle(5, site=topics.prefix), retain=True
        )
        out = listen(topics.prediction("press-1"), topics.window("press-1"))
        svc = node(site=site_file, signals=(seed, press), republish_windows=True)
        assert out.wait_for(
            lambda _: (
                bool(out.on(topics.prediction("press-1")))
                and bool(republished(out, topics, "press-1"))
            ),
            30,
        ), f"no press window: {svc.status().detail.get('sources')}"
        window = republished(out, topics, "press-1")[0]
        np.testing.assert_array_equal(window.data, np.tile([35.0, 20.0, 9.0], (32, 1)))
        assert window.timestamp_ns % int(1e9 / 50) == 0  # on the press's 50 Hz grid
        pred = json.loads(out.on(topics.prediction("press-1"))[0])
        assert (pred["machine_type"], tuple(pred["classes"])) == ("press", PRESS.classes)
        assert pred["model_version"] == 5
        (source,) = svc.status().detail["sources"]
        assert (source["name"], source["state"]) == ("press-drive", "connected")
    finally:
        mb.stop()
