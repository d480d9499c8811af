"""SQLite files that heal: checked at open, written in transactions, moved aside when corrupt.

The Pi's buffer of kept windows and its prediction history, and the trainer's store of labeled
windows, are one SQLite file each (WAL mode). SD cards and cheap SSDs in a plant do go bad, so
each file is opened through `SqliteFile`, which

* checks it at open: `PRAGMA quick_check`, the layout version in `user_version`, the columns of
  every table; then creates what is missing and migrates an older file, in one transaction;
* moves a file that is not a database, truncated, malformed or of another layout aside to
  `<name>.corrupt-<UTC time>` (`history.sqlite.corrupt-20250101T120000.123456Z`; its WAL goes
  along, so nothing committed is thrown away), logs where it went and how to recover from it,
  and starts a fresh one. It does so at open and whenever a later query reports corruption;
  `moved_aside` lists what it moved;
* runs every write as one `BEGIN IMMEDIATE … COMMIT` that is rolled back on *any* failure (no
  transaction is ever left open), and turns what SQLite raised, or a value it could not bind,
  into a `StorageError` whose `kind` the caller counts.

SQLite's INTEGER is signed 64-bit and the wire's seq unsigned 64-bit: `seq_to_db` stores a seq
of 2**63 or more as its two's complement (seq - 2**64, a negative number), so all of 0..2**64-1
fits while every seq below 2**63 — all of them in practice — reads back unchanged with the
sqlite3 shell or any other reader, and files written before need no migration. The price: such
huge seqs sort before the small ones, so no query may ORDER BY or compare seq in SQL (none does;
order by rowid or time).

>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "example.sqlite"
>>> _ = path.write_bytes(b"this is not a database")
>>> layout = Layout("the example file", "CREATE TABLE IF NOT EXISTS t (a INTEGER);",
...                 (("t", ("a",)),))
>>> f = SqliteFile(path, layout)  # logs an error: moved aside, fresh file started
>>> [m.path.name.startswith("example.sqlite.corrupt-") for m in f.moved_aside]
[True]
>>> with f.write() as db:
...     _ = db.execute("INSERT INTO t VALUES (?)", (seq_to_db(2**64 - 1),))
>>> f.read(lambda db: [seq_from_db(a) for (a,) in db.execute("SELECT a FROM t")])
[18446744073709551615]
>>> f.close()
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from .errors import StorageError

__all__ = [
    "Layout",
    "MovedAside",
    "SqliteFile",
    "StorageError",
    "WriteFailures",
    "atomic_write",
    "fsync_dir",
    "is_corrupt",
    "seq_from_db",
    "seq_to_db",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

_INT64 = 1 << 63
# what sqlite3 raises for a bad value: OverflowError (an int ≥ 2**63), ProgrammingError (a type
# it cannot bind, a wrong parameter count), ValueError; all become StorageError
_FAILURES = (sqlite3.Error, OverflowError, ValueError, TypeError)
_CORRUPT_CODES = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def seq_to_db(seq: int) -> int:
    """A wire seq (0..2**64-1) as a signed 64-bit SQLite INTEGER: itself below 2**63.

    >>> seq_to_db(7), seq_to_db(2**63 - 1), seq_to_db(2**63), seq_to_db(2**64 - 1)
    (7, 9223372036854775807, -9223372036854775808, -1)
    >>> seq_to_db(2**64)
    Traceback (most recent call last):
    ...
    ValueError: seq 18446744073709551616 is outside 0..2**64-1
    """
    if not 0 <= seq < 1 << 64:
        raise ValueError(f"seq {seq} is outside 0..2**64-1")
    return seq if seq < _INT64 else seq - (1 << 64)


def seq_from_db(value: int) -> int:
    """The wire seq of a stored INTEGER (inverse of `seq_to_db`).

    >>> [seq_from_db(seq_to_db(s)) for s in (0, 2**63, 2**64 - 1)] == [0, 2**63, 2**64 - 1]
    True
    """
    if not -_INT64 <= value < _INT64:
        raise ValueError(f"stored seq {value} is outside SQLite's INTEGER range")
    return value if value >= 0 else value + (1 << 64)


def is_corrupt(exc: BaseException) -> bool:
    """True for SQLite's "file is not a database" and "database disk image is malformed"."""
    code = getattr(exc, "sqlite_errorcode", None)
    return (
        isinstance(exc, sqlite3.DatabaseError)
        and isinstance(code, int)
        and (code & 0xFF in _CORRUPT_CODES)
    )


