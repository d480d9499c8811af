"""Seed 000's offline data sets: files, shapes, balance, dtypes, statistics, determinism.

Statistics are checked against SEEDS.md's numbers (copied here, not imported). For bearing
vibration the seed adds ``sin(linspace(0, kπ, 60))·a`` (k ~ U(k_lo, k_hi), a ~ U(a_lo, a_hi))
to N(μ, σ): the expected pooled mean is μ + E[a]·E[s] and the pooled variance
σ² + E[a²]·E[s²] − (E[a]·E[s])², where s runs over the 60 samples and k (evaluated by
quadrature in `sensor_sim.sine_moments`, and re-derived by brute force below). For wear
vibration the extra N(0, w) noise makes the std √(σ² + w²).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from protocol import CHANNELS, CLASSES
from sensor_sim import sine_moments, write_datasets
from sensor_sim.__main__ import main

STANDARD = {  # class: ((mean, std) per channel in CHANNELS order)
    "normal": ((50, 5), (0.3, 0.1), (11, 0.5), (125, 10)),
    "bearing_fault": ((65, 8), (1.0, 0.3), (11, 0.5), (140, 12)),
    "drive_wear": ((55, 6), (0.5, 0.15), (11, 0.5), (150, 15)),
    "pump_fault": ((55, 10), (0.35, 0.15), (7, 1), (110, 20)),
}
INFER_MEANS = {
    ("normal", 0): 52,
    ("normal", 1): 0.32,
    ("drive_wear", 0): 57,
    ("drive_wear", 1): 0.55,
    ("pump_fault", 2): 6.8,
}
DRIFT = {
    "normal": ((58, 5), (0.4, 0.1), (11.8, 0.4), (135, 8)),
    "bearing_fault": ((70, 7), (1.2, 0.25), (8.0, 1.0), (150, 18)),
    "drive_wear": ((75, 7), (0.9, 0.2), (10.5, 0.6), (170, 20)),
    "pump_fault": ((60, 12), (0.45, 0.25), (5.5, 0.8), (90, 28)),
}
SINE = {"standard": ((4, 9), (0.1, 0.25)), "drift": ((6, 11), (0.15, 0.35))}
WEAR_NOISE = {"standard": 0.07, "drift": 0.1}
SIZES = {"train": 5000, "infer": 1000, "drift_train": 2000, "drift_infer": 800}


def _infer_table():
    table = {c: [list(p) for p in v] for c, v in STANDARD.items()}
    for (cls, ch), mean in INFER_MEANS.items():
        table[cls][ch][0] = mean
    return table


def expected(cls: str, ch: int, regime: str) -> tuple[float, float]:
    table = {"standard": STANDARD, "infer": _infer_table(), "drift": DRIFT}[regime]
    mean, std = table[cls][ch]
    vib = CHANNELS.index("vibration")
    kind = "drift" if regime == "drift" else "standard"
    if ch == vib and cls == "bearing_fault":
        m, v = sine_moments(*SINE[kind])
        return mean + m, math.sqrt(std**2 + v)
    if ch == vib and cls == "drive_wear":
        return mean, math.sqrt(std**2 + WEAR_NOISE[kind] ** 2)
    return mean, std


@pytest.fixture(scope="module")
def seed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("seed42")
    assert main(["dataset", "--out", str(out), "--seed", "42"]) == 0
    return out


def test_dataset_writes_the_eight_seed_files_with_shapes_and_dtypes(seed_dir: Path):
    for name, n in SIZES.items():
        data = np.load(seed_dir / f"{name}_data.npy")
        labels = np.load(seed_dir / f"{name}_labels.npy")
        assert data.shape == (n, 60, 4) and data.dtype == np.float32
        assert labels.shape == (n,) and labels.dtype == np.int64
        assert np.bincount(labels, minlength=4).tolist() == [n // 4] * 4
        assert np.isfinite(data).all()
        assert len(set(labels[:20].tolist())) > 1  # shuffled, not sorted blocks
    meta = json.loads((seed_dir / "classes.json").read_text())
    assert meta["classes"] == list(CLASSES) and meta["channels"] == list(CHANNELS)


@pytest.mark.parametrize(
    "split, regime",
    [("train", "standard"), ("infer", "infer"), ("drift_train", "drift"), ("drift_infer", "drift")],
)
def test_class_conditional_means_and_stds_within_2_percent_of_seed(seed_dir, split, regime):
    data = np.load(seed_dir / f"{split}_data.npy")
    labels = np.load(seed_dir / f"{split}_labels.npy")
    for c, cls in enumerate(CLASSES):
        rows = data[labels == c]
        for ch in range(len(CHANNELS)):
            mean, std = expected(cls, ch, regime)
            values = rows[..., ch].astype(np.float64)
            assert values.mean() == pytest.approx(mean, rel=0.02), (split, cls, CHANNELS[ch])
            assert values.std() == pytest.approx(std, rel=0.02), (split, cls, CHANNELS[ch])


def test_sine_moments_agree_with_brute_force_monte_carlo():
    rng = np.random.default_rng(0)
    k = rng.uniform(4, 9, 200_000)
    a = rng.uniform(0.1, 0.25, 200_000)
    s = np.sin(np.linspace(0, 1, 60)[None, :] * (k * np.pi)[:, None]) * a[:, None]
    m, v = sine_moments((4, 9), (0.1, 0.25))
    assert s.mean() == pytest.approx(m, abs=5e-4)
    assert s.var() == pytest.approx(v, rel=0.01)


def test_same_seed_writes_identical_files_and_another_seed_differs(tmp_path: Path):
    sizes = {"train": 40, "infer": 8, "drift_train": 8, "drift_infer": 8}
    a, b, c = (tmp_path / d for d in "abc")
    write_datasets(a, 42, sizes)
    write_datasets(b, 42, sizes)
    write_datasets(c, 43, sizes)
    for name in sizes:
        for part in ("data", "labels"):
            fa = np.load(a / f"{name}_{part}.npy")
            assert np.array_equal(fa, np.load(b / f"{name}_{part}.npy"))
        assert not np.array_equal(np.load(a / f"{name}_data.npy"), np.load(c / f"{name}_data.npy"))


def test_small_sizes_return_shapes_and_a_split_does_not_depend_on_other_sizes(tmp_path):
    shapes = write_datasets(
        tmp_path / "a", 1, {"train": 12, "infer": 4, "drift_train": 4, "drift_infer": 6}
    )
    assert shapes == {
        "train": (12, 60, 4),
        "infer": (4, 60, 4),
        "drift_train": (4, 60, 4),
        "drift_infer": (6, 60, 4),
    }
    write_datasets(tmp_path / "b", 1, {"train": 12, "infer": 8, "drift_train": 4, "drift_infer": 6})
    assert np.array_equal(
        np.load(tmp_path / "a" / "train_data.npy"), np.load(tmp_path / "b" / "train_data.npy")
    )


def test_unknown_split_name_is_refused(tmp_path: Path):
    from sensor_sim import SimError

    with pytest.raises(SimError, match="unknown split"):
        write_datasets(tmp_path, 1, {"validation": 4})
