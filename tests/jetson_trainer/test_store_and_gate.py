"""Trainer store (durable, deduplicated) and the champion/challenger gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jetson_trainer.daemon.store import WindowStore
from jetson_trainer.versions.gate import GateConfig, Scores, decide
from nodekit.errors import StorageError
from protocol import Window, encode_window
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
        # macro-F1 on the original holdout has its own margin (2 points by default)
        (Scores(0.6, 0.99, None, 0.797), Scores(0.9, 0.99, None, 0.783), True, "beats"),
        (Scores(0.6, 0.99, None, 0.797), Scores(0.9, 0.99, None, 0.770), False, "macro-F1"),
        (Scores(0.6, 0.99, None, 0.797), Scores(0.9, 0.975, None, 0.797), False, "1.5 points"),
    ],
)
def test_gate_accepts_only_better_challengers_that_do_not_forget(
    champion: Scores, challenger: Scores, accepted: bool, words: str
) -> None:
    decision = decide(champion, challenger, GateConfig(margin=0.01))
    assert decision.accepted is accepted
    assert words in decision.reason


# -- storage that heals (issue 11, finding 7) ---------------------------------------------------
def test_the_largest_wire_seq_round_trips_through_the_store_once(tmp_path: Path) -> None:
    window = Window("m01", 2**64 - 1, -(2**63), np.full((60, 4), 2.0, np.float32), label=2)
    batch = DriftBatch(bytes(16), "pi-1", 1, (Kept(window, "labeled", 2, 0.5),))
    store = WindowStore(tmp_path / "s.sqlite")
    assert store.add_batch(batch) == (1, 0)
    store.close()
    store = WindowStore(tmp_path / "s.sqlite")
    assert store.add_batch(batch) == (0, 1)  # the resend is a duplicate by window id
    x, y, _ = store.recent_labeled(5)
    assert y.tolist() == [2] and x[0, 0, 0] == 2.0


def test_a_nan_score_is_refused_and_counted_not_taken_for_a_duplicate(tmp_path: Path) -> None:
    store = WindowStore(tmp_path / "s.sqlite")
    good = make_batch(range(3)).records
    nan = Kept(make_batch(range(3, 4)).records[0].window, "labeled", 0, float("nan"))
    assert store.add_batch(DriftBatch(bytes(16), "pi-1", 1, (*good, nan))) == (3, 0)
    counts = store.counts()
    assert (counts.windows, counts.rejected) == (3, 1)


def test_a_write_failing_mid_transaction_leaves_nothing_open_and_the_next_write_works(
    tmp_path: Path,
) -> None:
    store = WindowStore(tmp_path / "s.sqlite")
    db = store._file.db
    db.execute(
        "CREATE TRIGGER full BEFORE INSERT ON windows WHEN NEW.id = 'm01:5:5' "
        "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
    )
    with pytest.raises(StorageError, match="disk is full"):
        store.add_batch(make_batch(range(10)))
    assert not store._file.db.in_transaction
    assert store.counts().windows == 0
    db.execute("DROP TRIGGER full")
    assert store.add_batch(make_batch(range(10))) == (10, 0)


def test_bad_stored_rows_are_skipped_when_training_data_is_read(tmp_path: Path) -> None:
    store = WindowStore(tmp_path / "s.sqlite")
    store.add_batch(make_batch(range(6)))
    db = store._file.db
    db.execute("UPDATE windows SET frame = x'0102' WHERE id = 'm01:1:1'")  # does not decode
    db.execute("UPDATE windows SET label = 3 WHERE id = 'm00:2:2'")  # disagrees with its frame
    odd = Window("m01", 3, 3, np.zeros((30, 4), np.float32), label=3)
    db.execute(
        "UPDATE windows SET frame = ? WHERE id = 'm01:3:3'", (encode_window(odd),)
    )  # another shape
    x, y, last = store.recent_labeled(10)
    assert x.shape == (3, 60, 4) and y.tolist() == [0, 0, 1]  # seqs 0, 4, 5
    assert last == 6
    store.recent_labeled(10)  # read again: the same bad rows are not counted twice
    assert store.counts().bad_rows == 3


def test_a_corrupt_store_is_moved_aside_kept_and_reported(
    tmp_path: Path, keypair: tuple[Path, Path]
) -> None:
    from jetson_trainer.daemon.serve import ServeConfig, TrainerDaemon

    path = tmp_path / "trainer" / "windows.sqlite"
    path.parent.mkdir()
    damaged = b"SQLite format 3\x00" + bytes(8000)
    path.write_bytes(damaged)
    daemon = TrainerDaemon(
        ServeConfig(broker="127.0.0.1:1", store=path.parent, private_key=keypair[0])
    )
    try:
        (moved,) = daemon.store.moved_aside
        assert moved.path.read_bytes() == damaged  # training data is never deleted
        assert daemon.store.add_batch(make_batch(range(4))) == (4, 0)
        status = daemon.status()
    finally:
        daemon.store.close()
    assert status.errors["store_moved_aside"] == 1
    assert status.detail["store_moved_aside"] == [str(moved.path)]


def test_recent_windows_of_the_drifting_machines_only(tmp_path: Path) -> None:
    """One machine of three drifts: the new detector reference is the windows of the machines a
    Pi flagged, not the fleet's labeled ones (plant-step: the others' labels outnumber its
    windows 15 to 1)."""
    store = WindowStore(tmp_path / "s.sqlite")

    def kept(machine: str, seq: int, reason: str, value: float) -> Kept:
        label = 0 if reason == "labeled" else None
        w = Window(machine, seq, seq, np.full((60, 4), value, np.float32), label=label)
        return Kept(w, reason, 0, 0.5)

    before = [kept("m01", 1, "drift", 9.0)]  # a drift window before the trigger
    after = [
        kept("m01", 2, "labeled", 1.0),
        kept("m02", 3, "labeled", 2.0),
        kept("m03", 4, "drift", 3.0),
        kept("m03", 5, "labeled", 3.0),
        kept("m02", 6, "out_of_distribution", 2.0),
        kept("m05", 7, "low_confidence", 5.0),  # merely unsure: not drifting
        kept("m05", 8, "labeled", 5.0),
    ]
    store.add_batch(DriftBatch(bytes(16), "pi-1", 1, tuple(before)))
    store.add_batch(DriftBatch(bytes(15) + b"\x01", "pi-1", 2, tuple(after)))
    x, y = store.recent_windows(10, after=1, drifting=True)
    # m03's (for drift) and m02's (out of distribution), oldest first; not m01's or m05's
    assert x[:, 0, 0].tolist() == [2.0, 3.0, 3.0, 2.0] and y.tolist() == [0, -1, 0, -1]
    x, _ = store.recent_windows(10, after=1)
    assert x[:, 0, 0].tolist() == [1.0, 2.0, 3.0, 3.0, 2.0, 5.0, 5.0]
    x, _ = store.recent_windows(10, after=0, drifting=True)  # m01 drifted before: all three
    assert sorted(x[:, 0, 0].tolist()) == [1.0, 2.0, 2.0, 3.0, 3.0, 9.0]
    # nothing shipped for drift after the position: every machine's windows
    store.add_batch(
        DriftBatch(bytes(14) + b"\x01\x01", "pi-1", 3, (kept("m04", 9, "labeled", 4.0),))
    )
    x, _ = store.recent_windows(10, after=8, drifting=True)
    assert x[:, 0, 0].tolist() == [4.0]
