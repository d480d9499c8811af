"""nodekit.storage: a SQLite file is checked at open, moved aside when unusable, and every write
is one transaction that a failure rolls back whole."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from nodekit.errors import StorageError
from nodekit.storage import Layout, SqliteFile, seq_from_db, seq_to_db

LAYOUT = Layout(
    "the test file",
    "CREATE TABLE IF NOT EXISTS t (k INTEGER, v BLOB);",
    (("t", ("k", "v")),),
    migrations=("",),
    cache_kib=64,  # small, so that a later query has to read pages from disk
)


def _healthy(path: Path, rows: int = 4000) -> bytes:
    """A checkpointed file of `rows` rows of 500 random bytes; returns its content."""
    f = SqliteFile(path, LAYOUT)
    with f.write() as db:
        db.executemany("INSERT INTO t VALUES (?, ?)", ((i, os.urandom(500)) for i in range(rows)))
    f.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    f.close()
    return path.read_bytes()


def _count(f: SqliteFile) -> int:
    (n,) = f.read(lambda db: db.execute("SELECT COUNT(*) FROM t").fetchone())
    return int(n)


@pytest.mark.parametrize("seq", [0, 1, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1])
def test_every_wire_seq_round_trips_through_an_sqlite_integer(tmp_path: Path, seq: int) -> None:
    f = SqliteFile(tmp_path / "s.sqlite", LAYOUT)
    with f.write() as db:
        db.execute("INSERT INTO t VALUES (?, NULL)", (seq_to_db(seq),))
    f.close()
    again = SqliteFile(tmp_path / "s.sqlite", LAYOUT)
    (stored,) = again.read(lambda db: db.execute("SELECT k FROM t").fetchone())
    assert seq_from_db(stored) == seq
    assert (stored == seq) == (seq < 2**63)  # everyday seqs read back as themselves


def test_a_failed_write_rolls_back_whole_and_the_next_one_works(tmp_path: Path) -> None:
    f = SqliteFile(tmp_path / "w.sqlite", LAYOUT)
    failing = pytest.raises(StorageError, match="could not write to the test file")
    with failing as caught, f.write() as db:
        db.execute("INSERT INTO t VALUES (1, NULL)")
        db.execute("INSERT INTO t VALUES (?, NULL)", (2**64 - 1,))  # not an SQLite INTEGER
    assert caught.value.kind == "write_failed"
    assert not f.db.in_transaction
    assert _count(f) == 0  # the first insert went with the failed one
    with f.write() as db:
        db.execute("INSERT INTO t VALUES (2, NULL)")
    assert _count(f) == 1


def test_an_error_that_is_not_storage_still_rolls_back_and_propagates(tmp_path: Path) -> None:
    f = SqliteFile(tmp_path / "w.sqlite", LAYOUT)
    with pytest.raises(KeyError), f.write() as db:
        db.execute("INSERT INTO t VALUES (1, NULL)")
        raise KeyError("a bug in the caller")
    assert not f.db.in_transaction and _count(f) == 0


def test_a_constraint_failing_mid_batch_keeps_none_of_the_batch(tmp_path: Path) -> None:
    f = SqliteFile(tmp_path / "w.sqlite", LAYOUT)
    f.db.execute(
        "CREATE TRIGGER full BEFORE INSERT ON t WHEN NEW.k = 5 "
        "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
    )
    with pytest.raises(StorageError, match="disk is full"), f.write() as db:
        db.executemany("INSERT INTO t VALUES (?, NULL)", ((i,) for i in range(10)))
    assert not f.db.in_transaction and _count(f) == 0


def _garbage(data: bytes) -> bytes:
    return os.urandom(len(data))


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _zeroed_pages(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(64 * 1024) + data[middle + 64 * 1024 :]


def _text(data: bytes) -> bytes:
    return b"history\n" * 100


@pytest.mark.parametrize("damage", [_garbage, _truncated, _zeroed_pages, _text])
def test_a_damaged_file_is_moved_aside_intact_and_a_fresh_one_works(
    tmp_path: Path, damage: object
) -> None:
    path = tmp_path / "d.sqlite"
    bad = damage(_healthy(path))  # type: ignore[operator]
    path.write_bytes(bad)
    f = SqliteFile(path, LAYOUT)
    (moved,) = f.moved_aside
    assert moved.path.name.startswith("d.sqlite.corrupt-")
    assert moved.path.read_bytes() == bad  # kept exactly as found
    assert _count(f) == 0
    with f.write() as db:
        db.execute("INSERT INTO t VALUES (1, NULL)")
    assert _count(f) == 1


def test_a_file_of_another_layout_or_a_newer_version_is_moved_aside(tmp_path: Path) -> None:
    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE t (something TEXT)")
    db.commit()
    db.close()
    assert "columns" in SqliteFile(other, LAYOUT).moved_aside[0].reason
    newer = tmp_path / "newer.sqlite"
    db = sqlite3.connect(newer)
    db.execute("PRAGMA user_version = 7")
    db.close()
    assert "layout version 7" in SqliteFile(newer, LAYOUT).moved_aside[0].reason


def test_an_older_file_is_migrated_not_moved(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (k INTEGER, v BLOB)")
    db.execute("INSERT INTO t VALUES (42, NULL)")
    db.commit()
    db.close()
    f = SqliteFile(path, LAYOUT)
    assert f.moved_aside == [] and _count(f) == 1
    assert f.read(lambda db: db.execute("PRAGMA user_version").fetchone()) == (1,)


def test_corruption_found_by_a_later_query_heals_too(tmp_path: Path) -> None:
    path = tmp_path / "late.sqlite"
    _healthy(path)
    f = SqliteFile(path, LAYOUT)  # passes its check; then the disk goes bad under it
    with open(path, "r+b") as fh:
        fh.seek(4096 * 3)
        fh.write(os.urandom(4096 * 200))
    with pytest.raises(StorageError, match="turned out corrupt") as caught:
        f.read(lambda db: db.execute("SELECT SUM(length(v)) FROM t").fetchone())
    assert caught.value.kind == "corrupt"
    assert len(f.moved_aside) == 1 and f.moved_aside[0].path.exists()
    with f.write() as db:
        db.execute("INSERT INTO t VALUES (1, NULL)")
    assert _count(f) == 1


def test_without_heal_a_damaged_file_is_refused_and_left_where_it_is(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    path.write_bytes(b"not sqlite" * 50)
    with pytest.raises(StorageError, match="unusable") as caught:
        SqliteFile(path, LAYOUT, heal=False)
    assert caught.value.kind == "corrupt"
    assert path.read_bytes() == b"not sqlite" * 50
    assert list(tmp_path.glob("*.corrupt-*")) == []


def test_keep_aside_bounds_the_copies_kept(tmp_path: Path) -> None:
    layout = Layout(LAYOUT.what, LAYOUT.schema, LAYOUT.tables, keep_aside=2)
    path = tmp_path / "k.sqlite"
    for i in range(4):
        path.write_bytes(b"garbage %d " % i * 100)
        SqliteFile(path, layout).close()
    kept = sorted(p.name for p in tmp_path.glob("k.sqlite.corrupt-*"))
    assert len(kept) == 2
    assert (tmp_path / kept[-1]).read_bytes() == b"garbage 3 " * 100


def test_an_unwritable_place_is_a_clear_open_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a directory")
    with pytest.raises(StorageError, match="writable") as caught:
        SqliteFile(blocker / "x.sqlite", LAYOUT)
    assert caught.value.kind == "open_failed"
