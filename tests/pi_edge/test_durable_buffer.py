"""Durable buffer: survives a killed process, deletes only acknowledged rows, evicts by policy."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pi_edge.buffer import DurableBuffer
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
        "from pi_edge.buffer import DurableBuffer\n"
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
