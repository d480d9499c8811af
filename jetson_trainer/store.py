"""The trainer's durable window store: every received drift-batch record, once, in SQLite.

A batch is acknowledged to the broker only after `add_batch` returned, i.e. after its rows are
committed (WAL, synchronous=FULL): a crash before that means the broker resends it. Duplicates
(a resent batch) are dropped by window id.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from protocol.drift_batch import DriftBatch, window_id
from protocol.window import decode_window, encode_window

_SCHEMA = """
CREATE TABLE IF NOT EXISTS windows (
    seqno     INTEGER PRIMARY KEY AUTOINCREMENT,
    id        TEXT NOT NULL UNIQUE,
    machine   TEXT NOT NULL,
    label     INTEGER,
    reason    TEXT NOT NULL,
    predicted INTEGER,
    score     REAL NOT NULL,
    node      TEXT NOT NULL,
    model_version INTEGER NOT NULL,
    frame     BLOB NOT NULL,
    received  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS windows_labeled ON windows (label, seqno);
CREATE TABLE IF NOT EXISTS models (
    attempt INTEGER PRIMARY KEY AUTOINCREMENT, version INTEGER NOT NULL, parent INTEGER,
    created REAL NOT NULL,
    accepted INTEGER NOT NULL, reason TEXT NOT NULL, labels_used INTEGER NOT NULL,
    champion_drift REAL, challenger_drift REAL, champion_original REAL, challenger_original REAL
);
"""


@dataclass(frozen=True, slots=True)
class StoreCounts:
    windows: int
    labeled: int
    by_machine: dict[str, int]
    by_class: dict[int, int]
    by_reason: dict[str, int]


class WindowStore:
    """Thread-safe SQLite store of received windows and of the model history."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add_batch(self, batch: DriftBatch, now: float | None = None) -> tuple[int, int]:
        """Commit every record of `batch`; returns (added, duplicates dropped)."""
        received = time.time() if now is None else now
        rows = [
            (
                window_id(k.window),
                k.window.machine,
                k.window.label,
                k.reason,
                k.predicted,
                k.score,
                batch.node,
                batch.model_version,
                encode_window(k.window),
                received,
            )
            for k in batch.records
        ]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                before = self._db.total_changes
                self._db.executemany(
                    "INSERT OR IGNORE INTO windows (id, machine, label, reason, predicted, score, "
                    "node, model_version, frame, received) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    rows,
                )
                added = self._db.total_changes - before
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return added, len(rows) - added

    def latest_labeled_seqno(self) -> int:
        with self._lock:
            (value,) = self._db.execute(
                "SELECT COALESCE(MAX(seqno), 0) FROM windows WHERE label IS NOT NULL"
            ).fetchone()
        return int(value)

    def labeled_after(self, seqno: int) -> int:
        """How many labeled windows arrived after store position `seqno`."""
        with self._lock:
            (n,) = self._db.execute(
                "SELECT COUNT(*) FROM windows WHERE label IS NOT NULL AND seqno > ?", (seqno,)
            ).fetchone()
        return int(n)

    def recent_labeled(
        self, limit: int, after: int = 0
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], int]:
        """The newest `limit` labeled windows after position `after`, oldest first.

        Returns (X (N, T, C), y (N,), highest seqno included).
        """
        with self._lock:
            rows = self._db.execute(
                "SELECT seqno, frame FROM windows WHERE label IS NOT NULL AND seqno > ? "
                "ORDER BY seqno DESC LIMIT ?",
                (after, limit),
            ).fetchall()
        rows.reverse()
        if not rows:
            return np.zeros((0, 0, 0), np.float32), np.zeros(0, np.int64), after
        windows = [decode_window(bytes(frame)) for _, frame in rows]
        x = np.stack([w.data for w in windows]).astype(np.float32)
        y = np.array([w.label for w in windows], np.int64)
        return x, y, int(rows[-1][0])

    def counts(self) -> StoreCounts:
        with self._lock:
            total, labeled = self._db.execute(
                "SELECT COUNT(*), COUNT(label) FROM windows"
            ).fetchone()
            by_machine = dict(
                self._db.execute(
                    "SELECT machine, COUNT(*) FROM windows GROUP BY machine"
                ).fetchall()
            )
            by_class = dict(
                self._db.execute(
                    "SELECT label, COUNT(*) FROM windows WHERE label IS NOT NULL GROUP BY label"
                ).fetchall()
            )
            by_reason = dict(
                self._db.execute("SELECT reason, COUNT(*) FROM windows GROUP BY reason").fetchall()
            )
        return StoreCounts(int(total), int(labeled), by_machine, by_class, by_reason)

    def record_model(
        self,
        version: int,
        parent: int | None,
        *,
        accepted: bool,
        reason: str,
        labels_used: int,
        scores: tuple[float, float, float, float] | None,
    ) -> None:
        """Remember a training attempt (accepted or not) for the dashboard and the history."""
        cd, xd, co, xo = scores if scores else (None, None, None, None)
        with self._lock:
            self._db.execute(
                "INSERT INTO models (version, parent, created, accepted, reason, labels_used, "
                "champion_drift, challenger_drift, champion_original, challenger_original) "
                "VALUES (?,?,?,?,?,?,?,?,?,?)",
                (version, parent, time.time(), int(accepted), reason, labels_used, cd, xd, co, xo),
            )

    def model_history(self, limit: int = 10) -> list[dict[str, object]]:
        with self._lock:
            cur = self._db.execute("SELECT * FROM models ORDER BY attempt DESC LIMIT ?", (limit,))
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
