"""BasicMotions (UEA multivariate archive), as a plant would hand it to edgeloop.

Real recorded data: four people wearing a smart watch (3-axis accelerometer, 3-axis gyroscope,
10 Hz, 10 s per case) while Standing, Walking, Running or playing Badminton; 40 train and 40
test cases of 100 × 6 samples, 10 per class each. It ships inside the aeon 1.6.0 wheel, which
`make tools` downloads once (scripts/tools.py, "real-data"); it is read out of the zip here,
aeon itself is never installed. No download at test time.

Published baselines (Bagnall et al., "The UEA multivariate time series classification archive,
2018", arXiv:1811.00075, Table 3, test accuracy on the default split): 1-NN ED 0.676, 1-NN DTW_I
1.000, 1-NN DTW_D 0.975. The tests also compute 1-NN ED and DTW_D here on the same split, so the
comparison does not rest on a transcribed figure alone.

`historian_files` lays the cases out as a plant historian export would be: one long CSV
(timestamp, machine, channel, value) of the wearers' timelines with the data set's own channel
names, and a maintenance log (machine, from, to, class) with its own class names — what
`jetson_trainer import` reads.
"""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np

from protocol.machine_type import Channel, MachineType

from .ts import read_ts

MEMBER = "aeon/datasets/data/BasicMotions/BasicMotions_{split}.ts"
HZ = 10.0
CHANNELS = ("accel_x", "accel_y", "accel_z", "gyro_x", "gyro_y", "gyro_z")
PUBLISHED = {"1-NN ED": 0.676, "1-NN DTW_I": 1.000, "1-NN DTW_D": 0.975}


def load(wheel: Path) -> dict[str, tuple[np.ndarray, list[str]]]:
    """{"TRAIN"/"TEST": (x (40, 100, 6), labels)} out of the aeon wheel."""
    out = {}
    with zipfile.ZipFile(wheel) as z:
        for split in ("TRAIN", "TEST"):
            x, y, _ = read_ts(z.read(MEMBER.format(split=split)).decode())
            out[split] = (x, y)
    return out


def machine_type(classes: tuple[str, ...] = ("Standing", "Walking", "Running", "Badminton")):
    """The data set as a site's machine type: its own channel and class names, at rest normal."""
    return MachineType(
        name="wrist",
        channels=tuple(
            Channel(c, "m/s²" if c.startswith("accel") else "rad/s", HZ) for c in CHANNELS
        ),
        sample_hz=HZ,
        window_length=100,
        hop=100,
        classes=classes,
        normal="Standing",
        machines=("wearer-*",),
    )


SITE_TOML = """
[[types]]
name = "wrist"
channels = [
  {name = "accel_x", unit = "m/s²", sample_hz = 10.0},
  {name = "accel_y", unit = "m/s²", sample_hz = 10.0},
  {name = "accel_z", unit = "m/s²", sample_hz = 10.0},
  {name = "gyro_x", unit = "rad/s", sample_hz = 10.0},
  {name = "gyro_y", unit = "rad/s", sample_hz = 10.0},
  {name = "gyro_z", unit = "rad/s", sample_hz = 10.0},
]
sample_hz = 10.0
window_length = 100
hop = 100
classes = ["Standing", "Walking", "Running", "Badminton"]
normal = "Standing"
machines = ["wearer-*"]
"""

HISTORIAN_NAMES = ("AccX", "AccY", "AccZ", "GyrX", "GyrY", "GyrZ")  # the export's tag names


def historian_files(
    data: dict[str, tuple[np.ndarray, list[str]]], out: Path, t0: float = 1_767_225_600.0
) -> tuple[Path, Path]:
    """(signals CSV, maintenance log) of one wearer: the 40 train cases, then the 40 test cases, 10
    s each, a minute of silence (a gap, longer than --max-gap) between cases. `import --holdout
    0.5` then holds out exactly the test cases (the last half in time)."""
    signals, log = out / "watch_export.csv", out / "activity_log.csv"
    with signals.open("w", newline="") as fs, log.open("w", newline="") as fl:
        ws, wl = csv.writer(fs), csv.writer(fl)
        ws.writerow(["timestamp", "machine", "channel", "value"])
        wl.writerow(["machine", "from", "to", "class"])
        start = t0
        for split in ("TRAIN", "TEST"):
            x, y = data[split]
            for case, label in zip(x, y, strict=True):
                for k, sample in enumerate(case):
                    t = start + k / HZ
                    for tag, value in zip(HISTORIAN_NAMES, sample, strict=True):
                        ws.writerow([f"{t:.1f}", "wearer-1", tag, f"{float(value):.6f}"])
                wl.writerow(["wearer-1", f"{start:.1f}", f"{start + 100 / HZ:.1f}", label])
                start += 100 / HZ + 60.0
    return signals, log


def channel_map() -> str:
    return ",".join(f"{t}={c}" for t, c in zip(HISTORIAN_NAMES, CHANNELS, strict=True))


def one_nn(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], dtw: bool):
    """Accuracy of 1-NN with Euclidean or full-window dependent DTW (squared multivariate
    point distances), on raw series as in the archive paper."""
    (xa, ya), (xb, yb) = train, test
    if not dtw:
        d = ((xb[:, None] - xa[None]) ** 2).sum(axis=(2, 3))
    else:
        pairs = ((xb[:, None, :, None, :] - xa[None, :, None, :, :]) ** 2).sum(-1)  # (B,A,T,T)
        t = pairs.shape[-1]
        cost = np.full((*pairs.shape[:2], t + 1, t + 1), np.inf)
        cost[..., 0, 0] = 0.0
        for i in range(1, t + 1):
            for j in range(1, t + 1):
                best = np.minimum(
                    np.minimum(cost[..., i - 1, j], cost[..., i, j - 1]), cost[..., i - 1, j - 1]
                )
                cost[..., i, j] = pairs[..., i - 1, j - 1] + best
        d = cost[..., t, t]
    return float((ya[d.argmin(axis=1)] == yb).mean())
