"""Tiny seed-style data and one trained, signed bundle shared by the trainer tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from jetson_trainer.__main__ import main
from jetson_trainer.build.keys import generate_keypair
from sensor_sim.dataset import write_datasets

TINY_SIZES = {"train": 600, "infer": 200, "drift_train": 400, "drift_infer": 200}


@dataclass(frozen=True)
class Trained:
    data: Path
    out: Path
    bundle: Path
    private_key: Path
    public_key: Path


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("data")
    write_datasets(d, seed=0, sizes=TINY_SIZES)
    return d


@pytest.fixture(scope="session")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return generate_keypair(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session")
def trained(
    tiny_data: Path, keypair: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Trained:
    """`train` run once through the CLI: compact, 15 epochs, int8, signed."""
    out = tmp_path_factory.mktemp("v1")
    rc = main(
        [
            "train",
            "--data",
            str(tiny_data),
            "--out",
            str(out),
            "--epochs",
            "15",
            "--private-key",
            str(keypair[0]),
        ]
    )
    assert rc == 0
    return Trained(tiny_data, out, out / "model.bundle", *keypair)
