"""The trainer's durable window store: every received drift-batch record, once, in SQLite.

A batch is acknowledged to the broker only after `add_batch` returned, i.e. after its rows are
committed (WAL, synchronous=FULL): a crash before that means the broker resends it. Duplicates
(a resent batch) are dropped by window id.

The file holds training data nobody can send again, so it is never deleted: a corrupt or
foreign store is moved aside to `windows.sqlite.corrupt-<UTC time>` (nodekit.storage), kept,
logged and reported (`moved_aside`; the trainer's status says so), and a fresh store started.
A record a drift batch should never carry (a score that is not finite) is refused and counted
(`rejected`), not mistaken for a duplicate; a stored row that no longer decodes, or whose label
or shape does not fit, is skipped and counted (`bad_rows`) when training data is read. seq
lives in the `id` text and the frame, so the wire's whole 0..2**64-1 fits.

A row belongs to the node that sent it: a batch from another node with the same window id (a
replay, or a node naming another's windows) never replaces or relabels it — that copy is
refused and counted (`foreign`). Every labeled row keeps who gave its label (`label_sources`:
the sending node, the batch it came in and why the node kept it), so every label a fine-tune
trains on can be traced (`label_senders`).
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

import numpy as np
import numpy.typing as npt

from nodekit.storage import Layout, MovedAside, SqliteFile
from protocol.drift_batch import REASONS, DriftBatch, Kept, window_id
from protocol.errors import PayloadError
from protocol.machine_type import MAX_CLASSES
from protocol.schema import CLASSES
from protocol.window import Window, decode_window, encode_window

log = logging.getLogger(__name__)

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
CREATE TABLE IF NOT EXISTS label_sources (
    seqno  INTEGER PRIMARY KEY,
    node   TEXT NOT NULL,
    batch  TEXT NOT NULL,
    source TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS models (
    attempt INTEGER PRIMARY KEY AUTOINCREMENT, version INTEGER NOT NULL, parent INTEGER,
    created REAL NOT NULL,
    accepted INTEGER NOT NULL, reason TEXT NOT NULL, labels_used INTEGER NOT NULL,
    champion_drift REAL, challenger_drift REAL, champion_original REAL, challenger_original REAL
);
"""
_LAYOUT = Layout(
    "the trainer's window store",
    _SCHEMA,
    (
        (
            "windows",
            (
                "seqno",
                "id",
                "machine",
                "label",
                "reason",
                "predicted",
                "score",
                "node",
                "model_version",
                "frame",
                "received",
            ),
        ),
        ("label_sources", ("seqno", "node", "batch", "source")),
        (
            "models",
            (
                "attempt",
                "version",
                "parent",
                "created",
                "accepted",
                "reason",
                "labels_used",
                "champion_drift",
                "challenger_drift",
                "champion_original",
                "challenger_original",
            ),
        ),
    ),
    migrations=("",),  # layout 0 → 1 changes no data; it marks the file as checked
    synchronous="FULL",
    cache_kib=2048,
    recovery="its labeled windows are in the moved file, which is kept: stop the trainer and "
    "copy it (with its -wal file) back as windows.sqlite after `sqlite3 <file> .recover`, or "
    "keep it as a record",
)
_MAX_BAD_SEQNOS = 100_000  # distinct bad rows remembered, so a re-read is not counted twice


def _owners(db: sqlite3.Connection, ids: list[str]) -> dict[str, str]:
    """The sending node of each of `ids` already stored."""
    found: dict[str, str] = {}
    for i in range(0, len(ids), 500):  # within SQLite's bound on parameters
        chunk = ids[i : i + 500]
        marks = ",".join("?" * len(chunk))
        for row_id, node in db.execute(
            f"SELECT id, node FROM windows WHERE id IN ({marks})",
            chunk,
        ):
            found[str(row_id)] = str(node)
    return found


def check_kept(k: Kept, n_classes: int = MAX_CLASSES) -> None:
    """Refuse a record no Pi should send; ValueError says which field. A window's label must
    index one of the `n_classes` classes of its machine type.

    >>> import numpy as np
    >>> w = Window("m01", 2**64 - 1, 0, np.zeros((60, 4), np.float32), label=1)
    >>> check_kept(Kept(w, "labeled", 1, float("nan")))
    Traceback (most recent call last):
    ...
    ValueError: window m01:18446744073709551615:0 has score nan, not a finite number
    """
    if isinstance(k.score, bool) or not isinstance(k.score, int | float):
        raise ValueError(f"window {window_id(k.window)} has score {k.score!r}, not a number")
    if not math.isfinite(k.score):
        raise ValueError(f"window {window_id(k.window)} has score {k.score!r}, not a finite number")
    p = k.predicted
    if p is not None and (isinstance(p, bool) or not isinstance(p, int) or not 0 <= p <= 127):
        raise ValueError(f"window {window_id(k.window)} has prediction {p!r}, not 0..127")
    label = k.window.label
    if label is not None and (not isinstance(label, int) or not 0 <= label < n_classes):
        raise ValueError(
            f"window {window_id(k.window)} has label {label!r}; its machine type has "
            f"{n_classes} classes (0..{n_classes - 1})"
        )


