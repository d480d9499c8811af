"""Prediction history: bounded retention and CSV/JSON-lines export."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import time
from pathlib import Path

import pytest

from nodekit.errors import StorageError
from pi_edge.report.history_store import (
    _SCHEMA,
    COLUMNS,
    PredictionHistory,
    export,
    parse_duration,
    row_of,
)
from pi_edge.report.history_writer import HistoryRecorder
from protocol import Prediction


def pred(seq: int, published_s: float, truth: str | None = None) -> Prediction:
    return Prediction(
        "m01",
        seq,
        "normal",
        0.9,
        (0.9, 0.05, 0.03, 0.02),
        2,
        truth=truth,
        timestamps_ns={"published": int(published_s * 1e9)},
        latency_ms={"total": 1.5},
    )


def test_export_since_keeps_only_recent_rows_as_csv(tmp_path: Path) -> None:
    hist = PredictionHistory(tmp_path / "h.sqlite")
    hist.add([row_of(pred(i, 1000.0 + i * 600)) for i in range(10)])  # one every 10 minutes
    rows = list(hist.rows(since_s=parse_duration("1h"), now=1000.0 + 9 * 600))
    assert [r[2] for r in rows] == [3, 4, 5, 6, 7, 8, 9]
    parsed = list(csv.DictReader(io.StringIO(export(rows, "csv"))))
    assert parsed[0]["machine"] == "m01" and parsed[0]["seq"] == "3"
    assert float(parsed[-1]["latency_ms"]) == 1.5


def test_retention_bounds_rows_by_count_and_age(tmp_path: Path) -> None:
    hist = PredictionHistory(tmp_path / "h.sqlite", max_rows=5, max_age_s=3600)
    hist.add([row_of(pred(i, 10_000.0 + i)) for i in range(8)])
    hist.prune(now=10_010.0)
    assert [r[2] for r in hist.rows()] == [3, 4, 5, 6, 7]
    hist.prune(now=10_000.0 + 3600 + 5.5)
    assert [r[2] for r in hist.rows()] == [6, 7]


def test_jsonl_export_round_trips_truth(tmp_path: Path) -> None:
    hist = PredictionHistory(tmp_path / "h.sqlite")
    hist.add([row_of(pred(1, 5.0, truth="pump_fault"))])
    line = json.loads(export(hist.rows(), "jsonl"))
    assert line["truth"] == "pump_fault" and line["model_version"] == 2


def test_bad_duration_and_format_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="number followed by"):
        parse_duration("an hour")
    with pytest.raises(ValueError, match="csv or jsonl"):
        export([], "xml")


# -- storage that heals (issue 11, finding 7) ---------------------------------------------------
def _row(seq: int, **change: object) -> tuple[object, ...]:
    row = dict(zip(COLUMNS, row_of(pred(0, 100.0)), strict=True))
    row.update(seq=seq, **change)
    return tuple(row.values())


def test_the_largest_wire_seq_round_trips_through_history_and_export(tmp_path: Path) -> None:
    hist = PredictionHistory(tmp_path / "h.sqlite")
    assert hist.add([_row(2**64 - 1), _row(2**63), _row(5)]) == 3
    hist.close()
    again = PredictionHistory(tmp_path / "h.sqlite")
    assert [r[2] for r in again.rows()] == [2**64 - 1, 2**63, 5]
    parsed = list(csv.DictReader(io.StringIO(export(again.rows(), "csv"))))
    assert parsed[0]["seq"] == "18446744073709551615"


def test_a_write_failing_mid_transaction_leaves_nothing_open_and_the_next_write_works(
    tmp_path: Path,
) -> None:
    hist = PredictionHistory(tmp_path / "h.sqlite")
    db = hist._file.db
    db.execute(
        "CREATE TRIGGER full BEFORE INSERT ON predictions WHEN NEW.seq = 3 "
        "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
    )
    with pytest.raises(StorageError, match="disk is full"):
        hist.add([_row(i) for i in range(5)])
    assert not hist._file.db.in_transaction
    assert hist.count() == 0  # rows 0..2, inserted before the failure, went with it
    db.execute("DROP TRIGGER full")
    assert hist.add([_row(i) for i in range(5)]) == 5
    assert hist.count() == 5


def test_a_row_out_of_range_is_refused_and_counted_and_the_others_are_written(
    tmp_path: Path,
) -> None:
    hist = PredictionHistory(tmp_path / "h.sqlite")
    rows = [
        _row(1),
        _row(-1),
        _row(2**64),
        _row(2, confidence=float("nan")),
        _row(3, machine="m/01"),
        _row(4, ts=float("inf")),
        _row(5),
    ]
    assert hist.add(rows) == 2
    assert hist.rejected == 5
    assert [r[2] for r in hist.rows()] == [1, 5]


def test_bad_stored_rows_are_skipped_and_counted_when_read(tmp_path: Path) -> None:
    hist = PredictionHistory(tmp_path / "h.sqlite")
    hist.add([_row(1)])
    hist._file.db.execute(  # what a bad disk or another writer could leave behind
        "INSERT INTO predictions VALUES (5.0, 'bad id/', 2, 'normal', 0.9, NULL, 2, 'ok', 0, 1.0),"
        " (6.0, 'm01', 'three', 'normal', 0.9, NULL, 2, 'ok', 0, 1.0)"
    )
    assert [r[2] for r in hist.rows()] == [1]
    assert hist.bad_rows == 2


@pytest.mark.parametrize(
    "content", [b"\x00garbage" * 512, b"SQLite format 3\x00" + b"\xff" * 2000], ids=["junk", "head"]
)
def test_a_corrupt_history_file_is_moved_aside_and_a_fresh_one_works(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "history.sqlite"
    path.write_bytes(content)
    hist = PredictionHistory(path)
    (moved,) = hist.moved_aside
    assert moved.path.name.startswith("history.sqlite.corrupt-")
    assert moved.path.read_bytes() == content
    assert hist.add([_row(7)]) == 1 and [r[2] for r in hist.rows()] == [7]


def test_a_history_of_another_schema_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE predictions (ts REAL, machine TEXT)")
    db.commit()
    db.close()
    hist = PredictionHistory(path)
    assert "columns" in hist.moved_aside[0].reason
    assert hist.add([_row(1)]) == 1


def test_a_history_written_by_the_previous_build_opens_with_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    db = sqlite3.connect(path)
    db.executescript(_SCHEMA)  # layout 0: the same table, no user_version
    db.execute(f"INSERT INTO predictions VALUES ({','.join('?' * 10)})", _row(123))
    db.commit()
    db.close()
    hist = PredictionHistory(path)
    assert hist.moved_aside == []
    assert [r[2] for r in hist.rows()] == [123]


def test_export_refuses_a_corrupt_history_without_moving_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pi_edge.__main__ import main

    path = tmp_path / "history.sqlite"
    path.write_bytes(b"not a database" * 100)
    assert main(["export", "--state-dir", str(tmp_path)]) == 1
    assert path.read_bytes() == b"not a database" * 100  # a running node may own it
    assert list(tmp_path.glob("*.corrupt-*")) == []


def test_the_recorder_counts_a_failed_write_and_writes_the_next_rows(tmp_path: Path) -> None:
    hist = PredictionHistory(tmp_path / "h.sqlite")
    hist._file.db.execute(
        "CREATE TRIGGER full BEFORE INSERT ON predictions WHEN NEW.seq = 13 "
        "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
    )
    failed: list[tuple[str, int]] = []
    recorder = HistoryRecorder(hist, lambda exc, n: failed.append((str(exc), n)), flush_s=0.01)
    recorder.start()
    try:
        recorder.record([_row(2**64 - 1), _row(13)])
        deadline = time.monotonic() + 5
        while not failed and time.monotonic() < deadline:
            time.sleep(0.01)
        recorder.record([_row(14), _row(15)])
        while hist.count() < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert recorder.alive
    finally:
        recorder.stop()
    assert len(failed) == 1 and failed[0][1] == 2 and "disk is full" in failed[0][0]
    assert [r[2] for r in hist.rows()] == [14, 15]
