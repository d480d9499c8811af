"""Data sets on disk, the normalisation statistics and the training statistics the Pi's drift
detector uses (the model input itself is `protocol.model_input`'s, shared with the Pi).

A data directory holds `<split>_data.npy` (N, T, C) float and `<split>_labels.npy` (N,) int, the
seed 000 layout (`train`, `infer`, `drift_train`, `drift_infer`), and may hold `classes.json`
naming its machine type (`machine_type_of`): labels index that type's classes.

>>> x = np.zeros((2, 3, 2), np.float32); x[1] += 2.0
>>> norm = normalisation(x)
>>> norm["mean"], norm["std"]
([1.0, 1.0], [1.0, 1.0])
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from protocol import ConfigError
from protocol.features import feature_stats
from protocol.machine_type import DEFAULT_TYPE, MAX_CLASSES, MachineType, Site

from ..errors import TrainerError

__all__ = [
    "EVAL_SPLITS",
    "QUANTILES",
    "check_xy",
    "load_split",
    "load_xy",
    "machine_type_of",
    "normalisation",
    "stratified_split",
    "train_stats",
]

EVAL_SPLITS = ("infer", "drift_infer")
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
_MIN_STD = 1e-6
CLASSES_FILE = "classes.json"  # beside the .npy files: the data set's machine type
_MAX_CLASSES_FILE = 1 << 20


def machine_type_of(
    data_dir: Path | None, site_file: Path | None = None, type_name: str | None = None
) -> MachineType:
    """The machine type a data set's labels and channels are in.

    `type_name` of the site file (or of the default site) when given; else the `machine_type`
    object of the data directory's classes.json (MachineType's JSON form, as
    protocol/README.md "Machine types" gives it); else the built-in type, when classes.json is
    absent or names the built-in classes and channels. A data set in other words than the
    built-in ones and no declared type is refused, saying how to declare it.
    """
    if type_name is not None or site_file is not None:
        site = Site.load(site_file)
        if type_name is None:
            if len(site.types) != 1:
                raise ConfigError(
                    f"the site file {site_file} declares {len(site.types)} machine types "
                    f"({', '.join(site.names)}): say which with --machine-type NAME"
                )
            return site.types[0]
        return site[type_name]
    if data_dir is None:
        return DEFAULT_TYPE
    path = Path(data_dir) / CLASSES_FILE
    try:
        with path.open("rb") as f:
            raw = f.read(_MAX_CLASSES_FILE + 1)
    except FileNotFoundError:
        return DEFAULT_TYPE
    except OSError as exc:
        raise TrainerError(f"cannot read {path}: {exc}") from exc
    if len(raw) > _MAX_CLASSES_FILE:
        raise TrainerError(f"{path} is larger than {_MAX_CLASSES_FILE} bytes")
    try:
        meta = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise TrainerError(f"{path} is not JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise TrainerError(f"{path} must hold a JSON object")
    if "machine_type" in meta:
        return MachineType.from_dict(meta["machine_type"], f"{path}: machine_type")
    classes, channels = meta.get("classes"), meta.get("channels")
    builtin = (classes is None or tuple(classes) == DEFAULT_TYPE.classes) and (
        channels is None or tuple(channels) == DEFAULT_TYPE.channel_names
    )
    if builtin:
        return DEFAULT_TYPE
    raise ConfigError(
        f"{path} names classes {str(classes)[:200]} and channels {str(channels)[:200]}, not the "
        "built-in machine type's; declare the data set's machine type: a \"machine_type\" "
        "object in classes.json, or --site FILE --machine-type NAME"
    )


def check_xy(
    x: np.ndarray, y: np.ndarray, what: str = "data", kind: MachineType | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Return (x float32 (N, T, C), y int64 (N,)) or raise TrainerError saying what is wrong.

    With `kind`, the windows must have its shape and the labels index its classes; without,
    any shape and labels within the largest class list a type may have.
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim != 3:
        raise TrainerError(f"{what}: windows have shape {x.shape}, expected (N, T, C)")
    if y.ndim != 1 or len(y) != len(x):
        raise TrainerError(f"{what}: labels have shape {y.shape}, expected ({len(x)},)")
    if len(x) == 0:
        raise TrainerError(f"{what}: no windows")
    n = len(kind.classes) if kind is not None else MAX_CLASSES
    if not np.issubdtype(y.dtype, np.integer):
        raise TrainerError(f"{what}: labels are {y.dtype}, expected integers 0..{n - 1}")
    if y.min() < 0 or y.max() >= n:
        names = f" (machine type {kind.name}: {', '.join(kind.classes)})" if kind else ""
        raise TrainerError(f"{what}: labels span {y.min()}..{y.max()}, expected 0..{n - 1}{names}")
    if kind is not None and tuple(x.shape[1:]) != kind.input_shape:
        raise TrainerError(
            f"{what}: windows are {x.shape[1]} samples × {x.shape[2]} channels; machine type "
            f"{kind.name} has {kind.window_length} × {len(kind.channels)} "
            f"({', '.join(kind.channel_names)})"
        )
    if not np.isfinite(x).all():
        raise TrainerError(f"{what}: windows contain NaN or inf")
    return x.astype(np.float32, copy=False), y.astype(np.int64, copy=False)


def load_xy(
    x_path: Path, y_path: Path, kind: MachineType | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Load one (windows, labels) pair of .npy files (no pickles), of machine type `kind`."""
    try:
        x = np.load(x_path, allow_pickle=False)
        y = np.load(y_path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise TrainerError(f"cannot load {x_path} / {y_path}: {exc}") from exc
    return check_xy(x, y, str(x_path), kind)


def load_split(
    data_dir: Path, split: str, kind: MachineType | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """`DIR/<split>_data.npy` + `_labels.npy` (of machine type `kind`), or None if absent."""
    x_path = Path(data_dir) / f"{split}_data.npy"
    y_path = Path(data_dir) / f"{split}_labels.npy"
    if not x_path.exists() or not y_path.exists():
        return None
    return load_xy(x_path, y_path, kind)


def normalisation(x: np.ndarray) -> dict[str, list[float]]:
    """Per-channel mean and std over all samples of `x` (N, T, C), as the manifest stores them."""
    flat = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
    std = np.maximum(flat.std(axis=0), _MIN_STD)
    return {"mean": [float(v) for v in flat.mean(axis=0)], "std": [float(v) for v in std]}


def train_stats(
    x: np.ndarray, y: np.ndarray | None = None, kind: MachineType = DEFAULT_TYPE
) -> dict[str, Any]:
    """Per-channel statistics of raw training windows for the Pi's input-drift detector.

    For each channel: mean, std and quantiles (q01 … q99) of raw samples; mean and std of
    per-window means (`window_mean_mean`, `window_mean_std`) and of per-window stds
    (`window_std_mean`, `window_std_std`); plus `n_windows`. With labels `y`, also
    `features`: per-class window-feature statistics (protocol.features.feature_stats).
    """
    x = np.asarray(x, np.float64)
    channels = kind.channel_names
    if x.shape[-1] != len(channels):
        raise TrainerError(
            f"data has {x.shape[-1]} channels, machine type {kind.name} has {len(channels)} "
            f"({', '.join(channels)})"
        )
    out: dict[str, Any] = {"n_windows": len(x)}
    w_mean = x.mean(axis=1)
    w_std = x.std(axis=1)
    for i, name in enumerate(channels):
        samples = x[:, :, i].ravel()
        qs = np.quantile(samples, QUANTILES)
        stats: dict[str, float] = {"mean": float(samples.mean()), "std": float(samples.std())}
        stats.update(
            {f"q{round(q * 100):02d}": float(v) for q, v in zip(QUANTILES, qs, strict=True)}
        )
        stats["window_mean_mean"] = float(w_mean[:, i].mean())
        stats["window_mean_std"] = float(w_mean[:, i].std())
        stats["window_std_mean"] = float(w_std[:, i].mean())
        stats["window_std_std"] = float(w_std[:, i].std())
        out[name] = stats
    if y is not None:
        out["features"] = feature_stats(x, np.asarray(y), kind.classes)
    return out


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out) with `fraction` of each class held out (at least one each)."""
    rng = np.random.default_rng(seed)
    keep: list[np.ndarray] = []
    held: list[np.ndarray] = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_held = max(1, round(len(idx) * fraction)) if len(idx) > 1 else 0
        held.append(idx[:n_held])
        keep.append(idx[n_held:])
    return (rng.permutation(np.concatenate(keep)), rng.permutation(np.concatenate(held)))
