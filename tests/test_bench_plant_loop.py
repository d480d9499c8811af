"""bench.drift_recovery's realistic-plant rows: their report rendering and the pure helpers.

No live loop runs here (bench.drift_recovery --plant --quick measures it); the rows are JSON in
the shape drift_recovery writes, with figures chosen so that one row meets every target and the
other misses them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from bench import report
from bench._plant_loop import PLANT_MODES, eval_streams, plant_table, recovered
from tests.test_bench_report import _checks, _row, raw_fixture


def _plant_row(mode: str, **over: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "mode": mode,
        "detect_s": 3.0,
        "first_batch_s": 3.5,
        "live_s": 20.0,
        "labels": 48,
        "before": [0.41, 0.90],  # old model: drifted, undrifted macro-F1
        "after": [0.89, 0.91],
        "gate": "ok",
        "cleared_s": 45.0,
        "params": {},
        "plant": {
            "machines": ["m03"],
            "false_drift_alarms": 0,
            "false_machine_drift_alarms": 0,
            "warmup_s": 60.0,
        },
    }
    row.update(over)
    return row


def _with_plant(tmp: Path, rows: list[dict[str, Any]]) -> report.Report:
    raw = raw_fixture(tmp)
    drift = report.load(raw)["drift_recovery"]
    drift.update(plant_initial_train_s=14.0, plant_loop={"time_scale": 60.0, "warmup_s": 60.0,
                 "eval_hours": 48.0}, plant_modes=rows)  # fmt: skip
    (raw / "drift_recovery.json").write_text(json.dumps(drift))
    return report.build(report.load(raw))


def test_plant_rows_get_their_own_table_scored_by_macro_f1(tmp_path: Path) -> None:
    bad = _plant_row(
        "plant-step-all",
        live_s=None,
        labels=None,
        after=None,
        cleared_s=None,
        gate="challenger worse on the original holdout",
        plant={"machines": ["all"], "false_drift_alarms": 2, "false_machine_drift_alarms": 5,
               "warmup_s": 60.0, "attempts": [{"t_s": -30.0}, {"t_s": 12.0}],
               "failed_finetunes": [[-2.0, "int8"], [-1.0, "int8"], [5.0, "int8"]]},
    )  # fmt: skip
    rep = _with_plant(tmp_path, [_plant_row("plant-step"), bad])
    md = rep.markdown
    assert "### On the realistic plant" in md
    good = _row(md, "plant-step m03")
    assert good.endswith("| ✓ |")
    assert "0.410 → 0.890 ✓" in good and "0.900 → 0.910 ✓" in good and "45.0 ✓" in good
    worse = _row(md, "plant-step-all all")
    assert worse.endswith("| ✗ |") and "2 / 5 in 60 s ✗" in worse and "0.410 → — ✗" in worse
    assert "| 1 (+2 failed) |" in worse and "| 0 (+0 failed) |" in good
    ok = _checks(rep)
    assert ok["drift recovery: plant-step: drifted macro-F1 after"] is True  # 0.89 ≥ 0.88
    assert ok["drift recovery: plant-step: false drift alarms before onset"] is True
    assert ok["drift recovery: plant-step-all: new model"] is False
    assert ok["drift recovery: plant-step-all: false drift alarms before onset"] is False
    assert ok["drift recovery: plant-step-all: onset → drift cleared"] is False


def test_within_two_points_of_the_undrifted_model_is_the_line(tmp_path: Path) -> None:
    short = _plant_row("plant-gain", after=[0.879, 0.90])  # 0.90 − 0.02 = 0.88: just short
    rep = _with_plant(tmp_path, [short])
    assert _checks(rep)["drift recovery: plant-gain: drifted macro-F1 after"] is False
    assert recovered(short) is False and recovered(_plant_row("x")) is True
    assert "0.410 → 0.879 ✗" in _row(rep.markdown, "plant-gain m03")


def test_a_run_without_plant_rows_shows_no_plant_table(tmp_path: Path) -> None:
    rep = report.build(report.load(raw_fixture(tmp_path)))
    assert "On the realistic plant" not in rep.markdown
    assert not any("plant-" in c.measure for c in rep.checks)


def test_bench_table_prints_one_line_per_row() -> None:
    lines = plant_table([_plant_row("plant-step"), _plant_row("plant-gain", after=None)])
    rows = lines.splitlines()[2:]
    assert len(rows) == 2
    assert rows[0].endswith("| ✓ |") and rows[1].endswith("| ✗ (no new model) |")


def test_eval_streams_share_the_fault_timeline_and_differ_by_the_drift() -> None:
    s = eval_streams(PLANT_MODES["plant-step"], 10.0, hours=2.0, seed=5)
    assert s.drifted.shape == s.undrifted.shape == (2 * 120 * 16, 60, 4)
    assert len(s.true) == len(s.drifted)
    # step: seed 000's drift regime, so the channels' means move; same seed, same faults
    gap = np.abs(s.drifted.mean(axis=(0, 1)) - s.undrifted.mean(axis=(0, 1)))
    assert gap.max() > 0.5
    again = eval_streams(PLANT_MODES["plant-step"], 10.0, hours=2.0, seed=5)
    assert np.array_equal(again.drifted, s.drifted) and np.array_equal(again.true, s.true)


def test_eval_streams_drift_only_the_machines_the_command_names() -> None:
    one = eval_streams(PLANT_MODES["plant-step"], 10.0, hours=0.5, seed=5)  # m03 only
    every = eval_streams(PLANT_MODES["plant-step-all"], 10.0, hours=0.5, seed=5)
    machine = np.tile(np.arange(16), len(one.true) // 16)  # tick-major, machines in id order
    moved = np.abs(one.drifted - one.undrifted).max(axis=(1, 2)) > 0
    assert moved[machine == 2].all()  # m03
    assert not moved[machine != 2].any()
    assert np.abs(every.drifted - every.undrifted).max(axis=(1, 2)).min() > 0
