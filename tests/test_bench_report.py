"""bench/report.py: the benches' JSON in, Markdown with computed ✓/✗ and valid PNGs out.

No bench runs here: the fixtures are JSON in the shapes the benches write (bench.models,
bench.edge, bench.demo_load, bench.codec, bench.fleet, bench.drift_recovery, and the runner's
meta.json), with figures chosen so that some targets are met and some are not.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from bench import report
from bench.__main__ import fleet_rows_from_log
from bench.edge import QUANTILES

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _edge_row(target: str, mode: str, rate: float, p99: float, rss: float, lost: int = 0) -> Any:
    return {
        "target": target,
        "mode": mode,
        "sent": 5000,
        "received": 5000 - lost,
        "rate": rate,
        "p50_ms": p99 / 2,
        "p99_ms": p99,
        "peak_rss_mb": rss,
        "inbox_drops": 0 if target == "pi_edge" else None,
        "cpu_us": 200.0,
        "quantiles_ms": [p99 * q / 99 for q in QUANTILES],
    }


def raw_fixture(tmp: Path, **over: Any) -> Path:
    """A raw dir like `python -m bench` writes; `over` replaces whole files' contents."""
    files: dict[str, Any] = {
        "models.json": [
            {
                "arch": "seed",
                "params": 603844,
                "tflite_bytes": 635864,
                "us_b1": 105.0,
                "us_b32": 106.0,
                "infer_before": 1.0,
                "drift_before": 0.76,
                "infer_after": 1.0,
                "drift_after": 1.0,
                "train_s": 50.0,
                "epochs_run": 15,
                "epochs_max": 15,
                "finetune_s": 30.0,
                "n_labels": 48,
                "n_replay": 1000,
                "device": "CPU",
            },
            {
                "arch": "compact",
                "params": 2408,
                "tflite_bytes": 10600,
                "us_b1": 5.9,
                "us_b32": 2.9,
                "infer_before": 1.0,
                "drift_before": 0.87,
                "infer_after": 1.0,
                "drift_after": 0.97,
                "train_s": 23.0,
                "epochs_run": 40,
                "epochs_max": 40,
                "finetune_s": 11.5,
                "n_labels": 48,
                "n_replay": 1000,
                "device": "CPU",
            },
        ],
        "edge.json": [
            _edge_row("ceiling", "max", 18000, 1.5, 40),
            _edge_row("ceiling", "1000/s", 1000, 1.5, 40),
            _edge_row("ceiling-threaded", "max", 17000, 1.5, 41),
            _edge_row("ceiling-threaded", "1000/s", 1000, 1.6, 41),
            _edge_row("pi_edge", "max", 16000, 2.0, 70),
            _edge_row("pi_edge", "1000/s", 1000, 6.0, 72),  # p99 over 5 ms: ✗
        ],
        "demo_load.json": {
            "rows": [
                {"target": t, "round_": 0, "predicted": 3200, "cpu_us": c, "rss_mb": r}
                for t, c, r in (
                    ("ceiling", 200.0, 40.0),
                    ("ceiling-threaded", 210.0, 41.0),
                    ("pi_edge", 230.0, 60.0),
                    ("pi_edge+dashboard", 300.0, 66.0),
                )
            ],
            "medians": {
                "ceiling": [200.0, 40.0],
                "ceiling-threaded": [210.0, 41.0],
                "pi_edge": [230.0, 60.0],  # 1.15× ✓, 60 MB ✓
                "pi_edge+dashboard": [300.0, 66.0],  # 1.5× ✗, 66 MB ✗
            },
        },
        "codec.json": [
            {"form": "binary", "bytes": 995, "encode_us": 2.4, "decode_us": 5.4},
            {"form": "json", "bytes": 4796, "encode_us": 161.0, "decode_us": 160.0},
        ],
        "fleet.json": [
            {
                "nodes": 1,
                "sent": 15000,
                "received": 15000,
                "rate": 9000.0,
                "duplicated": 0,
                "kill_takeover_s": float("nan"),
                "kill_gaps": 0,
                "stop_takeover_s": float("nan"),
                "stop_gaps": 0,
            },
            {
                "nodes": 2,
                "sent": 15000,
                "received": 15000,
                "rate": 8000.0,
                "duplicated": 0,
                "kill_takeover_s": 1.2,
                "kill_gaps": 10,
                "stop_takeover_s": 7.5,
                "stop_gaps": 900,
            },
            {
                "nodes": 3,
                "sent": 15000,
                "received": 15002,
                "rate": 7000.0,
                "duplicated": 2,
                "kill_takeover_s": 1.1,
                "kill_gaps": 8,
                "stop_takeover_s": 12.0,
                "stop_gaps": 1200,
            },
        ],
        "drift_recovery.json": {
            "initial_train_s": 25.0,
            "timeout_s": 50.0,
            "modes": [
                {
                    "mode": "step",
                    "detect_s": 0.2,
                    "first_batch_s": 0.2,
                    "live_s": 17.0,
                    "labels": 48,
                    "before": [0.988, 1.0],
                    "after": [0.995, 1.0],
                    "gate": "ok",
                    "params": {},
                },
                {
                    "mode": "gain",
                    "detect_s": 0.3,
                    "first_batch_s": 0.3,
                    "live_s": 70.0,
                    "labels": 48,
                    "before": [0.76, 1.0],
                    "after": [1.0, 1.0],
                    "gate": "ok",
                    "params": {"vibration": 1.6, "power": 1.15},
                },
                {
                    "mode": "ramp",
                    "detect_s": 29.1,
                    "first_batch_s": 29.1,
                    "live_s": None,
                    "labels": None,
                    "before": [1.0, 1.0],
                    "after": None,
                    "gate": "champion still exact",
                    "params": {"duration_s": 300.0},
                },
            ],
        },
        "meta.json": {
            "started": "2026-11-24 03:00 UTC",
            "commit": "abc1234",
            "dirty": False,
            "machine": {"cpu": "AMD EPYC", "cores": 2, "memory_gb": 8.0, "python": "3.11.9"},
            "total_s": 840.0,
            "steps": [
                {
                    "name": "codec",
                    "argv": ["python", "-m", "bench.codec"],
                    "seconds": 1.0,
                    "rc": 0,
                    "error": "",
                },
            ],
        },
    }
    files.update(over)
    raw = tmp / "raw"
    raw.mkdir()
    for name, content in files.items():
        if content is not None:
            (raw / name).write_text(json.dumps(content))
    return raw


