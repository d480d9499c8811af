"""Trainer store (durable, deduplicated) and the champion/challenger gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jetson_trainer.gate import GateConfig, Scores, decide
from jetson_trainer.store import WindowStore
from protocol import Window
from protocol.drift_batch import DriftBatch, Kept


def make_batch(seqs: range, labeled: bool = True, batch_id: bytes = bytes(16)) -> DriftBatch:
    records = tuple(
        Kept(
            Window(
                f"m{s % 2:02d}",
                s,
                s,
                np.full((60, 4), s, np.float32),
                label=s % 4 if labeled else None,
            ),
            "labeled" if labeled else "out_of_distribution",
            0,
            1.0,
        )
        for s in seqs
    )
    return DriftBatch(batch_id, "pi-1", 1, records)


def test_resent_batch_is_stored_once(tmp_path: Path) -> None:
    store = WindowStore(tmp_path / "s.sqlite")
    assert store.add_batch(make_batch(range(10))) == (10, 0)
    assert store.add_batch(make_batch(range(5, 15))) == (5, 5)
    assert store.counts().windows == 15


def test_store_survives_reopen_and_returns_newest_labels_in_order(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = WindowStore(path)
    store.add_batch(make_batch(range(8)))
    store.add_batch(make_batch(range(100, 104), labeled=False))
    store.close()
    store = WindowStore(path)
    x, y, last = store.recent_labeled(limit=3)
    assert x.shape == (3, 60, 4) and y.tolist() == [5 % 4, 6 % 4, 7 % 4]
    assert x[:, 0, 0].tolist() == [5.0, 6.0, 7.0]
    assert store.labeled_after(last) == 0
    counts = store.counts()
    assert (counts.windows, counts.labeled) == (12, 8)
    assert counts.by_reason == {"labeled": 8, "out_of_distribution": 4}


def test_model_history_keeps_rejected_and_accepted_attempts(tmp_path: Path) -> None:
    store = WindowStore(tmp_path / "s.sqlite")
    store.record_model(
        2, 1, accepted=False, reason="forgot", labels_used=48, scores=(0.7, 0.9, 1.0, 0.9)
    )
    store.record_model(
        2, 1, accepted=True, reason="better", labels_used=48, scores=(0.7, 0.99, 1.0, 1.0)
    )
    history = store.model_history()
    assert [(h["version"], h["accepted"]) for h in history] == [(2, 1), (2, 0)]


@pytest.mark.parametrize(
    ("champion", "challenger", "accepted", "words"),
    [
        (Scores(0.74, 1.0), Scores(0.99, 0.995), True, "beats"),
        (Scores(0.74, 1.0), Scores(0.99, 0.985), False, "loses 1.5 points"),
        (Scores(0.90, 1.0), Scores(0.90, 1.0), False, "does not beat"),
        (Scores(0.90, 1.0), Scores(0.85, 1.0), False, "does not beat"),
        (Scores(0.74, 0.99), Scores(0.99, 0.98), True, "beats"),
    ],
)
def test_gate_accepts_only_better_challengers_that_do_not_forget(
    champion: Scores, challenger: Scores, accepted: bool, words: str
) -> None:
    decision = decide(champion, challenger, GateConfig(margin=0.01))
    assert decision.accepted is accepted
    assert words in decision.reason
