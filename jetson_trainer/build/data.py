"""Data sets on disk, the normalisation statistics and the training statistics the Pi's drift
detector uses (the model input itself is `protocol.model_input`'s, shared with the Pi).

A data directory holds `<split>_data.npy` (N, T, C) float and `<split>_labels.npy` (N,) int, the
seed 000 layout (`train`, `infer`, `drift_train`, `drift_infer`).

>>> x = np.zeros((2, 3, 2), np.float32); x[1] += 2.0
>>> norm = normalisation(x)
>>> norm["mean"], norm["std"]
([1.0, 1.0], [1.0, 1.0])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from protocol import CHANNELS, CLASSES
from protocol.features import feature_stats

from ..errors import TrainerError

__all__ = [
    "EVAL_SPLITS",
    "QUANTILES",
    "check_xy",
    "load_split",
    "load_xy",
    "normalisation",
    "stratified_split",
    "train_stats",
]

EVAL_SPLITS = ("infer", "drift_infer")
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
_MIN_STD = 1e-6


def check_xy(x: np.ndarray, y: np.ndarray, what: str = "data") -> tuple[np.ndarray, np.ndarray]:
    """Return (x float32 (N, T, C), y int64 (N,)) or raise TrainerError saying what is wrong."""
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim != 3:
        raise TrainerError(f"{what}: windows have shape {x.shape}, expected (N, T, C)")
    if y.ndim != 1 or len(y) != len(x):
        raise TrainerError(f"{what}: labels have shape {y.shape}, expected ({len(x)},)")
    if len(x) == 0:
        raise TrainerError(f"{what}: no windows")
    if not np.issubdtype(y.dtype, np.integer):
        raise TrainerError(f"{what}: labels are {y.dtype}, expected integers 0..{len(CLASSES) - 1}")
    if y.min() < 0 or y.max() >= len(CLASSES):
        raise TrainerError(
            f"{what}: labels span {y.min()}..{y.max()}, expected 0..{len(CLASSES) - 1} {CLASSES}"
        )
    if not np.isfinite(x).all():
        raise TrainerError(f"{what}: windows contain NaN or inf")
    return x.astype(np.float32, copy=False), y.astype(np.int64, copy=False)


def load_xy(x_path: Path, y_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Load one (windows, labels) pair of .npy files (no pickles)."""
    try:
        x = np.load(x_path, allow_pickle=False)
        y = np.load(y_path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise TrainerError(f"cannot load {x_path} / {y_path}: {exc}") from exc
    return check_xy(x, y, what=str(x_path))


def load_split(data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray] | None:
    """`DIR/<split>_data.npy` + `_labels.npy`, or None if that split is absent."""
    x_path = Path(data_dir) / f"{split}_data.npy"
    y_path = Path(data_dir) / f"{split}_labels.npy"
    if not x_path.exists() or not y_path.exists():
        return None
    return load_xy(x_path, y_path)


def normalisation(x: np.ndarray) -> dict[str, list[float]]:
    """Per-channel mean and std over all samples of `x` (N, T, C), as the manifest stores them."""
    flat = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
    std = np.maximum(flat.std(axis=0), _MIN_STD)
    return {"mean": [float(v) for v in flat.mean(axis=0)], "std": [float(v) for v in std]}


def train_stats(
    x: np.ndarray, y: np.ndarray | None = None, channels: tuple[str, ...] = CHANNELS
) -> dict[str, Any]:
    """Per-channel statistics of raw training windows for the Pi's input-drift detector.

    For each channel: mean, std and quantiles (q01 … q99) of raw samples; mean and std of
    per-window means (`window_mean_mean`, `window_mean_std`) and of per-window stds
    (`window_std_mean`, `window_std_std`); plus `n_windows`. With labels `y`, also
    `features`: per-class window-feature statistics (protocol.features.feature_stats).
    """
    x = np.asarray(x, np.float64)
    if x.shape[-1] != len(channels):
        raise TrainerError(f"data has {x.shape[-1]} channels, the manifest names {len(channels)}")
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
        out["features"] = feature_stats(x, np.asarray(y), CLASSES)
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
