"""Seed 000's offline data sets: train, infer, drift_train and drift_infer, as .npy files.

Each split is balanced (equal windows per class; when `n` is not a multiple of the class
count the first classes get one window more), shuffled, and drawn from the split's regime:

    split         default n   regime (see physics.py)
    train         5000        standard
    infer         1000        infer ("small deviations")
    drift_train   2000        drift
    drift_infer    800        drift

Every split has its own random stream spawned from the seed, so a split's content depends
only on (seed, split name, n) — never on the other splits' sizes. With `sim_type` fan
(sensor_sim/fan.py) the splits are a fan's: "standard" and "infer" its normal belt, "drift" the
swapped belt; classes.json then carries the fan's machine type (the trainer reads it).

>>> import numpy as np
>>> x, y = make_split("drift_infer", 8, np.random.default_rng(0))
>>> x.shape, x.dtype, y.dtype, sorted(np.bincount(y).tolist())
((8, 60, 4), dtype('float32'), dtype('int64'), [2, 2, 2, 2])
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt

from protocol import CHANNELS, CLASSES, UNITS, WINDOW_LENGTH

from .errors import SimError
from .kinds import SEED, SIM_TYPES, SimType
from .physics import generate

log = logging.getLogger(__name__)

SPLITS: Mapping[str, str] = {
    "train": "standard",
    "infer": "infer",
    "drift_train": "drift",
    "drift_infer": "drift",
}
DEFAULT_SIZES: Mapping[str, int] = {
    "train": 5000,
    "infer": 1000,
    "drift_train": 2000,
    "drift_infer": 800,
}


def balanced_labels(
    n: int, rng: np.random.Generator, n_classes: int = len(CLASSES)
) -> npt.NDArray[np.int64]:
    """`n` shuffled class labels, as equal per class as `n` allows.

    >>> sorted(balanced_labels(6, np.random.default_rng(0)).tolist())
    [0, 0, 1, 1, 2, 3]
    """
    if n < 0:
        raise SimError(f"split size {n} must be ≥ 0")
    labels = np.arange(n, dtype=np.int64) % n_classes
    return rng.permutation(labels)


def make_split(
    name: str, n: int, rng: np.random.Generator, sim_type: SimType = SEED
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """(data (n, T, C) float32, labels (n,) int64) of split `name`, balanced and shuffled."""
    if name not in SPLITS:
        raise SimError(f"split {name!r} is not one of {tuple(SPLITS)}")
    kind = sim_type.kind
    labels = balanced_labels(n, rng, len(kind.classes))
    if sim_type is SEED:
        return generate(labels, rng, regime=SPLITS[name], window_length=WINDOW_LENGTH), labels
    blend = 1.0 if SPLITS[name] == "drift" else 0.0
    x = sim_type.generate(labels, rng, blend=blend, window_length=kind.window_length)
    return x, labels


def write_datasets(
    out: Path, seed: int, sizes: Mapping[str, int] | None = None, sim_type: str = "default"
) -> dict[str, tuple[int, ...]]:
    """Write the eight `<split>_data.npy` / `<split>_labels.npy` files and classes.json.

    `sizes` overrides the default size of some splits (e.g. {"train": 40} in tests). Returns
    the data shape written per split.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     write_datasets(Path(d), seed=1, sizes={"train": 8, "infer": 4, "drift_train": 4,
    ...                                            "drift_infer": 4})["train"]
    (8, 60, 4)
    """
    if sim_type not in SIM_TYPES:
        raise SimError(f"machine type {sim_type!r} is not one of {tuple(SIM_TYPES)}")
    kind = SIM_TYPES[sim_type]
    unknown = set(sizes or {}) - set(SPLITS)
    if unknown:
        raise SimError(f"unknown split(s) {sorted(unknown)}; splits are {tuple(SPLITS)}")
    merged = {**DEFAULT_SIZES, **(sizes or {})}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    streams = np.random.SeedSequence(seed).spawn(len(SPLITS))
    shapes: dict[str, tuple[int, ...]] = {}
    for (name, regime), stream in zip(SPLITS.items(), streams, strict=True):
        data, labels = make_split(name, int(merged[name]), np.random.default_rng(stream), kind)
        np.save(out / f"{name}_data.npy", data)
        np.save(out / f"{name}_labels.npy", labels)
        shapes[name] = tuple(int(d) for d in data.shape)
        log.info("wrote %s: %s windows (%s regime) to %s", name, len(labels), regime, out)
    meta = {
        "classes": list(CLASSES),
        "channels": list(CHANNELS),
        "units": [UNITS[c] for c in CHANNELS],
        "window_length": WINDOW_LENGTH,
        "seed": seed,
        "sizes": {name: shapes[name][0] for name in SPLITS},
        "regimes": dict(SPLITS),
    }
    if kind is not SEED:  # the trainer reads the type from here (the seed's: the built-in one)
        meta.update(
            classes=list(kind.kind.classes),
            channels=list(kind.kind.channel_names),
            units=[c.unit for c in kind.kind.channels],
            window_length=kind.kind.window_length,
            machine_type=kind.kind.to_dict(),
        )
    (out / "classes.json").write_text(json.dumps(meta, indent=2) + "\n")
    return shapes