def labeled_window(row_id: Any, label: Any, frame: Any) -> Window:
    """A stored (id, label, frame) as a checked, labeled Window; ValueError if it is bad."""
    if not isinstance(frame, bytes):
        raise ValueError(f"stored window {row_id!r}: frame is {type(frame).__name__}, not bytes")
    try:
        window = decode_window(frame)
    except PayloadError as exc:
        raise ValueError(f"stored window {row_id!r}: {exc}") from None
    if window_id(window) != row_id:
        raise ValueError(f"stored row {row_id!r} holds window {window_id(window)}")
    if window.label is None or window.label != label:
        raise ValueError(f"stored window {row_id!r}: label {label!r}, frame {window.label!r}")
    return window


@dataclass(frozen=True, slots=True)
class StoreCounts:
    windows: int
    labeled: int
    by_machine: dict[str, int]
    by_class: dict[int, int]
    by_reason: dict[str, int]
    rejected: int = 0  # records refused on the way in (since this process started)
    foreign: int = 0  # records refused: another node's window id (since this process started)
    bad_rows: int = 0  # distinct stored rows skipped on the way out
    moved_aside: tuple[str, ...] = ()  # unusable store files moved aside (kept), oldest first


# the reasons a Pi ships a window of a machine in drift for (protocol.drift_batch.REASONS)
DRIFTING_REASONS = ("drift", "out_of_distribution")
assert set(DRIFTING_REASONS) <= set(REASONS)


