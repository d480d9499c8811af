"""The realistic plant (`--realism plant`): statistical properties measured on generated data.

Each test generates data with a fixed seed and measures the property the model promises
(sensor_sim/README.md, "Realistic plant"); tolerances are a few standard errors of the estimate.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nodekit.mqtt import connect, make_client
from protocol import CHANNELS, CLASSES, Command, Topics, Window, decode_window
from protocol.labels import LabelEvent
from sensor_sim import FleetConfig, SimConfig
from sensor_sim.__main__ import main
from sensor_sim.dataset import write_datasets
from sensor_sim.errors import SimError
from sensor_sim.fleet import Fleet, machine_ids
from sensor_sim.plant import (
    ARTEFACT_DROPOUT,
    ARTEFACT_SPIKE,
    ARTEFACT_STUCK,
    Plant,
    PlantConfig,
    PlantStream,
    simulate,
)
from sensor_sim.plant_dataset import load_plant_split
from sensor_sim.plant_fleet import PlantFleet
from sensor_sim.publisher import Simulator

TEMP, VIB, PRES, POWER = (
    CHANNELS.index(c) for c in ("temperature", "vibration", "pressure", "power")
)
PUMP = CLASSES.index("pump_fault")
BEARING = CLASSES.index("bearing_fault")


@pytest.fixture(scope="module")
def day() -> PlantStream:
    """32 machines × 24 plant hours, one window per machine a minute (46,080 windows)."""
    return simulate(PlantConfig(), machine_ids(32), 1440, 60.0, np.random.default_rng(11))


def test_faults_take_about_five_percent_of_machine_time() -> None:
    """Only the state process: 200 machines × 40 plant days, stepped every 60 s."""
    plant = Plant(PlantConfig(), machine_ids(200), np.random.default_rng(1))
    rng = np.random.default_rng(2)
    in_fault = 0
    steps = 40 * 24 * 60
    for _ in range(steps):
        plant.advance(60.0, rng)
        in_fault += int((plant.cls != 0).sum())
    fraction = in_fault / (steps * 200)
    assert 0.045 < fraction < 0.055, fraction


def test_fault_fraction_in_generated_windows_and_classes_are_all_present(day: PlantStream) -> None:
    assert 0.03 < (day.true != 0).mean() < 0.07
    assert set(np.unique(day.true).tolist()) == {0, 1, 2, 3}


def test_severity_grows_monotonically_within_each_fault_and_starts_subtle(day: PlantStream) -> None:
    """Per machine, severity never falls while a fault lasts; early windows are subtle."""
    episodes = 0
    early = []
    for m in range(32):
        mine = day.machine == m
        cls, sev = day.true[mine], day.severity[mine].astype(np.float64)
        starts = np.flatnonzero((cls != 0) & (np.r_[0, cls[:-1]] == 0))
        for s in starts:
            end = s
            while end < len(cls) and cls[end] == cls[s]:
                end += 1
            run = sev[s:end]
            assert np.all(np.diff(run) >= 0), (m, s, run)
            episodes += 1
            early.append(run[0])
    assert episodes >= 20
    assert np.median(early) < 0.05  # the first minute of a fault: barely visible
    assert day.severity.max() == pytest.approx(1.0)


def test_fault_means_move_with_severity_in_the_physical_direction(day: PlantStream) -> None:
    """Pump defect: pressure falls as severity grows; bearing: vibration and temperature rise."""
    means = day.data.mean(axis=1)
    pump = day.true == PUMP
    assert np.corrcoef(day.severity[pump], means[pump, PRES])[0, 1] < -0.8
    bearing = day.true == BEARING
    assert np.corrcoef(day.severity[bearing], means[bearing, VIB])[0, 1] > 0.5
    assert np.corrcoef(day.severity[bearing], means[bearing, TEMP])[0, 1] > 0.5


def test_power_and_temperature_rise_together(day: PlantStream) -> None:
    """Inside normal windows (shared noise) and across one machine's windows (the load)."""
    normal = (day.true == 0) & (day.artefacts == 0)
    x = day.data[normal].astype(np.float64)
    xc = x - x.mean(axis=1, keepdims=True)
    within = (xc[..., TEMP] * xc[..., POWER]).sum(axis=1) / np.sqrt(
        (xc[..., TEMP] ** 2).sum(axis=1) * (xc[..., POWER] ** 2).sum(axis=1)
    )
    assert 0.25 < within.mean() < 0.5  # ρ² = 0.36 of the shared term, less the load's part
    m0 = normal & (day.machine == 0)
    means = day.data[m0].mean(axis=1)
    assert np.corrcoef(means[:, TEMP], means[:, POWER])[0, 1] > 0.2


