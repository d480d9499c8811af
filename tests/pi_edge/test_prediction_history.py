"""Prediction history: bounded retention and CSV/JSON-lines export."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from pi_edge.history import PredictionHistory, export, parse_duration, row_of
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
