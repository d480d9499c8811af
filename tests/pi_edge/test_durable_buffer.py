"""Durable buffer: survives a killed process, deletes only acknowledged rows, evicts by policy."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nodekit.errors import StorageError
from pi_edge.loop.buffer import DurableBuffer, recover
from protocol import Window
from protocol.drift_batch import Kept, window_id


def kept(i: int, labeled: bool = True, machine: str = "m01") -> Kept:
    data = np.full((60, 4), float(i), np.float32)
    window = Window(machine, i, 1_000 + i, data, label=i % 4 if labeled else None)
    return Kept(window, "labeled" if labeled else "low_confidence", i % 4, 0.5)


def test_rows_survive_kill_9_of_the_writer(tmp_path: Path) -> None:
    db = tmp_path / "buffer.sqlite"
    code = (
        "import sys, time\n"
        "from pi_edge.loop.buffer import DurableBuffer\n"
        "from tests.pi_edge.test_durable_buffer import kept\n"
        f"buf = DurableBuffer(__import__('pathlib').Path({str(db)!r}))\n"
        "for i in range(10_000):\n"
        "    buf.add([kept(i)])\n"
        "    print(i, flush=True)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.stdout is not None
    last = -1
    deadline = time.monotonic() + 60
    while last < 200 and time.monotonic() < deadline:
        last = int(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    buf = DurableBuffer(db)
    token, records = buf.take_batch(100_000)
    ids = {window_id(k.window) for k in records}
    # every add() that returned (and printed) before the kill is on disk
    assert {window_id(kept(i).window) for i in range(last + 1)} <= ids
    assert token and len(records) >= last + 1


def test_only_acknowledged_batches_are_deleted(tmp_path: Path) -> None:
    buf = DurableBuffer(tmp_path / "b.sqlite")
    buf.add([kept(i) for i in range(10)])
    t1, first = buf.take_batch(4)
    t2, second = buf.take_batch(4)
    assert len(first) == len(second) == 4
    assert {window_id(k.window) for k in first}.isdisjoint(window_id(k.window) for k in second)
    assert buf.acknowledge(t1) == 4
    buf.release(t2)
    counts = buf.counts()
    assert (counts.pending, counts.inflight, counts.acknowledged) == (6, 0, 4)


def test_unacknowledged_batch_returns_after_restart(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    buf = DurableBuffer(path)
    buf.add([kept(i) for i in range(3)])
    buf.take_batch(3)
    buf.close()
    again = DurableBuffer(path)
    assert again.counts().pending == 3
    _, records = again.take_batch(10)
    assert [k.window for k in records] == [kept(i).window for i in range(3)]


def test_duplicate_windows_are_stored_once(tmp_path: Path) -> None:
    buf = DurableBuffer(tmp_path / "b.sqlite")
    assert buf.add([kept(1), kept(2)]) == 2
    assert buf.add([kept(2), kept(3)]) == 1
    assert buf.counts().pending == 3


def test_bound_evicts_oldest_unlabeled_first_and_counts_it(tmp_path: Path) -> None:
    buf = DurableBuffer(tmp_path / "b.sqlite", max_rows=5)
    buf.add([kept(i, labeled=False) for i in range(3)], now=1.0)
    buf.add([kept(i, labeled=True) for i in range(10, 14)], now=2.0)
    counts = buf.counts()
    assert (counts.pending, counts.labeled, counts.evicted_unlabeled) == (5, 4, 2)
    _, records = buf.take_batch(10)
    assert sorted(k.window.seq for k in records) == [2, 10, 11, 12, 13]
    buf.release_all()
    buf.add([kept(i, labeled=True) for i in range(20, 23)], now=3.0)
    counts = buf.counts()
    assert (counts.pending, counts.evicted_unlabeled, counts.evicted_labeled) == (5, 3, 2)


def test_labeled_rows_ship_before_flagged_rows(tmp_path: Path) -> None:
    buf = DurableBuffer(tmp_path / "b.sqlite")
    buf.add([kept(1, labeled=False)], now=1.0)
    buf.add([kept(2, labeled=True)], now=2.0)
    _, records = buf.take_batch(1)
    assert records[0].window.seq == 2


# -- storage that heals (issue 11, finding 7) ---------------------------------------------------
def test_the_largest_wire_seq_round_trips_through_the_buffer(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    window = Window("m01", 2**64 - 1, 2**63 - 1, np.ones((60, 4), np.float32), label=3)
    buf = DurableBuffer(path)
    assert buf.add([Kept(window, "labeled", 3, 0.25)]) == 1
    buf.close()
    _, records = DurableBuffer(path).take_batch(10)
    assert [k.window for k in records] == [window]
    assert records[0].window.seq == 2**64 - 1


def test_a_write_failing_mid_transaction_leaves_nothing_open_and_the_next_write_works(
    tmp_path: Path,
) -> None:
    buf = DurableBuffer(tmp_path / "b.sqlite")
    db = buf._file.db
    db.execute(
        "CREATE TRIGGER full BEFORE INSERT ON kept WHEN NEW.id = 'm01:3:1003' "
        "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
    )
    with pytest.raises(StorageError, match="disk is full") as caught:
        buf.add([kept(i) for i in range(6)])
    assert caught.value.kind == "write_failed"
    assert not buf._file.db.in_transaction
    assert buf.counts().pending == 0  # rows 0..2 went with the failed insert
    db.execute("DROP TRIGGER full")
    assert buf.add([kept(i) for i in range(6)]) == 6


def test_a_record_a_batch_cannot_carry_is_refused_and_counted_not_dropped_silently(
    tmp_path: Path,
) -> None:
    buf = DurableBuffer(tmp_path / "b.sqlite")
    nan_score = Kept(kept(1).window, "labeled", 1, float("nan"))
    huge_prediction = Kept(kept(2).window, "labeled", 300, 0.5)
    assert buf.add([nan_score, huge_prediction, kept(3)]) == 1
    counts = buf.counts()
    assert (counts.pending, counts.rejected) == (1, 2)


def test_a_stored_row_that_fails_its_check_is_quarantined_never_shipped(tmp_path: Path) -> None:
    buf = DurableBuffer(tmp_path / "b.sqlite", max_rows=4)
    buf.add([kept(i) for i in range(3)], now=1.0)
    db = buf._file.db
    db.execute("UPDATE kept SET frame = x'00ff' WHERE id = ?", (window_id(kept(1).window),))
    db.execute("UPDATE kept SET score = 'high' WHERE id = ?", (window_id(kept(2).window),))
    token, records = buf.take_batch(10)
    assert [k.window.seq for k in records] == [0]
    assert buf.counts().quarantined == 2
    buf.release_all()  # a restart does not revive them
    token, records = buf.take_batch(10)
    assert [k.window.seq for k in records] == [0]
    buf.acknowledge(token)
    buf.add([kept(i) for i in range(10, 14)], now=2.0)  # full: bad rows go first
    counts = buf.counts()
    assert (counts.evicted_bad, counts.quarantined, counts.pending) == (2, 0, 4)


def test_token_zero_acknowledges_nothing(tmp_path: Path) -> None:
    buf = DurableBuffer(tmp_path / "b.sqlite")
    buf.add([kept(1)])
    assert buf.acknowledge(0) == 0 and buf.counts().pending == 1


@pytest.mark.parametrize(
    "content", [b"\x00garbage" * 512, b"SQLite format 3\x00" + b"\xff" * 2000], ids=["junk", "head"]
)
def test_a_corrupt_buffer_is_moved_aside_kept_and_a_fresh_one_works(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "buffer.sqlite"
    path.write_bytes(content)
    buf = DurableBuffer(path)
    (moved,) = buf.moved_aside
    assert moved.path.name.startswith("buffer.sqlite.corrupt-")
    assert moved.path.read_bytes() == content  # kept for recovery, untouched
    assert buf.add([kept(1)]) == 1 and buf.take_batch(5)[1][0].window == kept(1).window


def test_windows_of_a_damaged_buffer_are_recovered_into_the_fresh_one(tmp_path: Path) -> None:
    path = tmp_path / "buffer.sqlite"
    old = DurableBuffer(path)
    for start in range(0, 2000, 200):
        old.add([kept(i) for i in range(start, start + 200)])
    old._file.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    old.close()
    data = bytearray(path.read_bytes())
    page = 4096
    middle = len(data) // page // 2 * page
    data[middle : middle + 4 * page] = bytes(4 * page)  # four pages of the table lost
    path.write_bytes(bytes(data))

    fresh = DurableBuffer(path)
    (moved,) = fresh.moved_aside
    assert "quick_check" in moved.reason
    fresh.add([kept(5000)])
    added, skipped = recover(moved.path, fresh)
    pending = fresh.counts().pending
    assert added == pending - 1 and 1900 <= added < 2000  # only the rows on lost pages are gone
    assert recover(moved.path, fresh) == (0, skipped + added)  # twice is harmless
    _, records = fresh.take_batch(5000)
    assert all(k.window == kept(k.window.seq).window for k in records)
    print(f"recovered {added} of 2000 windows after losing 4 pages; {skipped} skipped")


def test_recover_buffer_command_queues_a_moved_aside_files_windows(tmp_path: Path) -> None:
    from pi_edge.__main__ import main

    aside = tmp_path / "buffer.sqlite.corrupt-x"
    source = DurableBuffer(aside)
    source.add([kept(i) for i in range(7)])
    source.close()
    state = tmp_path / "state"
    assert main(["recover-buffer", str(aside), "--state-dir", str(state)]) == 0
    assert DurableBuffer(state / "buffer.sqlite").counts().pending == 7
    assert main(["recover-buffer", str(tmp_path / "missing"), "--state-dir", str(state)]) == 2


def test_kept_windows_and_history_start_on_a_state_dir_with_corrupt_buffer_and_history(
    tmp_path: Path,
) -> None:
    import logging

    from nodekit.guard import Faults
    from nodekit.storage import WriteFailures
    from pi_edge.loop.drift import Verdicts
    from pi_edge.loop.kept_windows import KeptConfig, KeptWindows
    from pi_edge.report.history_writer import HistoryRecorder
    from protocol import Topics

    (tmp_path / "buffer.sqlite").write_bytes(b"disk rot" * 1000)
    (tmp_path / "history.sqlite").write_bytes(b"SQLite format 3\x00" + bytes(5000))
    failures = WriteFailures(logging.getLogger("test"), tmp_path)
    faults = Faults(logging.getLogger("test"))
    config = KeptConfig(tmp_path, "127.0.0.1:1", "pi-1", Topics("t"))
    kept_windows = KeptWindows(config, lambda: None, failures, faults)
    history = HistoryRecorder.open(tmp_path, failures, faults)
    try:
        windows = [kept(i).window for i in range(3)]
        assert kept_windows.keep(windows, Verdicts.quiet(3), np.zeros(3, np.int64)) == 3
        assert kept_windows.buffer.counts().pending == 3
        assert history.history.add([(1.0, "m01", 2**64 - 1, "a", 0.5, None, 1, "ok", 0, 2.0)])
        _, counts = kept_windows.detail()
        storage = {**kept_windows.storage(counts), **history.storage()}
    finally:
        kept_windows.buffer.close()
        history.history.close()
    assert storage["buffer_moved_aside_count"] == 1
    assert storage["history_moved_aside_count"] == 1
    (aside,) = storage["buffer_moved_aside"]
    assert Path(aside).read_bytes() == b"disk rot" * 1000
