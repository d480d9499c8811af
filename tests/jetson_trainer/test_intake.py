"""The daemon's intake keeps a drift batch it could not store and retries until it is stored."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest

from jetson_trainer.serve import ServeConfig, TrainerDaemon
from protocol import Window
from protocol.drift_batch import DriftBatch, Kept, encode_batch


def _payload(n: int = 3) -> bytes:
    rng = np.random.default_rng(0)
    records = tuple(
        Kept(
            Window(
                "m01",
                i,
                1_700_000_000_000_000_000 + i,
                rng.normal(size=(60, 4)).astype(np.float32),
                1,
            ),
            "labeled",
        )
        for i in range(n)
    )
    return encode_batch(DriftBatch(bytes(range(16)), "pi-1", 1, records))


def _daemon(tmp_path: Path, keypair: tuple[Path, Path]) -> TrainerDaemon:
    # never started: no broker, no training; only the intake's storing is exercised
    return TrainerDaemon(
        ServeConfig(broker="127.0.0.1:1", store=tmp_path / "trainer", private_key=keypair[0])
    )


def test_a_batch_the_store_cannot_commit_is_retried_until_stored(
    tmp_path: Path, keypair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = _daemon(tmp_path, keypair)
    real_add = daemon.store.add_batch
    failures = iter([True, True])

    def flaky(batch: DriftBatch) -> tuple[int, int]:
        if next(failures, False):
            raise sqlite3.OperationalError("database or disk is full")
        return real_add(batch)

    monkeypatch.setattr(daemon.store, "add_batch", flaky)
    try:
        assert daemon.intake.store_with_retry(_payload(3), first_delay_s=0.01) is True
        assert daemon.state.store_errors == 2
        assert daemon.state.batches == 1
        assert daemon.store.counts().windows == 3
    finally:
        daemon.store.close()


def test_stopping_ends_the_retries_without_storing(
    tmp_path: Path, keypair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = _daemon(tmp_path, keypair)

    def full(batch: DriftBatch) -> tuple[int, int]:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(daemon.store, "add_batch", full)
    threading.Timer(0.3, daemon._stop.set).start()
    try:
        assert daemon.intake.store_with_retry(_payload(), first_delay_s=0.05) is False
        assert daemon.state.store_errors >= 2
        assert daemon.state.batches == 0
    finally:
        daemon.store.close()
