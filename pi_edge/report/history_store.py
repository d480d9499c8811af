"""Local prediction history: every prediction in SQLite, bounded by age and row count.

Seed 003 stored predictions in a remote Postgres through REST; on a Pi they stay local and are
exported on demand (`python -m pi_edge export --since 1h --format csv`).

The file heals (nodekit.storage): a corrupt or foreign history is moved aside to
`history.sqlite.corrupt-<UTC time>` (the newest three copies are kept) and a fresh one started.
A seq of 2**63 or more is stored as its two's complement (nodekit.storage.seq_to_db), so the
wire's whole 0..2**64-1 fits and every smaller seq reads back as itself; never ORDER BY seq in
SQL. Every row is checked on the way in and on the way out: a bad one is skipped and counted
(`rejected`, `bad_rows`), never written or exported.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from nodekit.storage import Layout, MovedAside, SqliteFile, seq_from_db, seq_to_db
from protocol.errors import PayloadError
from protocol.messages import Prediction
from protocol.topics import check_id

log = logging.getLogger(__name__)

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
# layout 0 → 1 changes no data (layout 0 could not store a seq ≥ 2**63 at all; what it did store
# reads the same): the version only marks the file as checked by this build
_LAYOUT_1 = ""
_LAYOUT = Layout(
    "the prediction history",
    _SCHEMA,
    (("predictions", COLUMNS),),
    migrations=(_LAYOUT_1,),
    keep_aside=3,
    recovery="predictions from before this moment are only in the moved file (open it with "
    "sqlite3 and `.recover`); the newest 3 such copies are kept",
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


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"history {what} {value!r} is not a number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"history {what} {value!r} is not finite")
    return number


def _int(value: object, what: str, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < high:
        raise ValueError(f"history {what} {value!r} is not an integer in 0..{high - 1}")
    return value


def _text(value: object, what: str, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= 256:
        raise ValueError(f"history {what} {value!r} is not a string of 1..256 characters")
    return value


def _checked(row: tuple[Any, ...] | list[Any], seq: int) -> tuple[Any, ...]:
    if len(row) != len(COLUMNS):
        raise ValueError(f"history row has {len(row)} fields, expected {len(COLUMNS)}")
    ts, machine, _, label, confidence, truth, version, drift, ood, latency = row
    try:
        check_id(machine)
    except PayloadError as exc:
        raise ValueError(str(exc)) from None
    if ood not in (0, 1) or not isinstance(ood, int):
        raise ValueError(f"history ood {ood!r} is not a bool")
    return (
        _number(ts, "ts"),
        machine,
        seq,
        _text(label, "label"),
        _number(confidence, "confidence"),
        _text(truth, "truth", optional=True),
        _int(version, "model_version", 1 << 63),
        _text(drift, "drift"),
        int(ood),
        None if latency is None else _number(latency, "latency_ms"),
    )


def to_db(row: tuple[Any, ...] | list[Any]) -> tuple[Any, ...]:
    """A history row (COLUMNS order) as stored, every field checked; ValueError says which.

    >>> to_db((1.5, "m01", 2**64 - 1, "normal", 0.9, None, 3, "ok", False, 1.2))[2]
    -1
    >>> to_db((1.5, "m01", 7, "normal", float("nan"), None, 3, "ok", False, 1.2))
    Traceback (most recent call last):
    ...
    ValueError: history confidence nan is not finite
    """
    seq = row[2] if len(row) == len(COLUMNS) else None
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < 1 << 64:
        raise ValueError(f"history seq {seq!r} is not an integer in 0..2**64-1")
    return _checked(row, seq_to_db(seq))


def from_db(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A stored row back in COLUMNS order (the wire's seq), checked as `to_db` checks.

    >>> from_db(to_db((1.5, "m01", 2**64 - 1, "normal", 0.9, None, 3, "ok", True, None)))
    (1.5, 'm01', 18446744073709551615, 'normal', 0.9, None, 3, 'ok', 1, None)
    """
    seq = row[2] if len(row) == len(COLUMNS) else None
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise ValueError(f"stored history seq {seq!r} is not an integer")
    return _checked(row, seq_from_db(seq))


