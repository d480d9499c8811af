"""The real-product tests' fixtures: the products from the tools cache, a node as a process.

Every product comes from scripts/tools.py's cache (`make setup` installs it). A product that is
not installed fails the test with the command that installs it — never a skip; the one
exception is Home Assistant on a machine with no Python ≥ 3.13, which skips saying so.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from sensor_sim.physics import generate
from tests.faults._kit import Child

from ._products import need

__all__ = ["BEARING", "NORMAL", "Children", "need", "windows"]

NORMAL, BEARING = 0, 1  # classes (protocol.CLASSES) the test model knows with confidence > 0.99


def windows(label: int, n: int, regime: str = "standard", seed: int = 0) -> np.ndarray:
    """`n` simulated windows of class `label` ("drift": the drifted plant of sensor_sim)."""
    return generate(np.full(n, label, np.int64), np.random.default_rng(seed), regime)


class Children:
    """The processes of one test (pi_edge, the trainer): logs in its tmp dir, stopped at the end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.made: list[Child] = []

    def start(self, name: str, module: str, *args: str) -> Child:
        child = Child(name, [sys.executable, "-m", module, *args], self.tmp / f"{name}.log")
        self.made.append(child.start())
        return child

    def tails(self) -> str:
        return "\n".join(f"==== {c.name} ====\n{c.tail()}" for c in self.made)


@pytest.fixture
def children(tmp_path: Path) -> Iterator[Children]:
    made = Children(tmp_path)
    yield made
    for child in made.made:
        child.stop(timeout=10)