def test_every_machine_has_its_own_baseline_and_noise_level(day: PlantStream) -> None:
    normal = (day.true == 0) & (day.artefacts == 0)
    base = np.array([day.data[normal & (day.machine == m)].mean(axis=(0, 1)) for m in range(32)])
    noise = np.array(
        [day.data[normal & (day.machine == m)].std(axis=1).mean(axis=0) for m in range(32)]
    )
    # spread between machines far above the estimate's own error (≈ 0.1 °C, 0.3 W)
    assert base[:, TEMP].std() > 1.0 and base[:, POWER].std() > 2.5
    assert base[:, PRES].std() > 0.15
    assert noise[:, TEMP].std() / noise[:, TEMP].mean() > 0.1
    assert np.ptp(noise[:, VIB]) / noise[:, VIB].mean() > 0.3


def test_artefact_rates_match_the_configuration(day: PlantStream) -> None:
    cfg = PlantConfig()
    t, c = day.data.shape[1:]
    spike_windows = ((day.artefacts & ARTEFACT_SPIKE) > 0).mean()
    assert spike_windows == pytest.approx(1 - (1 - cfg.spike_rate) ** (t * c), rel=0.1)
    dropout_windows = ((day.artefacts & ARTEFACT_DROPOUT) > 0).mean()
    assert dropout_windows == pytest.approx(1 - (1 - cfg.dropout_rate) ** c, rel=0.15)
    # stuck: rate × mean duration per channel, of 4 channels ⇒ ≈ 4 · 0.02/h · 600 s ≈ 1.3 %
    stuck = ((day.artefacts & ARTEFACT_STUCK) > 0).mean()
    expected = c * cfg.stuck_per_h * cfg.stuck_mean_s / 3600
    assert expected / 2 < stuck < expected * 2
    # a stuck window reads one value per stuck channel, held over the whole window
    w = day.data[(day.artefacts & ARTEFACT_STUCK) > 0]
    assert (np.ptp(w, axis=1) == 0).any(axis=1).all()
    # a dropout holds the value before it: ≥ 5 equal consecutive samples in some channel
    d = day.data[(day.artefacts == ARTEFACT_DROPOUT)]
    flat = (np.diff(d, axis=1) == 0).sum(axis=1).max(axis=1)
    assert (flat >= 1).all() and np.median(flat) >= 5  # a run may be cut by the window's end
    assert np.isfinite(day.data).all()  # the window format refuses NaN


def test_labels_are_scarce_late_and_five_percent_wrong(day: PlantStream) -> None:
    cfg = PlantConfig()
    labeled = day.observed >= 0
    assert labeled.mean() == pytest.approx(cfg.label_fraction, rel=0.1)
    wrong = (day.observed[labeled] != day.true[labeled]).mean()
    assert 0.035 < wrong < 0.065
    delays = day.label_delay_s[labeled]
    lo, hi = cfg.label_delay_s
    assert delays.min() >= lo and delays.max() <= hi
    assert np.mean(delays) == pytest.approx((lo + hi) / 2, rel=0.05)
    assert np.isnan(day.label_delay_s[~labeled]).all()