def _row(md: str, starts: str) -> str:
    """The Markdown table row whose first cell starts with `starts`."""
    rows = [line for line in md.splitlines() if line.startswith(f"| {starts}")]
    assert rows, f"no row starting {starts!r} in:\n{md}"
    return rows[0]


def _checks(rep: report.Report) -> dict[str, bool]:
    return {f"{c.section}: {c.measure}": c.ok for c in rep.checks}


def test_marks_follow_the_measurements_against_their_targets(tmp_path: Path) -> None:
    rep = report.build(report.load(raw_fixture(tmp_path)))
    ok = _checks(rep)
    # models: 17.8× ≥ 10× ✓; compact drift after FT 0.97 < 0.98 ✗
    assert ok["models: compact µs/window vs seed 000 (batch 1)"] is True
    assert ok["models: compact drift_infer after fine-tuning"] is False
    assert ok["models: compact training time"] is True
    assert "17.8× less" in rep.markdown
    assert _row(rep.markdown, "drift_infer after fine-tuning").endswith("| ✗ |")
    # edge: 16,000 / 18,000 = 0.89× ✓; p99 6 ms ✗; RSS 72 ≤ 80 ✓
    assert ok["edge: pi_edge flat out / faster ceiling"] is True
    assert ok["edge: pi_edge p99 at 1000/s"] is False
    assert ok["edge: pi_edge peak RSS flat out"] is True
    assert "0.89×" in _row(rep.markdown, "flat out: windows/s")
    assert _row(rep.markdown, "1000/s: p99 ms").endswith("| ✗ |")
    # demo load: 1.15× ✓ and 60 MB ✓; dashboard 1.50× ✗ and 66 MB ✗
    assert _row(rep.markdown, "pi_edge |").count("✓") == 2
    assert _row(rep.markdown, "pi_edge+dashboard").count("✗") == 2
    assert "1.50×" in _row(rep.markdown, "pi_edge+dashboard")
    # fleet: 2 nodes all met; 3 nodes: 2 duplicates and a 12 s takeover ✗
    assert _row(rep.markdown, "2 |").endswith("| ✓ |")
    three = _row(rep.markdown, "3 |")
    assert three.endswith("| ✗ |") and "12.00 s ✗" in three and "2 ✗" in three
    # drift: step ✓; gain live 70 s > 60 ✗; ramp: no model needed, old one exact ✓
    assert _row(rep.markdown, "step").endswith("| ✓ |")
    assert "70.0 ✗" in _row(rep.markdown, "gain")
    assert _row(rep.markdown, "ramp").endswith("| ✓ |")
    # the run: 840 s < 15 min ✓
    assert ok["make bench: make bench wall time"] is True
    met = sum(c.ok for c in rep.checks)
    assert f"targets met: **{met} of {len(rep.checks)}**" in rep.markdown
    assert "- edge: pi_edge p99 at 1000/s = 6.00 ms (target pi_edge ≤ 5 ms)" in rep.markdown


def test_a_missing_bench_is_reported_not_measured_and_counts_as_not_met(tmp_path: Path) -> None:
    meta = {
        "total_s": 1000.0,
        "steps": [{"name": "fleet", "argv": [], "seconds": 360, "rc": -1,
                   "error": "stopped after its 360 s limit"}],
    }  # fmt: skip
    raw = raw_fixture(tmp_path, **{"fleet.json": None, "meta.json": meta})
    rep = report.build(report.load(raw))
    ok = _checks(rep)
    assert ok["fleet: fleet bench"] is False
    assert "**Not measured:** stopped after its 360 s limit" in rep.markdown
    assert ok["make bench: make bench wall time"] is False  # 1,000 s ≥ 15 min
    assert "fleet.png" not in rep.figures


