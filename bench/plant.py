"""Quality measured honestly: the compact model on a realistic plant beside seed-style data.

`python -m bench.plant [--json FILE] [--quick] [--work DIR]`

For each data set the compact model is trained by `python -m jetson_trainer train` in a
subprocess (TensorFlow stays out of this process), then a held-out stream — 16 machines, one
window per machine every 30 s, no drift — is replayed offline through pi_edge's pure pieces:
the LiteRT `Classifier` built from the bundle, the manifest's `DriftMonitor` and the
`Debouncer` of the machine state (pi_edge defaults: 5 windows). Scored against the TRUE class
(bench/quality.py):

* seed:  trained on seed 000's balanced `train` split (true labels). Stream: the seed-faithful
         simulator (sensor_sim.fleet, i.i.d. windows of the class tables) with the plant's fault
         share and episode length (MTBF 19 h, repair 1 h), faults at full strength at once.
* plant: trained on the plant history's labeled windows (`train_*`: 5 % of windows, labels
         late and 5 % wrong). Stream: the plant's next hours (rare, developing faults,
         correlated channels, per-machine baselines, artefacts).
* seed model on the plant: the seed-trained model on the plant's stream (the gap between
         the two kinds of data, with nothing learnt from the plant).

--quick: 48 h of plant history, 24 h streams, 20 epochs (~1 min here); default: 96 h, 48 h,
40 epochs.

Columns: accuracy; macro-F1 and recall per class; macro-F1 over the windows that are normal
or whose fault has developed (severity ≥ 0.5: what no model can see in a fault's first
minutes is then left out); detection delay of a fault (true onset →
first window whose debounced state is a fault; median and 90th percentile over the stream's
episodes, and how many were detected before they ended); false fault events per machine-hour
(the debounced state turns to a fault while the machine is truly normal); the drift detector's
alarms per hour (overall state entering `drift`) and per machine-hour (a machine's state entering
`drift`) on these undrifted streams. The monitor's accuracy signal sees the windows' observed
labels where they have one (plant: noisy, seed: true), at the window.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench import quality
from pi_edge.loop.drift import DriftMonitor, DriftState
from pi_edge.model.classifier import Classifier
from pi_edge.report.debounce import DEFAULT_STATE_WINDOWS, Debouncer
from protocol import CLASSES, decode_bundle
from sensor_sim.fleet import Fleet, FleetConfig, machine_ids
from sensor_sim.plant import PlantConfig, PlantStream
from sensor_sim.plant_dataset import load_plant_split

log = logging.getLogger("bench.plant")

PY = sys.executable
MACHINES = 16
PERIOD_S = 30.0
DEVELOPED = 0.5  # severity from which a fault counts as developed (the second macro-F1)
TIME_LIMIT_QUICK_S = 180.0  # --quick on 2 cores, both models included


@dataclass
class Row:
    """One data set's figures (the --json rows; bench.report can read them as they are)."""

    dataset: str
    train_windows: int
    stream_windows: int
    stream_hours: float
    machine_hours: float
    accuracy: float
    macro_f1: float
    macro_f1_developed: float  # windows that are normal or at severity ≥ DEVELOPED
    recall: dict[str, float]
    episodes: int
    detected: int
    delay_median_s: float
    delay_p90_s: float
    false_fault_events_per_machine_h: float
    false_fault_events: int
    drift_alarms_per_h: float
    drift_alarms: int
    machine_drift_alarms_per_machine_h: float
    train_s: float
    replay_s: float
    delays_s: list[float | None] = field(default_factory=list)


@dataclass(frozen=True)
class Replayed:
    """What the pi_edge pieces made of a stream, per window."""

    pred: npt.NDArray[np.int64]
    state: npt.NDArray[np.int64]  # debounced class, −1 unknown
    overall: npt.NDArray[np.int64]  # DriftMonitor.overall after the window's tick
    machine_drift: npt.NDArray[np.int64]  # the window's machine drift state


def replay(
    classifier: Classifier,
    monitor: DriftMonitor,
    debouncer: Debouncer,
    stream: PlantStream,
) -> Replayed:
    """Classify the stream tick by tick as pi_edge would (a tick's windows are one batch)."""
    probs = classifier.predict(stream.data)
    pred = probs.argmax(axis=1).astype(np.int64)
    conf = probs[np.arange(len(pred)), pred]
    n = len(pred)
    state = np.full(n, quality.UNKNOWN, np.int64)
    overall = np.zeros(n, np.int64)
    mdrift = np.zeros(n, np.int64)
    ids = stream.ids
    names = [ids[m] for m in stream.machine.tolist()]
    index = {c: i for i, c in enumerate(CLASSES)}
    times = stream.time_s
    bounds = np.flatnonzero(np.r_[True, np.diff(times) != 0, True])
    for a, b in itertools.pairwise(bounds):
        truth = [None if o < 0 else int(o) for o in stream.observed[a:b].tolist()]
        verdicts = monitor.observe(names[a:b], stream.data[a:b], probs[a:b], truth, pred[a:b])
        mdrift[a:b] = verdicts.states
        overall[a:b] = int(monitor.overall)
        for i in range(a, b):
            debouncer.update(names[i], CLASSES[pred[i]], float(conf[i]), float(times[i]))
            current = debouncer.current(names[i])
            state[i] = quality.UNKNOWN if current is None else index[current]
    return Replayed(pred, state, overall, mdrift)