def test_drift_moves_only_the_drifting_machine() -> None:
    cfg = PlantConfig(fault_fraction=0.0, drift_machines=("m02",), drift_ramp_s=3600.0)
    s = simulate(cfg, machine_ids(3), 240, 60.0, np.random.default_rng(5))  # 4 h
    temp = s.data[..., TEMP].mean(axis=1)
    for m, moved in ((0, False), (1, True), (2, False)):
        mine = s.machine == m
        first, last = temp[mine][:10].mean(), temp[mine][-60:].mean()
        assert bool(last - first > 5.0) is moved, (m, first, last)  # normal: 50 → 58 °C
    assert s.drift[s.machine == 1][-1] == 1.0 and s.drift[s.machine != 1].max() == 0.0


def test_unknown_drift_machine_is_refused() -> None:
    with pytest.raises(SimError, match="m09"):
        Plant(PlantConfig(drift_machines=("m09",)), machine_ids(3), np.random.default_rng(0))
    with pytest.raises(Exception, match="plant_drift"):
        SimConfig(fleet=FleetConfig(machines=3), plant_drift=("m09",))


def test_time_scale_compresses_plant_time() -> None:
    """At time_scale 60 a window a second is a window a plant minute: the same plant."""
    fast = simulate(
        PlantConfig(time_scale=60.0), machine_ids(8), 600, 1.0, np.random.default_rng(3)
    )
    slow = simulate(PlantConfig(), machine_ids(8), 600, 60.0, np.random.default_rng(3))
    assert fast.time_s[-1] == pytest.approx(600 * 60)
    for name in ("data", "true", "severity", "observed", "time_s"):
        assert np.array_equal(getattr(fast, name), getattr(slow, name)), name


def test_plant_fleet_sends_late_labels_as_events_and_obeys_fault_commands() -> None:
    cfg = PlantConfig(fault_fraction=0.0, label_delay_s=(2.0, 2.0), label_error=0.0)
    fleet = PlantFleet(FleetConfig(machines=4, label_fraction=1.0), cfg, np.random.default_rng(0))
    fleet.apply(Command("fault", machines=("m03",), state="drive_wear"))
    events: list[tuple[int, LabelEvent]] = []
    for k in range(40):  # 5 s at 8 Hz
        windows = fleet.tick(0.125, timestamp_ns=(10**9) * 1000 + k * 125_000_000)
        assert all(w.label is None for w in windows)
        events += [(k, e) for e in fleet.due_label_events()]
    assert len(events) == 4 * (40 - 16)  # 2 s late: the last 16 ticks' labels are pending
    for k, e in events:
        window_k = round((e.start - 1000) / 0.125)
        assert k - window_k == 16  # exactly the delay, in ticks
        assert e.end is not None and e.covers(e.start) and not e.covers(e.start + 0.125)
        assert e.cls == ("drive_wear" if e.machine == "m03" else "normal")
    assert [m.state_name for m in fleet.machines][2] == "drive_wear"
    fleet.apply(Command("repair", machines=("m03",)))
    fleet.tick(0.1, timestamp_ns=0)
    assert fleet.plant.cls[2] == 0


def test_plant_dataset_files_carry_truth_apart_from_the_observed_label(tmp_path: Path) -> None:
    rc = main(["dataset", "--realism", "plant", "--out", str(tmp_path), "--seed", "3",
               "--machines", "4", "--hours", "6", "--test-hours", "2"])  # fmt: skip
    assert rc == 0
    meta = json.loads((tmp_path / "classes.json").read_text())
    assert meta["realism"] == "plant" and meta["sizes"]["history"] == 4 * 720
    hist = load_plant_split(tmp_path, "history")
    infer = load_plant_split(tmp_path, "infer")
    assert len(infer) == 4 * 240 and infer.time_s.min() > hist.time_s.max()
    x, y = np.load(tmp_path / "train_data.npy"), np.load(tmp_path / "train_labels.npy")
    arrived = (hist.observed >= 0) & (hist.time_s + hist.label_delay_s <= hist.time_s[-1])
    assert len(y) == arrived.sum() and np.array_equal(y, hist.observed[arrived])
    assert np.array_equal(x, hist.data[arrived])
    assert (hist.observed[hist.observed >= 0] != hist.true[hist.observed >= 0]).any()