class WindowStore:
    """Thread-safe SQLite store of received windows and of the model history."""

    def __init__(self, path: Path, *, heal: bool = True) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file = SqliteFile(path, _LAYOUT, heal=heal)
        self.rejected = 0
        self.foreign = 0
        self._bad_seqnos: set[int] = set()

    @property
    def moved_aside(self) -> list[MovedAside]:
        """Unusable store files this object moved aside (kept on disk), oldest first."""
        with self._lock:
            return list(self._file.moved_aside)

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def add_batch(
        self, batch: DriftBatch, now: float | None = None, n_classes: int = len(CLASSES)
    ) -> tuple[int, int]:
        """Commit every record of `batch`; returns (added, duplicates dropped). A label must
        index one of the `n_classes` classes of the batch's machine type.

        A record with a field out of range is refused and counted (`rejected`), neither added
        nor a duplicate; so is a record whose window id another node's row holds (`foreign`);
        a failed write is rolled back whole and raises StorageError.
        """
        received = time.time() if now is None else now
        rows = []
        refused: list[Exception] = []
        for k in batch.records:
            try:
                check_kept(k, n_classes)
                rows.append(
                    (
                        window_id(k.window),
                        k.window.machine,
                        k.window.label,
                        k.reason,
                        k.predicted,
                        float(k.score),
                        batch.node,
                        batch.model_version,
                        encode_window(k.window),
                        received,
                    )
                )
            except (ValueError, PayloadError) as exc:
                refused.append(exc)
        with self._lock:
            if refused:
                if not self.rejected:
                    log.warning(
                        "refused a record of a drift batch from %s: %s (further ones are only "
                        "counted)",
                        batch.node,
                        refused[0],
                    )
                self.rejected += len(refused)
            if not rows:
                return 0, 0
            with self._file.write() as db:
                owners = _owners(db, [r[0] for r in rows])
                mine = [r for r in rows if owners.get(r[0], batch.node) == batch.node]
                foreign = len(rows) - len(mine)
                relabeled = [(r[0], batch.node, r[2]) for r in mine if r[2] is not None]
                if relabeled:  # a maintenance label reached a window stored unlabeled (or
                    # with another label): it goes in again, as a new arrival with its label
                    db.executemany(
                        "DELETE FROM windows WHERE id = ? AND node = ? AND label IS NOT ?",
                        relabeled,
                    )
                before = db.total_changes
                db.executemany(  # ON CONFLICT, not OR IGNORE: only a duplicate id is dropped
                    "INSERT INTO windows (id, machine, label, reason, predicted, score, node, "
                    "model_version, frame, received) VALUES (?,?,?,?,?,?,?,?,?,?) "
                    "ON CONFLICT(id) DO NOTHING",
                    mine,
                )
                added = db.total_changes - before
                db.executemany(  # who gave each label: this node, in this batch, for this reason
                    "INSERT INTO label_sources (seqno, node, batch, source) SELECT seqno, node, "
                    "?, reason FROM windows WHERE id = ? AND node = ? AND label IS NOT NULL "
                    "ON CONFLICT(seqno) DO NOTHING",
                    [(batch.batch_id.hex(), r[0], batch.node) for r in mine if r[2] is not None],
                )
            if foreign:
                if not self.foreign:
                    log.warning(
                        "refused %d record(s) of a drift batch from %s: their window ids belong "
                        "to another node's stored rows (further ones are only counted)",
                        foreign,
                        batch.node,
                    )
                self.foreign += foreign
            rows = mine
        return added, len(rows) - added

    def label_senders(self, after: int, last: int) -> dict[str, dict[str, int]]:
        """Who gave the labels of store positions `after`+1..`last`: labeled windows per sending
        node and per source ("<node>" → {"<reason>": n}); rows stored before sources were kept
        count under their node with source "unrecorded"."""

        def query(db: sqlite3.Connection) -> list[tuple[str, str, int]]:
            return db.execute(
                "SELECT w.node, COALESCE(s.source, 'unrecorded'), COUNT(*) FROM windows w "
                "LEFT JOIN label_sources s ON s.seqno = w.seqno WHERE w.label IS NOT NULL "
                "AND w.seqno > ? AND w.seqno <= ? GROUP BY 1, 2",
                (after, last),
            ).fetchall()

        with self._lock:
            rows = self._file.read(query)
        out: dict[str, dict[str, int]] = {}
        for node, source, n in rows:
            out.setdefault(str(node), {})[str(source)] = int(n)
        return out

    def latest_labeled_seqno(self) -> int:
        with self._lock:
            (value,) = self._file.read(
                lambda db: db.execute(
                    "SELECT COALESCE(MAX(seqno), 0) FROM windows WHERE label IS NOT NULL"
                ).fetchone()
            )
        return int(value)

    def labeled_after(self, seqno: int) -> int:
        """How many labeled windows arrived after store position `seqno`."""
        with self._lock:
            (n,) = self._file.read(
                lambda db: db.execute(
                    "SELECT COUNT(*) FROM windows WHERE label IS NOT NULL AND seqno > ?", (seqno,)
                ).fetchone()
            )
        return int(n)

    def labeled_by_class(self, seqno: int, classes: int) -> tuple[int, ...]:
        """Labeled windows per class (0..classes-1) that arrived after store position `seqno`."""
        with self._lock:
            rows = self._file.read(
                lambda db: db.execute(
                    "SELECT label, COUNT(*) FROM windows WHERE label IS NOT NULL AND seqno > ? "
                    "GROUP BY label",
                    (seqno,),
                ).fetchall()
            )
        got = {int(k): int(n) for k, n in rows if isinstance(k, int)}
        return tuple(got.get(c, 0) for c in range(classes))

    def recent_labeled(
        self, limit: int, after: int = 0, shape: tuple[int, int] | None = None
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], int]:
        """The newest `limit` labeled windows after position `after`, oldest first.

        Returns (X (N, T, C), y (N,), highest seqno looked at). A row that does not decode,
        whose label disagrees with its frame, or whose shape is not `shape` (default: the
        newest good row's) is skipped and counted (`bad_rows`), never handed to training.
        """
        with self._lock:
            rows = self._file.read(
                lambda db: db.execute(
                    "SELECT seqno, id, label, frame FROM windows WHERE label IS NOT NULL AND "
                    "seqno > ? ORDER BY seqno DESC LIMIT ?",
                    (after, limit),
                ).fetchall()
            )
        if not rows:
            return np.zeros((0, 0, 0), np.float32), np.zeros(0, np.int64), after
        windows: list[Window] = []
        bad: dict[int, str] = {}
        for seqno, row_id, label, frame in rows:  # newest first
            try:
                window = labeled_window(row_id, label, frame)
                if shape is None:
                    shape = window.shape
                elif window.shape != shape:
                    raise ValueError(f"stored window {row_id!r} has shape {window.shape}")
            except ValueError as exc:
                bad[int(seqno)] = str(exc)
                continue
            windows.append(window)
        if bad:
            self._count_bad(bad)
        last = int(rows[0][0])
        if not windows:
            return np.zeros((0, 0, 0), np.float32), np.zeros(0, np.int64), last
        windows.reverse()
        x = np.stack([w.data for w in windows]).astype(np.float32)
        y = np.array([w.label for w in windows], np.int64)
        return x, y, last

    def recent_windows(
        self,
        limit: int,
        after: int = 0,
        shape: tuple[int, int] | None = None,
        *,
        drifting: bool = False,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """The newest `limit` windows after position `after`, labeled or not, oldest first.

        Returns (X (N, T, C), y (N,)) with y = -1 where a window has no label: what the Pis
        saw lately, for the detector statistics of the next model. Rows that do not decode or
        have another shape are skipped (recent_labeled counts them). `drifting`: only the
        machines a Pi shipped a window of for drift or out of distribution after `after`, if
        any — when one machine of sixteen drifts, its windows are the new regime, not the
        others'. (A machine in drift ships its out-of-distribution windows for that reason;
        one that is merely unsure — a developing fault — does not count.)
        """
        query = "SELECT frame FROM windows WHERE seqno > ?"
        if drifting:
            query += (
                " AND machine IN (SELECT DISTINCT machine FROM windows WHERE seqno > ? AND "
                "reason IN (?, ?))"
            )
        query += " ORDER BY seqno DESC LIMIT ?"
        with self._lock:
            rows = self._file.read(
                lambda db: db.execute(
                    query, (after, after, *DRIFTING_REASONS, limit) if drifting else (after, limit)
                ).fetchall()
            )
        if drifting and not rows:  # nothing shipped for drift: every machine's windows
            return self.recent_windows(limit, after, shape)
        data: list[npt.NDArray[np.float32]] = []
        labels: list[int] = []
        for (frame,) in reversed(rows):
            try:
                window = decode_window(frame)
            except (PayloadError, TypeError, ValueError):
                continue
            if shape is None:
                shape = window.shape
            if window.shape != shape:
                continue
            data.append(window.data)
            labels.append(-1 if window.label is None else int(window.label))
        if not data:
            return np.zeros((0, 0, 0), np.float32), np.zeros(0, np.int64)
        return np.stack(data).astype(np.float32), np.array(labels, np.int64)

    def _count_bad(self, bad: dict[int, str]) -> None:
        with self._lock:
            new = [s for s in bad if s not in self._bad_seqnos]
            if len(self._bad_seqnos) < _MAX_BAD_SEQNOS:
                self._bad_seqnos.update(new)
        if new:
            log.warning(
                "skipped %d bad stored window(s) of %s (kept in the file): %s",
                len(new),
                self.path,
                bad[new[0]],
            )

    def counts(self) -> StoreCounts:
        def query(
            db: sqlite3.Connection,
        ) -> tuple[int, int, dict[Any, Any], dict[Any, Any], dict[Any, Any]]:
            total, labeled = db.execute("SELECT COUNT(*), COUNT(label) FROM windows").fetchone()
            by_machine = dict(
                db.execute("SELECT machine, COUNT(*) FROM windows GROUP BY machine").fetchall()
            )
            by_class = dict(
                db.execute(
                    "SELECT label, COUNT(*) FROM windows WHERE label IS NOT NULL GROUP BY label"
                ).fetchall()
            )
            by_reason = dict(
                db.execute("SELECT reason, COUNT(*) FROM windows GROUP BY reason").fetchall()
            )
            return total, labeled, by_machine, by_class, by_reason

        with self._lock:
            total, labeled, by_machine, by_class, by_reason = self._file.read(query)
            extra = (self.rejected, self.foreign, len(self._bad_seqnos))
            aside = tuple(str(m.path) for m in self._file.moved_aside)
        return StoreCounts(
            int(total), int(labeled), by_machine, by_class, by_reason, *extra, moved_aside=aside
        )

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
        with self._lock, self._file.write() as db:
            db.execute(
                "INSERT INTO models (version, parent, created, accepted, reason, labels_used, "
                "champion_drift, challenger_drift, champion_original, challenger_original) "
                "VALUES (?,?,?,?,?,?,?,?,?,?)",
                (version, parent, time.time(), int(accepted), reason, labels_used, cd, xd, co, xo),
            )

    def attempt_counts(self) -> dict[str, int]:
        """Fine-tune attempts recorded in this store, by gate outcome (accepted, rejected)."""

        def query(db: sqlite3.Connection) -> list[tuple[int, int]]:
            return db.execute("SELECT accepted, COUNT(*) FROM models GROUP BY accepted").fetchall()

        with self._lock:
            rows = self._file.read(query)
        counts = {"accepted": 0, "rejected": 0}
        for accepted, n in rows:
            counts["accepted" if accepted else "rejected"] += int(n)
        return counts

    def model_history(self, limit: int = 10) -> list[dict[str, object]]:
        def query(db: sqlite3.Connection) -> list[dict[str, object]]:
            cur = db.execute("SELECT * FROM models ORDER BY attempt DESC LIMIT ?", (limit,))
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

        with self._lock:
            return self._file.read(query)