def score(
    name: str,
    stream: PlantStream,
    rep: Replayed,
    train_windows: int,
    train_s: float,
    replay_s: float,
) -> Row:
    """The honest figures of one replayed stream."""
    k = len(CLASSES)
    hours = (float(stream.time_s.max() - stream.time_s.min()) + PERIOD_S) / 3600
    machine_hours = hours * len(stream.ids)
    found = quality.episodes(stream.true, stream.machine, stream.time_s)
    delays = quality.detection_delays(found, rep.state, stream.machine, stream.time_s)
    false_events = quality.false_fault_events(rep.state, stream.true, stream.machine)
    alarms = quality.alarm_count(
        rep.overall[np.r_[np.diff(stream.time_s) != 0, True]], int(DriftState.DRIFT)
    )
    machine_alarms = sum(
        quality.alarm_count(rep.machine_drift[stream.machine == m], int(DriftState.DRIFT))
        for m in range(len(stream.ids))
    )
    recall = quality.per_class_recall(stream.true, rep.pred, k)
    developed = (stream.true == 0) | (stream.severity >= DEVELOPED)
    return Row(
        dataset=name,
        train_windows=train_windows,
        stream_windows=len(stream),
        stream_hours=round(hours, 3),
        machine_hours=round(machine_hours, 2),
        accuracy=quality.accuracy(stream.true, rep.pred),
        macro_f1=quality.macro_f1(stream.true, rep.pred, k),
        macro_f1_developed=quality.macro_f1(stream.true[developed], rep.pred[developed], k),
        recall={c: r for c, r in zip(CLASSES, recall, strict=True)},
        episodes=len(found),
        detected=sum(d is not None for d in delays),
        delay_median_s=quality.percentile(delays, 50),
        delay_p90_s=quality.percentile(delays, 90),
        false_fault_events_per_machine_h=false_events / machine_hours,
        false_fault_events=false_events,
        drift_alarms_per_h=alarms / hours,
        drift_alarms=alarms,
        machine_drift_alarms_per_machine_h=machine_alarms / machine_hours,
        train_s=round(train_s, 1),
        replay_s=round(replay_s, 1),
        delays_s=delays,
    )


def seed_stream(hours: float, seed: int) -> PlantStream:
    """The seed-faithful simulator as a stream: 16 machines, a window each per 30 s, the plant's
    fault share (5 %: MTBF 19 h, repair 1 h), 5 % of windows labeled (truly)."""
    plant = PlantConfig()
    cfg = FleetConfig(
        machines=MACHINES,
        label_fraction=plant.label_fraction,
        mtbf_s=plant.gap_mean_s,
        repair_s=plant.fault_mean_s,
    )
    fleet = Fleet(cfg, np.random.default_rng(seed))
    ticks = round(hours * 3600 / PERIOD_S)
    data, true, observed = [], [], []
    for k in range(ticks):
        windows = fleet.tick(PERIOD_S, timestamp_ns=k)
        data += [w.data for w in windows]
        true += [m.state for m in fleet.machines]
        observed += [-1 if w.label is None else w.label for w in windows]
    n = ticks * MACHINES
    return PlantStream(
        machine_ids(MACHINES),
        np.stack(data) if data else np.zeros((0, 60, 4), np.float32),
        np.tile(np.arange(MACHINES, dtype=np.int16), ticks),
        np.repeat(np.arange(1, ticks + 1) * PERIOD_S, MACHINES),
        np.asarray(true, np.int64),
        (np.asarray(true) != 0).astype(np.float32),
        np.asarray(observed, np.int64),
        np.full(n, np.nan, np.float32),
        np.zeros(n, np.float32),
        np.zeros(n, np.uint8),
    )


def _run(argv: list[str], logfile: Path) -> None:
    """A subprocess with its output in `logfile`; RuntimeError with the log's tail if it fails."""
    with logfile.open("ab") as out:
        rc = subprocess.run(
            argv, stdout=out, stderr=subprocess.STDOUT, check=False,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        ).returncode  # fmt: skip
    if rc:
        tail = " / ".join(logfile.read_text(errors="replace").strip().splitlines()[-5:])
        raise RuntimeError(f"{' '.join(argv[1:4])} failed (exit {rc}): {tail}")


@dataclass(frozen=True)
class Trained:
    classifier: Classifier
    manifest: Any
    windows: int
    seconds: float