def test_plant_dataset_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    args = ["dataset", "--realism", "plant", "--seed", "9", "--machines", "2", "--hours", "1",
            "--test-hours", "0.5"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    for f in sorted((tmp_path / "a").glob("*.npy")):
        assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes(), f.name


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


# Digests of the seed-faithful output, taken before the plant existed: the default must not move.
SEED_DATASET_DIGEST = "506d97025a332823"
SEED_FLEET_DIGEST = "052e3e2b7cdc905a"


def test_default_realism_is_seed_and_bit_identical(tmp_path: Path) -> None:
    assert SimConfig().realism == "seed"
    sizes = {"train": 40, "infer": 8, "drift_train": 8, "drift_infer": 8}
    write_datasets(tmp_path, seed=42, sizes=sizes)
    files = [np.load(tmp_path / f"{s}_{k}.npy") for s in sizes for k in ("data", "labels")]
    assert _digest(*files) == SEED_DATASET_DIGEST
    fleet = Fleet(FleetConfig(machines=4, label_fraction=0.5), np.random.default_rng(0))
    ticks = [fleet.tick(0.1, timestamp_ns=k) for k in range(50)]
    data = np.stack([w.data for t in ticks for w in t])
    labels = np.array([-1 if w.label is None else w.label for t in ticks for w in t])
    assert _digest(data, labels) == SEED_FLEET_DIGEST
    sim = Simulator(SimConfig(fleet=FleetConfig(machines=2), seed=1))
    assert type(sim.fleet) is Fleet
    assert type(Simulator(SimConfig(realism="plant", seed=1)).fleet) is PlantFleet


@pytest.mark.broker
def test_live_plant_publishes_unlabeled_windows_then_late_label_events(
    broker: Any, topics: Topics
) -> None:
    """`run --realism plant` on a real broker: windows carry no label; each label event covers
    exactly one window seen earlier and arrives its delay (plant seconds / time scale) later."""
    windows: list[tuple[float, Window]] = []
    events: list[tuple[float, LabelEvent]] = []
    lock = threading.Lock()
    ready = threading.Event()

    def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any = None) -> None:
        client.subscribe([(topics.windows(), 0), (topics.labels, 1)])

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        now = time.monotonic()
        with lock:
            if msg.topic == topics.labels:
                events.append((now, LabelEvent.from_json(msg.payload)))
            else:
                windows.append((now, decode_window(msg.payload)))

    client = make_client(f"test-plant-{time.monotonic_ns()}")
    client.on_connect, client.on_message = on_connect, on_message
    client.on_subscribe = lambda *a: ready.set()
    connect(client, broker.address)
    client.loop_start()
    assert ready.wait(5)
    plant_cfg = SimConfig(
        broker=broker.address,
        prefix=topics.prefix,
        fleet=FleetConfig(machines=3, label_fraction=0.5),
        hz=10.0,
        seed=4,
        realism="plant",
        time_scale=300.0,  # label delays of 120..900 plant s: 0.4..3 s
        status_interval_s=0.5,
    )
    sim = Simulator(plant_cfg).start()
    stop = threading.Event()
    thread = threading.Thread(target=lambda: sim.run(stop), daemon=True)
    thread.start()
    try:
        time.sleep(6.0)
    finally:
        stop.set()
        thread.join(10)
        sim.close()
        client.disconnect()
        client.loop_stop()
    with lock:
        got_windows, got_events = list(windows), list(events)
    assert len(got_windows) > 100 and all(w.label is None for _, w in got_windows)
    seen = {(w.machine, w.timestamp_ns / 1e9): t for t, w in got_windows}
    assert len(got_events) > 20
    fraction = len(got_events) / len(got_windows)
    assert 0.2 < fraction < 0.5  # half of them labeled, the last ~3 s still pending
    for arrived, e in got_events:
        sent = seen[(e.machine, e.start)]  # the event names exactly one window's time
        late = arrived - sent
        assert 0.3 < late < 3.5, late  # 120..900 plant s at 300× (± a tick)
        assert e.end is not None and e.end - e.start == pytest.approx(0.05)
        assert e.source == "sensor_sim plant"