def test_write_produces_markdown_and_valid_pngs_linked_from_it(tmp_path: Path) -> None:
    raw = raw_fixture(tmp_path)
    out, plots = tmp_path / "results.md", tmp_path / "plots"
    plots.mkdir()
    (plots / "fleet.png").write_bytes(b"stale")  # rewritten, not kept
    report.write(raw, out, plots)
    md = out.read_text()
    linked = re.findall(r"\]\(plots/([a-z_]+\.png)\)", md)
    assert sorted(linked) == sorted(report.PLOTTERS)
    for name in linked:
        data = (plots / name).read_bytes()
        assert data.startswith(PNG_MAGIC), name
        assert len(data) > 5000, f"{name} is suspiciously small ({len(data)} bytes)"


def test_fleet_rows_are_read_from_its_printed_results() -> None:
    text = (
        "noise\n"
        "FleetResult(nodes=2, sent=15000, received=14990, rate=8123.4, duplicated=0, "
        "kill_takeover_s=1.25, kill_gaps=3, stop_takeover_s=inf, stop_gaps=-1)\n"
    )
    (row,) = fleet_rows_from_log(text)
    assert row["nodes"] == 2 and row["received"] == 14990 and row["kill_takeover_s"] == 1.25
    assert row["stop_takeover_s"] == float("inf") and row["stop_gaps"] == -1


def test_a_partial_run_makes_no_claim_about_the_fifteen_minutes(tmp_path: Path) -> None:
    meta = {"total_s": 100.0, "only": "edge", "steps": []}
    rep = report.build(report.load(raw_fixture(tmp_path, **{"meta.json": meta})))
    assert "make bench: make bench wall time" not in _checks(rep)
    assert "**a partial run** (`--only edge`)" in rep.markdown


def test_the_machine_types_section_marks_the_rss_of_one_more_type(tmp_path: Path) -> None:
    rows = [
        {"type": "default", "shape": [60, 4], "classes": 4, "quantization": "int8",
         "us_per_window_b1": 30.5, "us_per_window_b16": 4.2, "invoke_us_per_window_b1": 20.0,
         "invoke_us_per_window_b16": 3.0},
        {"type": "press", "shape": [32, 3], "classes": 3, "quantization": "int8",
         "us_per_window_b1": 25.0, "us_per_window_b16": 3.1, "invoke_us_per_window_b1": 15.0,
         "invoke_us_per_window_b16": 2.0},
    ]  # fmt: skip
    for extra, ok in ((3.25, True), (9.0, False)):
        d = {"rows": rows, "rss_first_type_mb": 4.0, "rss_extra_type_mb": extra}
        (tmp_path / str(extra)).mkdir()
        raw = raw_fixture(tmp_path / str(extra), **{"machine_types.json": d})
        rep = report.build(report.load(raw))
        assert _checks(rep)["machine types: RSS of one more machine type"] is ok
        assert "| `press` | 32×3 | 3 | int8 | 25.0 | 3.1 | 15.0 / 2.0 |" in rep.markdown
    (tmp_path / "none").mkdir()
    rep = report.build(report.load(raw_fixture(tmp_path / "none")))
    assert _checks(rep)["machine types: machine_types bench"] is False  # not measured


def test_the_cold_start_section_checks_false_anomaly_events_and_lists_each_growth(
    tmp_path: Path,
) -> None:
    growth = {
        "version": 2,
        "new_class": "bearing_fault",
        "at_stream_h": 0.18,
        "labels": {"bearing_fault": 8},
        "gate": {"old": 0.9995, "new": 1.0, "accepted": True},
        "macro_f1_known": 0.8746,
        "macro_f1_all": 0.4337,
    }
    for events, ok in ((0.0027, True), (0.02, False)):
        d = {
            "run": {"machines": 16, "period_s": 60.0, "labels_per_episode": 8},
            "detection": {
                "episodes": 16,
                "detected": 10,
                "false_anomaly_events_per_machine_hour": events,
                "flagged_share_per_true_class": {"normal": 0.0004},
            },
            "growth": [growth],
        }
        (tmp_path / str(events)).mkdir()
        rep = report.build(
            report.load(raw_fixture(tmp_path / str(events), **{"cold_start.json": d}))
        )
        assert _checks(rep)["cold start: false anomaly events / machine-h"] is ok
        assert (
            "| v2 | `bearing_fault` | 0.18 | bearing_fault 8 | 0.9995 → 1.0000 | 0.875 | 0.434 |"
            in (rep.markdown)
        )
        assert "detected (state `anomaly` before the episode ended): 10 of 16" in rep.markdown
    (tmp_path / "none").mkdir()
    rep = report.build(report.load(raw_fixture(tmp_path / "none")))
    assert _checks(rep)["cold start: cold_start bench"] is False  # not measured