class PredictionHistory:
    """Thread-safe, bounded SQLite log of predictions that heals (see the module docstring).

    `heal=False` is for readers next to a running node (`pi_edge export`): an unusable file
    raises StorageError instead of being moved aside under the node's feet.
    """

    def __init__(
        self,
        path: Path,
        max_rows: int = 1_000_000,
        max_age_s: float = 7 * 86400,
        *,
        heal: bool = True,
    ) -> None:
        if max_rows < 1 or max_age_s <= 0:
            raise ValueError("history max_rows must be ≥ 1 and max_age_s > 0")
        self.path = path
        self.max_rows = max_rows
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self._file = SqliteFile(path, _LAYOUT, heal=heal)
        self._since_prune = 0
        self.rejected = 0  # rows refused on the way in (a field out of range)
        self.bad_rows = 0  # stored rows skipped on the way out

    @property
    def moved_aside(self) -> list[MovedAside]:
        """Unusable files this object moved aside (at open or later), oldest first."""
        with self._lock:
            return list(self._file.moved_aside)

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def add(self, rows: Iterable[tuple[Any, ...]], now: float | None = None) -> int:
        """Append rows (COLUMNS order) in one transaction; prune now and then, not every call.

        Returns the rows written. A row with a field out of range is skipped and counted
        (`rejected`); a failed write is rolled back whole and raises StorageError.
        """
        good: list[tuple[Any, ...]] = []
        refused: list[ValueError] = []
        for row in rows:
            try:
                good.append(to_db(row))
            except ValueError as exc:
                refused.append(exc)
        with self._lock:
            if refused:
                if not self.rejected:
                    log.warning(
                        "refused a prediction history row: %s (further ones are only counted)",
                        refused[0],
                    )
                self.rejected += len(refused)
            if not good:
                return 0
            prune = self._since_prune + len(good) >= 1000
            with self._file.write() as db:
                db.executemany(f"INSERT INTO predictions VALUES ({','.join('?' * 10)})", good)
                if prune:
                    self._prune(db, time.time() if now is None else now)
            self._since_prune = 0 if prune else self._since_prune + len(good)
        return len(good)

    def _prune(self, db: sqlite3.Connection, now: float) -> None:
        db.execute("DELETE FROM predictions WHERE ts < ?", (now - self.max_age_s,))
        db.execute(
            "DELETE FROM predictions WHERE rowid <= (SELECT rowid FROM predictions "
            "ORDER BY rowid DESC LIMIT 1 OFFSET ?)",
            (self.max_rows,),
        )

    def prune(self, now: float | None = None) -> None:
        with self._lock, self._file.write() as db:
            self._prune(db, time.time() if now is None else now)

    def rows(
        self, since_s: float | None = None, now: float | None = None
    ) -> Iterator[tuple[object, ...]]:
        """Rows (oldest first) newer than `since_s` seconds ago, or all; bad rows skipped."""
        cutoff = (time.time() if now is None else now) - since_s if since_s else 0.0
        query = f"SELECT {', '.join(COLUMNS)} FROM predictions WHERE ts >= ? ORDER BY rowid"
        with self._lock:
            stored = self._file.read(lambda db: db.execute(query, (cutoff,)).fetchall())
        bad = 0
        for row in stored:
            try:
                checked = from_db(row)
            except ValueError as exc:
                if not bad:
                    log.warning("skipped a bad row of %s: %s", self.path, exc)
                bad += 1
                continue
            yield checked
        if bad:
            with self._lock:
                self.bad_rows += bad

    def count(self) -> int:
        with self._lock:
            (n,) = self._file.read(
                lambda db: db.execute("SELECT COUNT(*) FROM predictions").fetchone()
            )
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
