"""The realistic plant's offline data: a labeled history to train on and a later stream to score.

`python -m sensor_sim dataset --realism plant --out DIR` simulates one plant (16 machines, one
window per machine every 30 plant seconds) for `hours` + `test_hours` and writes:

    history_*.npy    every window of the first `hours`, with the arrays below
    train_data.npy   the windows of the history whose label had arrived by its end, and
    train_labels.npy their labels AS OBSERVED (scarce, late, 5 % wrong): what a trainer gets;
                     `python -m jetson_trainer train --data DIR` trains on exactly these
    infer_*.npy      every window of the following `test_hours` (the held-out stream)
    classes.json     classes, channels, the plant's parameters, machine ids, the split sizes

Per-window arrays of `history` and `infer` (N in time order, tick-major):

    _data (N, T, C) float32     _labels (N,) TRUE class (ground truth: score against it)
    _severity (N,) 0..1         _observed (N,) the plant's label, −1 none
    _label_delay_s (N,) NaN = none      _machine (N,) index into classes.json "machines"
    _time_s (N,) plant seconds  _drift (N,) blend towards the drift regime
    _artefacts (N,) bits: 1 spike, 2 dropout, 4 stuck

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     sizes = write_plant_datasets(Path(d), seed=1, machines=2, hours=0.5, test_hours=0.25)
...     names = sorted(p.name for p in Path(d).iterdir())
>>> sizes["history"], sizes["infer"]
(120, 60)
>>> [n for n in names if n.startswith("train_")]
['train_data.npy', 'train_labels.npy']
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path

import numpy as np

from protocol import CHANNELS, CLASSES, UNITS, WINDOW_LENGTH

from .errors import SimError
from .fleet import machine_ids
from .plant import PlantConfig, PlantStream, simulate

log = logging.getLogger(__name__)

__all__ = ["PLANT_ARRAYS", "load_plant_split", "write_plant_datasets"]

DEFAULT_MACHINES = 16
DEFAULT_HOURS = 24.0
DEFAULT_TEST_HOURS = 12.0
DEFAULT_PERIOD_S = 30.0
# file suffix → PlantStream field (labels: the TRUE class, like seed 000's files)
PLANT_ARRAYS = {
    "data": "data",
    "labels": "true",
    "severity": "severity",
    "observed": "observed",
    "label_delay_s": "label_delay_s",
    "machine": "machine",
    "time_s": "time_s",
    "drift": "drift",
    "artefacts": "artefacts",
}


def _take(stream: PlantStream, index: slice) -> PlantStream:
    arrays = {f: getattr(stream, f)[index] for f in PLANT_ARRAYS.values()}
    return PlantStream(stream.ids, **arrays)


def write_plant_datasets(
    out: Path,
    seed: int,
    *,
    machines: int = DEFAULT_MACHINES,
    hours: float = DEFAULT_HOURS,
    test_hours: float = DEFAULT_TEST_HOURS,
    period_s: float = DEFAULT_PERIOD_S,
    config: PlantConfig | None = None,
) -> dict[str, int]:
    """Write the history, its labeled `train` subset and the held-out `infer` stream.

    Returns the window count per split. One seeded stream: the split depends on (seed, every
    argument), and `infer` continues the history of the same machines.
    """
    config = config or PlantConfig()
    for name, value in (("hours", hours), ("test_hours", test_hours), ("period_s", period_s)):
        if not (math.isfinite(value) and value > 0):
            raise SimError(f"plant data set {name}={value!r} must be > 0")
    ids = machine_ids(machines)
    step = period_s * config.time_scale
    n_hist = round(hours * 3600 / step)
    n_test = round(test_hours * 3600 / step)
    stream = simulate(config, ids, n_hist + n_test, period_s, np.random.default_rng(seed))
    m = len(ids)
    history = _take(stream, slice(0, n_hist * m))
    infer = _take(stream, slice(n_hist * m, None))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for split, part in (("history", history), ("infer", infer)):
        for suffix, attr in PLANT_ARRAYS.items():
            np.save(out / f"{split}_{suffix}.npy", getattr(part, attr))
    end = float(history.time_s[-1]) if len(history) else 0.0
    arrived = (history.observed >= 0) & (history.time_s + history.label_delay_s <= end)
    np.save(out / "train_data.npy", history.data[arrived])
    np.save(out / "train_labels.npy", history.observed[arrived].astype(np.int64))
    sizes = {"history": len(history), "train": int(arrived.sum()), "infer": len(infer)}
    params = {k: v for k, v in dataclasses.asdict(config).items() if k != "gap_mean_s"}
    meta = {
        "realism": "plant",
        "classes": list(CLASSES),
        "channels": list(CHANNELS),
        "units": [UNITS[c] for c in CHANNELS],
        "window_length": WINDOW_LENGTH,
        "seed": seed,
        "machines": list(ids),
        "period_s": period_s,
        "hours": hours,
        "test_hours": test_hours,
        "sizes": sizes,
        "plant": params,
        "files": {
            "train": "labeled history windows, labels as observed (scarce, late, noisy)",
            "history": "every history window; _labels TRUE class; see sensor_sim/plant_dataset.py",
            "infer": "the held-out stream after the history; _labels TRUE class",
        },
    }
    (out / "classes.json").write_text(json.dumps(meta, indent=2) + "\n")
    true_fault = float((stream.true != 0).mean()) if len(stream) else 0.0
    log.info(
        "wrote a plant of %d machines: history %d windows (%d labeled → train), infer %d; "
        "%.1f %% of windows in a fault",
        m,
        sizes["history"],
        sizes["train"],
        sizes["infer"],
        100 * true_fault,
    )
    return sizes


def load_plant_split(data_dir: Path, split: str) -> PlantStream:
    """A `history` or `infer` split written by `write_plant_datasets`, as a PlantStream."""
    data_dir = Path(data_dir)
    meta_path = data_dir / "classes.json"
    try:
        meta = json.loads(meta_path.read_text())
        arrays = {
            attr: np.load(data_dir / f"{split}_{suffix}.npy", allow_pickle=False)
            for suffix, attr in PLANT_ARRAYS.items()
        }
    except (OSError, ValueError) as exc:
        raise SimError(
            f"cannot read plant split {split!r} in {data_dir}: {exc}; write it with "
            "`python -m sensor_sim dataset --realism plant --out DIR`",
            kind="io",
        ) from exc
    if meta.get("realism") != "plant":
        raise SimError(f"{meta_path} is not a plant data set (realism {meta.get('realism')!r})")
    return PlantStream(tuple(meta["machines"]), **arrays)
