"""Durable buffer of kept windows (labeled or flagged) on the Pi: SQLite in WAL mode.

Rows are written before anything is sent, handed out in batches marked in flight, and deleted
only when the trainer acknowledged that batch as stored (`acknowledge`; see loop/shipper.py). A
batch never acknowledged goes back to pending (`release`, or on the next open after a crash),
so delivery is at-least-once; the trainer drops duplicates by window id. Bounded: past
`max_rows`, the oldest unlabeled rows go first, labeled rows only when nothing else is left,
and every eviction is counted.

WAL with synchronous=NORMAL survives a killed process (kill -9): every committed row is in the
WAL. Only an OS crash or power cut can lose the last commits; `synchronous="FULL"` closes that
too at the cost of an fsync per batch.

The file heals (nodekit.storage): a corrupt or foreign buffer is moved aside to
`buffer.sqlite.corrupt-<UTC time>` and KEPT (its windows were never sent), reported in the
node's status (`storage.buffer_moved_aside`), and a fresh buffer is started. Records are checked
on the way in (`rejected`: a score that is not finite, a prediction out of int8) and rows on the
way out (`quarantined`: a frame that does not decode or does not match its id); a bad row is
never shipped, stays in the file marked quarantined, and is the first to go when the buffer is
full. Every write is one transaction, rolled back whole on failure (StorageError).
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodekit.errors import StorageError
from nodekit.storage import Layout, MovedAside, SqliteFile
from protocol.drift_batch import Kept, window_id
from protocol.errors import PayloadError
from protocol.window import decode_window, encode_window

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kept (
    id        TEXT PRIMARY KEY,
    machine   TEXT NOT NULL,
    labeled   INTEGER NOT NULL,
    reason    TEXT NOT NULL,
    predicted INTEGER,
    score     REAL NOT NULL,
    frame     BLOB NOT NULL,
    created   REAL NOT NULL,
    inflight  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS kept_evict ON kept (labeled, created);
CREATE INDEX IF NOT EXISTS kept_inflight ON kept (inflight);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
# inflight: 0 pending, > 0 the token of the batch it travels in, < 0 quarantined (bad row).
# Layout 0 → 1 changes no data (seq lives in `id` text and the frame, so 0..2**64-1 fits): the
# version only marks the file as checked by this build.
_LAYOUT_1 = ""
_QUARANTINED = -1


def _layout(synchronous: str) -> Layout:
    return Layout(
        "the kept-window buffer",
        _SCHEMA,
        (
            (
                "kept",
                (
                    "id",
                    "machine",
                    "labeled",
                    "reason",
                    "predicted",
                    "score",
                    "frame",
                    "created",
                    "inflight",
                ),
            ),
            ("counters", ("name", "value")),
        ),
        migrations=(_LAYOUT_1,),
        synchronous=synchronous,
        recovery="the windows not yet shipped are in the moved file, which is kept: queue them "
        "again with `python -m pi_edge recover-buffer <moved file> --state-dir <dir>`",
    )


def check_record(k: Kept) -> None:
    """Refuse what a drift batch cannot carry; ValueError says which field.

    >>> import numpy as np
    >>> from protocol.window import Window
    >>> w = Window("m01", 2**64 - 1, 0, np.zeros((60, 4), np.float32), label=1)
    >>> check_record(Kept(w, "labeled", 1, float("nan")))
    Traceback (most recent call last):
    ...
    ValueError: kept window m01:18446744073709551615:0 has score nan, not a finite number
    """
    if isinstance(k.score, bool) or not isinstance(k.score, int | float):
        raise ValueError(f"kept window {window_id(k.window)} has score {k.score!r}, not a number")
    if not math.isfinite(k.score):
        raise ValueError(
            f"kept window {window_id(k.window)} has score {k.score!r}, not a finite number"
        )
    p = k.predicted
    if p is not None and (isinstance(p, bool) or not isinstance(p, int) or not 0 <= p <= 127):
        raise ValueError(f"kept window {window_id(k.window)} has prediction {p!r}, not 0..127")


def record_of(row: tuple[Any, ...]) -> Kept:
    """A stored row (id, reason, predicted, score, frame) as a checked Kept; ValueError if bad."""
    row_id, reason, predicted, score, frame = row
    if not isinstance(frame, bytes):
        raise ValueError(f"buffer row {row_id!r}: frame is {type(frame).__name__}, not bytes")
    try:
        kept = Kept(decode_window(frame), reason, predicted, score)
    except PayloadError as exc:
        raise ValueError(f"buffer row {row_id!r}: {exc}") from None
    if window_id(kept.window) != row_id:
        raise ValueError(f"buffer row {row_id!r} holds window {window_id(kept.window)}")
    check_record(kept)
    return kept


@dataclass(frozen=True, slots=True)
class BufferCounts:
    pending: int
    inflight: int
    labeled: int
    evicted_unlabeled: int
    evicted_labeled: int
    acknowledged: int
    quarantined: int = 0  # rows that failed their check on the way out; never shipped
    rejected: int = 0  # records refused on the way in
    evicted_bad: int = 0  # quarantined rows dropped to make room


class DurableBuffer:
    """Thread-safe SQLite store of kept windows; one instance per state dir."""

    def __init__(
        self,
        path: Path,
        max_rows: int = 50_000,
        synchronous: str = "NORMAL",
        *,
        heal: bool = True,
    ) -> None:
        if max_rows < 1:
            raise ValueError("buffer max_rows must be ≥ 1")
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError("buffer synchronous must be NORMAL or FULL")
        self.path = path
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._file = SqliteFile(path, _layout(synchronous), heal=heal)
        self._next_token = int(time.time() * 1000)
        self._logged_rejected = False
        self.release_all()  # batches in flight when the last process died go back to pending

    @property
    def moved_aside(self) -> list[MovedAside]:
        """Unusable buffer files this object moved aside (kept on disk), oldest first."""
        with self._lock:
            return list(self._file.moved_aside)

    def close(self) -> None:
        with self._lock:
            self._file.close()

    @staticmethod
    def _bump(db: sqlite3.Connection, name: str, n: int) -> None:
        if n:
            db.execute(
                "INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE "
                "SET value = value + excluded.value",
                (name, n),
            )

    def add(self, records: list[Kept], now: float | None = None) -> int:
        """Store records in one transaction (duplicates by window id ignored); returns added.

        A record a drift batch cannot carry is refused and counted (`rejected`); a failed
        write is rolled back whole and raises StorageError.
        """
        created = time.time() if now is None else now
        rows = []
        refused: list[Exception] = []
        for k in records:
            try:
                check_record(k)
                rows.append(
                    (
                        window_id(k.window),
                        k.window.machine,
                        int(k.window.label is not None),
                        k.reason,
                        k.predicted,
                        float(k.score),
                        encode_window(k.window),
                        created,
                    )
                )
            except (ValueError, PayloadError) as exc:
                refused.append(exc)
        if refused and not self._logged_rejected:
            self._logged_rejected = True
            log.warning("refused a kept window: %s (further ones are only counted)", refused[0])
        if not rows and not refused:
            return 0
        with self._lock, self._file.write() as db:
            before = db.total_changes
            db.executemany(  # ON CONFLICT, not OR IGNORE: only a duplicate id is handled
                # a duplicate is ignored, unless it brings a (new) label: a maintenance label
                # reached a window kept unlabeled; the row is upgraded and, if it was in
                # flight, taken out of that batch so that it is sent again with its label
                "INSERT INTO kept (id, machine, labeled, reason, predicted, score, frame, "
                "created) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                "labeled = excluded.labeled, reason = excluded.reason, frame = excluded.frame, "
                "inflight = 0 WHERE excluded.labeled = 1 AND kept.frame != excluded.frame",
                rows,
            )
            added = db.total_changes - before
            self._bump(db, "rejected", len(refused))
            self._evict(db)
        return added

    def _evict(self, db: sqlite3.Connection) -> None:
        (count,) = db.execute("SELECT COUNT(*) FROM kept").fetchone()
        excess = count - self.max_rows
        stages = (
            ("inflight < 0", "evicted_bad"),
            ("labeled = 0 AND inflight = 0", "evicted_unlabeled"),
            ("labeled = 1 AND inflight = 0", "evicted_labeled"),
        )
        for where, counter in stages:
            if excess <= 0:
                return
            cur = db.execute(
                f"DELETE FROM kept WHERE rowid IN (SELECT rowid FROM kept WHERE {where} "
                "ORDER BY created, rowid LIMIT ?)",
                (excess,),
            )
            self._bump(db, counter, cur.rowcount)
            excess -= cur.rowcount

    def take_batch(self, limit: int) -> tuple[int, list[Kept]]:
        """Mark up to `limit` pending rows (labeled first, oldest first) in flight.

        Returns (token, records); token 0 and [] when nothing is pending. A row that fails its
        check is quarantined (never shipped, counted) and the next one taken instead.
        """
        records: list[Kept] = []
        bad: list[str] = []
        with self._lock:
            self._next_token += 1
            token = self._next_token
            with self._file.write() as db:
                while not records:
                    rows = db.execute(
                        "SELECT rowid, id, reason, predicted, score, frame FROM kept "
                        "WHERE inflight = 0 ORDER BY labeled DESC, created, rowid LIMIT ?",
                        (limit,),
                    ).fetchall()
                    if not rows:
                        break
                    marks = []
                    for rowid, *row in rows:
                        try:
                            records.append(record_of(tuple(row)))
                            marks.append((token, rowid))
                        except ValueError as exc:
                            bad.append(str(exc))
                            marks.append((_QUARANTINED, rowid))
                    db.executemany("UPDATE kept SET inflight = ? WHERE rowid = ?", marks)
                self._bump(db, "quarantined", len(bad))
        if bad:
            log.warning(
                "quarantined %d bad row(s) of %s, they will not be shipped: %s",
                len(bad),
                self.path,
                bad[0],
            )
        if not records:
            return 0, []
        return token, records

    def acknowledge(self, token: int) -> int:
        """The trainer stored batch `token`: delete its rows; returns rows deleted."""
        if token <= 0:
            return 0
        with self._lock, self._file.write() as db:
            cur = db.execute("DELETE FROM kept WHERE inflight = ?", (token,))
            self._bump(db, "acknowledged", cur.rowcount)
            return cur.rowcount

    def release(self, token: int) -> None:
        """Batch `token` will not be acknowledged (disconnect, timeout): make it pending again."""
        if token <= 0:
            return
        with self._lock, self._file.write() as db:
            db.execute("UPDATE kept SET inflight = 0 WHERE inflight = ?", (token,))

    def release_all(self) -> None:
        with self._lock, self._file.write() as db:
            db.execute("UPDATE kept SET inflight = 0 WHERE inflight > 0")

    def counts(self) -> BufferCounts:
        def query(db: sqlite3.Connection) -> tuple[tuple[int, ...], dict[str, int]]:
            totals = db.execute(
                "SELECT COALESCE(SUM(inflight = 0), 0), COALESCE(SUM(inflight > 0), 0), "
                "COALESCE(SUM(labeled AND inflight >= 0), 0), COALESCE(SUM(inflight < 0), 0) "
                "FROM kept"
            ).fetchone()
            return totals, dict(db.execute("SELECT name, value FROM counters").fetchall())

        with self._lock:
            (pending, inflight, labeled, quarantined), counters = self._file.read(query)
        return BufferCounts(
            int(pending),
            int(inflight),
            int(labeled),
            counters.get("evicted_unlabeled", 0),
            counters.get("evicted_labeled", 0),
            counters.get("acknowledged", 0),
            int(quarantined),
            counters.get("rejected", 0),
            counters.get("evicted_bad", 0),
        )


def recover(source: Path, into: DurableBuffer) -> tuple[int, int]:
    """Copy the windows of a moved-aside buffer file into `into`; returns (added, skipped).

    Reads the rows in rowid order; past a page that cannot be read it looks rows up one by one,
    so only the rows on broken pages are lost. Each row is checked as `take_batch` checks it.
    Skipped rows failed their check or are in `into` already (running it twice is harmless).
    On a file whose table cannot be read at all, run `sqlite3 <file> .recover | sqlite3 <new>`
    first and recover from the new file.
    """
    if not source.is_file():
        raise StorageError(f"no buffer file {source} to recover windows from", "open_failed")
    try:
        db = sqlite3.connect(str(source))  # not read-only: its WAL may need its -shm index
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open {source} to recover from: {exc}", "open_failed") from exc
    try:
        rows, unreadable = _readable_rows(db, source)
    finally:
        db.close()
    good: list[Kept] = []
    skipped = 0
    for row in rows:
        try:
            good.append(record_of(row))
        except ValueError:
            skipped += 1
    added = 0
    for start in range(0, len(good), 512):
        added += into.add(good[start : start + 512])
    if unreadable:
        log.warning("%d row(s) of %s were on pages that cannot be read", unreadable, source)
    return added, skipped + len(good) - added


def _readable_rows(db: sqlite3.Connection, source: Path) -> tuple[list[tuple[Any, ...]], int]:
    """Every (id, reason, predicted, score, frame) that can be read; and how many could not."""
    columns = "rowid, id, reason, predicted, score, frame"
    rows: list[tuple[Any, ...]] = []
    last = 0
    try:
        for rowid, *row in db.execute(f"SELECT {columns} FROM kept ORDER BY rowid"):
            rows.append(tuple(row))
            last = rowid
        return rows, 0
    except sqlite3.Error as exc:
        log.warning("a page of %s cannot be read after rowid %d (%s)", source, last, exc)
    try:
        (highest,) = db.execute("SELECT MAX(rowid) FROM kept").fetchone()
    except sqlite3.Error as exc:
        log.warning("the end of %s cannot be read either (%s); recover from .recover", source, exc)
        return rows, 1
    unreadable = 0
    for rowid in range(last + 1, (highest or 0) + 1):  # one lookup per row, past bad pages
        try:
            found = db.execute(f"SELECT {columns} FROM kept WHERE rowid = ?", (rowid,)).fetchone()
        except sqlite3.Error:
            unreadable += 1
            continue
        if found is not None:
            rows.append(tuple(found[1:]))
    return rows, unreadable