def train(data: Path, out: Path, epochs: int, logfile: Path) -> Trained:
    """`jetson_trainer train` (unsigned bundle) in a subprocess, loaded as pi_edge loads it."""
    t0 = time.monotonic()
    _run(
        [PY, "-m", "jetson_trainer", "train", "--data", str(data), "--out", str(out),
         "--epochs", str(epochs)],
        logfile,
    )  # fmt: skip
    seconds = time.monotonic() - t0
    bundle = decode_bundle((out / "model.bundle").read_bytes(), None, allow_unsigned=True)
    n = len(np.load(data / "train_labels.npy", mmap_mode="r"))
    return Trained(Classifier(bundle.model, bundle.manifest), bundle.manifest, n, seconds)


def measure(name: str, model: Trained, stream: PlantStream) -> Row:
    """Replay `stream` through `model` with a fresh monitor and debouncer; score it."""
    t0 = time.monotonic()
    monitor = DriftMonitor.from_manifest(model.manifest)
    rep = replay(model.classifier, monitor, Debouncer(DEFAULT_STATE_WINDOWS), stream)
    row = score(name, stream, rep, model.windows, model.seconds, time.monotonic() - t0)
    log.info("%s: %s", name, {k: v for k, v in asdict(row).items() if k != "delays_s"})
    return row


def print_table(rows: list[Row]) -> None:
    """Markdown: one row per data set."""

    def f(v: float, fmt: str = "{:.3f}") -> str:
        return "—" if v is None or not math.isfinite(v) else fmt.format(v)

    head = ["data set", "train windows", "stream (machine-h)", "accuracy", "macro-F1",
            "macro-F1 (severity ≥ 0.5)",
            *(f"recall {c}" for c in CLASSES), "faults detected",
            "delay median / p90 (s)", "false fault events / machine-h",
            "false drift alarms / h (machine-level / machine-h)"]  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        cells = [
            r.dataset,
            f"{r.train_windows:,}",
            f"{r.stream_windows:,} ({r.machine_hours:g})",
            f(r.accuracy),
            f(r.macro_f1),
            f(r.macro_f1_developed),
            *(f(r.recall[c]) for c in CLASSES),
            f"{r.detected} of {r.episodes}",
            f"{f(r.delay_median_s, '{:.0f}')} / {f(r.delay_p90_s, '{:.0f}')}",
            f"{f(r.false_fault_events_per_machine_h, '{:.4f}')} ({r.false_fault_events})",
            f"{f(r.drift_alarms_per_h, '{:.2f}')} ({r.drift_alarms}); "
            f"{f(r.machine_drift_alarms_per_machine_h, '{:.3f}')}",
        ]
        print("| " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--json", type=Path, help="also write the rows here (a JSON list)")
    p.add_argument("--quick", action="store_true", help=f"< {TIME_LIMIT_QUICK_S:.0f} s on 2 cores")
    p.add_argument("--work", type=Path, help="working dir (default: a temp dir)")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    work = args.work or Path(tempfile.mkdtemp(prefix="edgeloop-bench-plant-"))
    work.mkdir(parents=True, exist_ok=True)
    logfile = work / "subprocesses.log"
    hours, test_hours, epochs = (48.0, 24.0, 20) if args.quick else (96.0, 48.0, 40)
    t0 = time.monotonic()
    seed_dir, plant_dir = work / "seed_data", work / "plant_data"
    _run([PY, "-m", "sensor_sim", "dataset", "--out", str(seed_dir), "--seed", str(args.seed)]
         + (["--size", "train=2000", "--size", "infer=400", "--size", "drift_train=4",
             "--size", "drift_infer=4"] if args.quick else []), logfile)  # fmt: skip
    _run([PY, "-m", "sensor_sim", "dataset", "--realism", "plant", "--out", str(plant_dir),
          "--seed", str(args.seed), "--machines", str(MACHINES), "--hours", str(hours),
          "--test-hours", str(test_hours), "--period-s", str(PERIOD_S)], logfile)  # fmt: skip
    log.info("data sets in %s (%.0f s)", work, time.monotonic() - t0)
    seed_model = train(seed_dir, work / "seed_model", epochs, logfile)
    plant_model = train(plant_dir, work / "plant_model", epochs, logfile)
    plant_stream = load_plant_split(plant_dir, "infer")
    rows = [
        measure("seed", seed_model, seed_stream(test_hours, args.seed + 1)),
        measure("plant", plant_model, plant_stream),
        measure("seed model on the plant", seed_model, plant_stream),
    ]
    total = time.monotonic() - t0
    print_table(rows)
    print(f"\n{total:.0f} s in all ({'--quick, ' if args.quick else ''}history {hours:g} h, "
          f"stream {test_hours:g} h × {MACHINES} machines, a window per {PERIOD_S:g} s, "
          f"{epochs} epochs); work dir {work}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
