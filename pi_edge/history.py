"""Local prediction history: every prediction in SQLite, bounded by age and row count.

Seed 003 stored predictions in a remote Postgres through REST; on a Pi they stay local and are
exported on demand (`python -m pi_edge export --since 1h --format csv`).
"""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from protocol.messages import Prediction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    ts         REAL NOT NULL,
    machine    TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    label      TEXT NOT NULL,
    confidence REAL NOT NULL,
    truth      TEXT,
    model_version INTEGER NOT NULL,
    drift      TEXT NOT NULL,
    ood        INTEGER NOT NULL,
    latency_ms REAL
);
CREATE INDEX IF NOT EXISTS predictions_ts ON predictions (ts);
"""
COLUMNS = (
    "ts",
    "machine",
    "seq",
    "label",
    "confidence",
    "truth",
    "model_version",
    "drift",
    "ood",
    "latency_ms",
)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in '90s', '15m', '1h', '7d'.

    >>> parse_duration("1h"), parse_duration("1.5m")
    (3600.0, 90.0)
    """
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"duration {text!r} is not a number followed by s, m, h or d (e.g. 1h)")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


class PredictionHistory:
    """Thread-safe, bounded SQLite log of predictions."""

    def __init__(self, path: Path, max_rows: int = 1_000_000, max_age_s: float = 7 * 86400) -> None:
        if max_rows < 1 or max_age_s <= 0:
            raise ValueError("history max_rows must be ≥ 1 and max_age_s > 0")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.max_rows = max_rows
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA cache_size=-512")  # KiB; SQLite's default 2 MB is a lot on a Pi
        self._db.executescript(_SCHEMA)
        self._since_prune = 0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, rows: Iterable[tuple[Any, ...]], now: float | None = None) -> None:
        """Append rows (COLUMNS order) in one transaction; prune now and then, not every call."""
        rows = list(rows)
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(f"INSERT INTO predictions VALUES ({','.join('?' * 10)})", rows)
            self._since_prune += len(rows)
            if self._since_prune >= 1000:
                self._prune(time.time() if now is None else now)
                self._since_prune = 0
            self._db.execute("COMMIT")

    def _prune(self, now: float) -> None:
        self._db.execute("DELETE FROM predictions WHERE ts < ?", (now - self.max_age_s,))
        self._db.execute(
            "DELETE FROM predictions WHERE rowid <= (SELECT rowid FROM predictions "
            "ORDER BY rowid DESC LIMIT 1 OFFSET ?)",
            (self.max_rows,),
        )

    def prune(self, now: float | None = None) -> None:
        with self._lock:
            self._prune(time.time() if now is None else now)

    def rows(
        self, since_s: float | None = None, now: float | None = None
    ) -> Iterator[tuple[object, ...]]:
        """Rows (oldest first) newer than `since_s` seconds ago, or all."""
        cutoff = (time.time() if now is None else now) - since_s if since_s else 0.0
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(COLUMNS)} FROM predictions WHERE ts >= ? ORDER BY rowid",
                (cutoff,),
            ).fetchall()
        yield from rows

    def count(self) -> int:
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM predictions").fetchone()
        return int(n)


def export(rows: Iterable[tuple[object, ...]], fmt: str) -> str:
    """Rows as CSV (with a header) or JSON lines."""
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(rows)
        return out.getvalue()
    if fmt == "jsonl":
        return "".join(json.dumps(dict(zip(COLUMNS, r, strict=True))) + "\n" for r in rows)
    raise ValueError(f"export format {fmt!r} is not csv or jsonl")


def row_of(p: Prediction) -> tuple[Any, ...]:
    """A history row (COLUMNS order) for a decoded Prediction."""
    return (
        p.timestamps_ns.get("published", 0) / 1e9,
        p.machine,
        p.seq,
        p.label,
        p.confidence,
        p.truth,
        p.model_version,
        p.drift,
        p.ood,
        p.latency_ms.get("total"),
    )
