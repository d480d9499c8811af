"""Durable buffer of kept windows (labeled or flagged) on the Pi: SQLite in WAL mode.

Rows are written before anything is sent, handed out in batches marked in flight, and deleted
only when the broker acknowledged that batch (`acknowledge`). A batch never acknowledged goes
back to pending (`release`, or on the next open after a crash), so delivery is at-least-once;
the trainer drops duplicates by window id. Bounded: past `max_rows`, the oldest unlabeled rows
go first, labeled rows only when nothing else is left, and every eviction is counted.

WAL with synchronous=NORMAL survives a killed process (kill -9): every committed row is in the
WAL. Only an OS crash or power cut can lose the last commits; `synchronous="FULL"` closes that
too at the cost of an fsync per batch.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from protocol.drift_batch import Kept, window_id
from protocol.window import decode_window, encode_window

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


@dataclass(frozen=True, slots=True)
class BufferCounts:
    pending: int
    inflight: int
    labeled: int
    evicted_unlabeled: int
    evicted_labeled: int
    acknowledged: int


class DurableBuffer:
    """Thread-safe SQLite store of kept windows; one instance per state dir."""

    def __init__(self, path: Path, max_rows: int = 50_000, synchronous: str = "NORMAL") -> None:
        if max_rows < 1:
            raise ValueError("buffer max_rows must be ≥ 1")
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError("buffer synchronous must be NORMAL or FULL")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.execute("PRAGMA cache_size=-512")  # KiB; SQLite's default 2 MB is a lot on a Pi
        self._db.executescript(_SCHEMA)
        self._next_token = int(time.time() * 1000)
        self.release_all()  # batches in flight when the last process died go back to pending

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _bump(self, name: str, n: int) -> None:
        if n:
            self._db.execute(
                "INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE "
                "SET value = value + excluded.value",
                (name, n),
            )

    def add(self, records: list[Kept], now: float | None = None) -> int:
        """Store records in one transaction (duplicates by window id ignored); returns added."""
        if not records:
            return 0
        created = time.time() if now is None else now
        rows = [
            (
                window_id(k.window),
                k.window.machine,
                int(k.window.label is not None),
                k.reason,
                k.predicted,
                k.score,
                encode_window(k.window),
                created,
            )
            for k in records
        ]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                before = self._db.total_changes
                self._db.executemany(
                    "INSERT OR IGNORE INTO kept (id, machine, labeled, reason, predicted, score, "
                    "frame, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                added = self._db.total_changes - before
                self._evict()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return added

    def _evict(self) -> None:
        (count,) = self._db.execute("SELECT COUNT(*) FROM kept").fetchone()
        excess = count - self.max_rows
        for labeled, counter in ((0, "evicted_unlabeled"), (1, "evicted_labeled")):
            if excess <= 0:
                return
            cur = self._db.execute(
                "DELETE FROM kept WHERE id IN (SELECT id FROM kept WHERE labeled = ? AND "
                "inflight = 0 ORDER BY created, rowid LIMIT ?)",
                (labeled, excess),
            )
            self._bump(counter, cur.rowcount)
            excess -= cur.rowcount

    def take_batch(self, limit: int) -> tuple[int, list[Kept]]:
        """Mark up to `limit` pending rows (labeled first, oldest first) in flight.

        Returns (token, records); token 0 and [] when nothing is pending.
        """
        with self._lock:
            self._next_token += 1
            token = self._next_token
            self._db.execute("BEGIN IMMEDIATE")
            rows = self._db.execute(
                "SELECT id, reason, predicted, score, frame FROM kept WHERE inflight = 0 "
                "ORDER BY labeled DESC, created, rowid LIMIT ?",
                (limit,),
            ).fetchall()
            self._db.executemany(
                "UPDATE kept SET inflight = ? WHERE id = ?", [(token, r[0]) for r in rows]
            )
            self._db.execute("COMMIT")
        if not rows:
            return 0, []
        return token, [Kept(decode_window(bytes(r[4])), r[1], r[2], float(r[3])) for r in rows]

    def acknowledge(self, token: int) -> int:
        """The broker acknowledged batch `token`: delete its rows; returns rows deleted."""
        with self._lock:
            cur = self._db.execute("DELETE FROM kept WHERE inflight = ?", (token,))
            self._bump("acknowledged", cur.rowcount)
            return cur.rowcount

    def release(self, token: int) -> None:
        """Batch `token` will not be acknowledged (disconnect, timeout): make it pending again."""
        with self._lock:
            self._db.execute("UPDATE kept SET inflight = 0 WHERE inflight = ?", (token,))

    def release_all(self) -> None:
        with self._lock:
            self._db.execute("UPDATE kept SET inflight = 0 WHERE inflight != 0")

    def counts(self) -> BufferCounts:
        with self._lock:
            pending, inflight, labeled = self._db.execute(
                "SELECT COALESCE(SUM(inflight = 0), 0), COALESCE(SUM(inflight != 0), 0), "
                "COALESCE(SUM(labeled), 0) FROM kept"
            ).fetchone()
            counters = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
        return BufferCounts(
            int(pending),
            int(inflight),
            int(labeled),
            counters.get("evicted_unlabeled", 0),
            counters.get("evicted_labeled", 0),
            counters.get("acknowledged", 0),
        )