@dataclass(frozen=True, slots=True)
class Layout:
    """What one kind of file holds, and how to treat it when it is unusable.

    `schema` is idempotent SQL (CREATE … IF NOT EXISTS); `tables` names the columns each table
    must have (an existing table with other columns means another layout: moved aside);
    `migrations[i]` is SQL that turns a file of `user_version` i into i + 1, so `version` is
    len(migrations). `keep_aside` bounds the moved-aside copies kept (None: keep them all — for
    files that hold data nobody can send again). `recovery` tells the operator what to do.
    """

    what: str
    schema: str
    tables: tuple[tuple[str, tuple[str, ...]], ...]
    migrations: tuple[str, ...] = ()
    synchronous: str = "NORMAL"
    cache_kib: int = 512  # SQLite's default 2 MB page cache is a lot on a Pi
    keep_aside: int | None = None
    recovery: str = "the moved file is kept for inspection"

    def __post_init__(self) -> None:
        if self.synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous {self.synchronous!r} must be NORMAL or FULL")
        if self.keep_aside is not None and self.keep_aside < 1:
            raise ValueError("keep_aside must be ≥ 1 or None")

    @property
    def version(self) -> int:
        return len(self.migrations)


@dataclass(frozen=True, slots=True)
class MovedAside:
    """A file found unusable: where it went, why, and when (Unix time)."""

    path: Path
    reason: str
    at: float


class _UnusableFileError(Exception):
    """The file opened but is not one of ours (failed check, other layout, newer version)."""


class SqliteFile:
    """One SQLite file of a known `Layout`, healed as the module docstring says.

    Not thread-safe: its owner serialises calls under its own lock. With `heal=False` (a reader
    such as `pi_edge export` next to a running node) an unusable file raises StorageError
    ("corrupt") instead of being moved aside.
    """

    def __init__(self, path: Path, layout: Layout, *, heal: bool = True) -> None:
        self.path = path
        self.layout = layout
        self.heal = heal
        self.moved_aside: list[MovedAside] = []
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot create the directory of {layout.what} ({path.parent}): {exc}; "
                "choose a writable --state-dir",
                "open_failed",
            ) from exc
        self._db: sqlite3.Connection | None = None
        self._db = self._open()

    @property
    def db(self) -> sqlite3.Connection:
        """The open connection (reopened first if a failure closed it)."""
        if self._db is None:
            self._db = self._open()
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One transaction (BEGIN IMMEDIATE … COMMIT), rolled back on any failure.

        Raises StorageError ("write_failed", or "corrupt" after moving the file aside) for what
        SQLite or value binding raised; anything else propagates after the rollback.
        """
        db = self.db
        try:
            if db.in_transaction:  # never expected; a leftover must not swallow this write
                self._rollback(db)
                db = self.db
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                self._rollback(db)
                raise
        except _FAILURES as exc:
            raise self._failure(exc, "write to") from exc

    def read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        """`query(connection)`; StorageError ("read_failed" or "corrupt") on failure."""
        try:
            return query(self.db)
        except _FAILURES as exc:
            raise self._failure(exc, "read from") from exc

    # -- failures ------------------------------------------------------------------------------
    def _rollback(self, db: sqlite3.Connection) -> None:
        if not db.in_transaction:
            return
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error as exc:  # closing the connection discards the transaction
            log.warning("could not roll back on %s (%s); reopening it", self.path, exc)
            self._drop()

    def _drop(self) -> None:
        """Close the connection; the next call reopens it."""
        db, self._db = self._db, None
        if db is not None:
            try:
                db.close()
            except sqlite3.Error as exc:
                log.warning("closing %s failed: %s", self.path, exc)

    def _failure(self, exc: BaseException, doing: str) -> StorageError:
        if not (is_corrupt(exc) and self.heal):
            kind = "corrupt" if is_corrupt(exc) else f"{doing.split(maxsplit=1)[0]}_failed"
            return StorageError(
                f"could not {doing} {self.layout.what} at {self.path}: {exc}; check free space "
                f"and permissions of {self.path.parent}",
                kind,
            )
        self._drop()
        moved = self._move_aside(str(exc))
        self._db = self._open()
        return StorageError(
            f"{self.layout.what} at {self.path} turned out corrupt ({exc}); moved it to "
            f"{moved.path} and started a fresh one (this call was not retried); "
            f"{self.layout.recovery}",
            "corrupt",
        )

    # -- opening ---------------------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        what, path = self.layout.what, self.path
        try:
            return self._connect()
        except _UnusableFileError as bad:
            reason = str(bad)
        except sqlite3.Error as exc:
            if not is_corrupt(exc):
                raise StorageError(
                    f"cannot open {what} at {path}: {exc}; check that {path.parent} is "
                    "writable and the disk not full",
                    "open_failed",
                ) from exc
            reason = str(exc)
        if not self.heal:
            raise StorageError(
                f"{what} at {path} is unusable ({reason}); the node moves it aside when it starts",
                "corrupt",
            )
        self._move_aside(reason)
        try:
            return self._connect()
        except (_UnusableFileError, sqlite3.Error) as exc:
            raise StorageError(
                f"cannot create a fresh {what} at {path} after moving the old one aside: "
                f"{exc}; check that {path.parent} is writable",
                "open_failed",
            ) from exc

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        try:
            self._prepare(db)
        except BaseException:
            db.close()
            raise
        return db

    def _prepare(self, db: sqlite3.Connection) -> None:
        layout = self.layout
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={layout.synchronous}")
        db.execute(f"PRAGMA cache_size=-{layout.cache_kib}")
        problems = [str(row[0]) for row in db.execute("PRAGMA quick_check(3)")]
        if problems != ["ok"]:
            raise _UnusableFileError(
                "quick_check: " + " / ".join(p.splitlines()[-1] for p in problems)
            )
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if not 0 <= version <= layout.version:
            raise _UnusableFileError(
                f"layout version {version}, this build knows 0..{layout.version} (a file of a "
                "newer edgeloop, or not ours)"
            )
        for table, columns in layout.tables:
            found = tuple(str(row[1]) for row in db.execute(f"PRAGMA table_info({table})"))
            if found and found != columns:
                raise _UnusableFileError(
                    f"table {table} has columns {found}, this build expects {columns}"
                )
        script = "".join(layout.migrations[version:])
        try:
            db.executescript(
                f"BEGIN IMMEDIATE;\n{layout.schema}\n{script}\n"
                f"PRAGMA user_version={layout.version};\nCOMMIT;"
            )
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if exc.sqlite_errorcode == sqlite3.SQLITE_ERROR:  # our own SQL failed on this file
                raise _UnusableFileError(
                    f"its tables do not take this build's schema ({exc})"
                ) from exc
            raise

    def _move_aside(self, reason: str) -> MovedAside:
        # microseconds: names sort in the order the files were moved (see _prune_aside)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        try:
            os.replace(self.path, target)
            wal = Path(f"{self.path}-wal")
            if wal.exists():  # committed rows not yet checkpointed live here: keep them
                os.replace(wal, Path(f"{target}-wal"))
            Path(f"{self.path}-shm").unlink(missing_ok=True)  # an index SQLite rebuilds
        except OSError as exc:
            raise StorageError(
                f"{self.layout.what} at {self.path} is unusable ({reason}) and could not be "
                f"moved aside: {exc}; move it away by hand and start again",
                "open_failed",
            ) from exc
        moved = MovedAside(target, reason, time.time())
        self.moved_aside.append(moved)
        log.error(
            "%s at %s was unusable (%s); moved it to %s and started a fresh one; %s",
            self.layout.what,
            self.path,
            reason,
            target,
            self.layout.recovery,
        )
        self._prune_aside()
        return moved

    def _prune_aside(self) -> None:
        keep = self.layout.keep_aside
        if keep is None:
            return
        copies = sorted(
            p
            for p in self.path.parent.glob(f"{self.path.name}.corrupt-*")
            if not p.name.endswith(("-wal", "-shm"))
        )
        for old in copies[:-keep]:
            for p in (old, Path(f"{old}-wal")):
                p.unlink(missing_ok=True)
            log.info("deleted %s: only the newest %d moved-aside copies are kept", old, keep)


def fsync_dir(path: Path) -> None:
    """fsync a directory, so that a rename in it survives a power cut (best effort)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old or the new file, never a part."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


class WriteFailures:
    """Rows of failed (rolled back) writes per kind, shared by a node's stores: counted for its
    status and logged at most every `log_every_s`; the caller carries on (a corrupt file was
    moved aside and replaced already)."""

    def __init__(self, log: logging.Logger, where: Path, log_every_s: float = 10.0) -> None:
        self._log = log
        self.where = where
        self._log_every_s = log_every_s
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._last_log = -log_every_s

    def add(self, kind: str, what: str, exc: Exception, rows: int) -> None:
        """Count `rows` lost to `exc` writing `what` (e.g. "the prediction history")."""
        now = time.monotonic()
        with self._lock:
            self._counts[kind] = self._counts.get(kind, 0) + rows
            due = now - self._last_log >= self._log_every_s
            if due:
                self._last_log = now
        if due:
            self._log.error(
                "could not write %d row(s) to %s (%s): %s; check free space and permissions of %s",
                rows,
                what,
                kind,
                exc,
                self.where,
            )

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)
