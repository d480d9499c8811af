"""The benchmark report: the benches' JSON in, `bench/results.md` and `bench/plots/*.png` out.

    python -m bench.report [--raw bench/raw] [--out bench/results.md] [--plots bench/plots]

`python -m bench` runs every bench as a subprocess, each writing one JSON file into the raw
directory (models.json, edge.json, demo_load.json, codec.json, fleet.json, drift_recovery.json)
and meta.json (machine, commit, each step's parameters, seconds and exit status); this module
turns them into Markdown with every measurement beside its target and a ✓/✗ computed from the
measurement, plus one PNG per figure. Run alone it rewrites the report from the kept JSON, so a
change to the layout needs no new measurement. A bench whose JSON is missing (it failed or was
skipped) gets a "not measured" line with its error, and the summary counts it as not met.

Targets (issue 4: models; issue 5: the edge; issue 6: the loop; issue 13: demo load, fleet,
`make bench`) are the module constants below. The pure part (`build`) returns the Markdown
and the figures' data; `write` draws the figures with matplotlib (Agg, files only) — bench
side only: pi_edge and protocol never import matplotlib.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("bench.report")

BENCH_DIR = Path(__file__).resolve().parent
# targets, each with the issue that set it
SPEEDUP_MIN = 10.0  # issue 4: compact ≥ 10× less time per window than seed 000 (batch 1)
INFER_ACC_MIN = 0.99  # issue 4: compact on infer_*
TRAIN_S_MAX = 60.0  # issue 4: compact initial training on 2 CPU cores
FT_ACC_MIN = 0.98  # issue 4/6: after fine-tuning, on both drifted and original data
FT_LABELS_MAX = 50  # issue 4/6
FLAT_OUT_MIN = 0.8  # issue 5: pi_edge ≥ 0.8× the (faster) ceiling's flat-out rate
BASELINE_MIN = 0.9  # issue 13: flat out no worse than pi_edge before it (same run; box noise)
P99_MS_MAX = 5.0  # issue 5: p99 sensor→prediction at 1,000 windows/s
EDGE_RSS_MB_MAX = 80.0  # issue 5: peak RSS flat out
DEMO_CPU_MAX = {"pi_edge": 1.2, "pi_edge+dashboard": 1.4}  # issue 13: × ceiling CPU/window
DEMO_TYPES_CPU_MAX = 1.2  # issue 24: a node of two types × the ceiling decoding both shapes
EXTRA_TYPE_RSS_MB_MAX = 8.0  # issue 24: RSS one more machine type may add
DEMO_RSS_MB_MAX = 64.0  # issue 13: peak RSS at the demo's load
TAKEOVER_S_MAX = 10.0  # issue 13: a dead node's machines classified again within 10 s
DETECT_S_MAX = 1.0  # README: "notices within a fraction of a second" (not for a gradual ramp)
LIVE_S_MAX = 60.0  # issue 6: onset → new model live
CLEAR_AFTER_LIVE_S = 60.0  # issue 14: drift state ok on every machine ≤ 60 s after the model
TOTAL_S_MAX = 15 * 60.0  # issue 13: make bench in under 15 minutes

OK, NOT_OK = "✓", "✗"


@dataclass
class Check:
    """One target: what was measured, its value, the target, met or not."""

    section: str
    measure: str
    value: str
    target: str
    ok: bool


@dataclass
class Report:
    """The Markdown, the checks it made and the data of each figure (file name → data)."""

    markdown: str
    checks: list[Check]
    figures: dict[str, Any] = field(default_factory=dict)


def mark(ok: bool | None) -> str:
    """✓, ✗, or — when the row has no target.

    >>> mark(True), mark(False), mark(None)
    ('✓', '✗', '—')
    """
    return "—" if ok is None else OK if ok else NOT_OK


def fnum(v: float | None, fmt: str = "{:.1f}") -> str:
    """A number, or — when it is missing or not finite.

    >>> fnum(1.234), fnum(None), fnum(float("nan")), fnum(12345.6, "{:,.0f}")
    ('1.2', '—', '—', '12,346')
    """
    if v is None or not math.isfinite(v):
        return "—"
    return fmt.format(v)


def le(v: float | None, limit: float) -> bool:
    """`v` ≤ `limit`, false when `v` is missing or not finite (a missing figure meets nothing).

    >>> le(4.9, 5.0), le(5.1, 5.0), le(None, 5.0), le(float("inf"), 5.0)
    (True, False, False, False)
    """
    return v is not None and math.isfinite(v) and v <= limit


def ge(v: float | None, limit: float) -> bool:
    """`v` ≥ `limit`, false when missing or not finite.

    >>> ge(0.99, 0.98), ge(float("nan"), 0.98)
    (True, False)
    """
    return v is not None and math.isfinite(v) and v >= limit


def table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table.

    >>> print(table(["a", "b"], [["1", "2"]]))
    | a | b |
    |---|---|
    | 1 | 2 |
    """
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


class _Section:
    """Collects one section's checks; `row` returns the target and ✓/✗ cells of a table row."""

    def __init__(self, name: str, checks: list[Check]) -> None:
        self.name, self.checks = name, checks

    def row(self, measure: str, value: str, target: str, ok: bool | None) -> list[str]:
        if ok is not None:
            self.checks.append(Check(self.name, measure, value, target, ok))
        return [target, mark(ok)]


def _step(meta: dict[str, Any], name: str) -> dict[str, Any]:
    for s in meta.get("steps", []):
        if s.get("name") == name:
            return dict(s)
    return {}


def _missing(meta: dict[str, Any], name: str, checks: list[Check], section: str) -> str:
    step = _step(meta, name)
    why = step.get("error") or "no JSON from this bench (not run?)"
    checks.append(Check(section, f"{name} bench", "not measured", "measured", False))
    return f"**Not measured:** {why}\n"


def _how(meta: dict[str, Any], name: str) -> str:
    step = _step(meta, name)
    if not step:
        return ""
    cmd = " ".join(step.get("argv", []))
    return f"`{cmd}` — {fnum(step.get('seconds'), '{:.0f}')} s.\n\n"


# ── sections ──────────────────────────────────────────────────────────────────────────────────


def models_section(rows: list[dict[str, Any]] | None, meta: dict[str, Any], c: list[Check]) -> str:
    """seed 000 vs compact, transposed: one row per measure, targets on the compact column."""
    title = "## Models: seed 000 vs compact\n\n"
    if not rows:
        return title + _missing(meta, "models", c, "models")
    by = {r["arch"]: r for r in rows}
    seed, comp = by.get("seed", {}), by.get("compact", {})
    s = _Section("models", c)

    def g(r: dict[str, Any], k: str) -> float | None:
        v = r.get(k)
        return None if v is None else float(v)

    speedup = (
        g(seed, "us_b1") / g(comp, "us_b1")  # type: ignore[operator]
        if g(seed, "us_b1") and g(comp, "us_b1")
        else None
    )
    speedup32 = (
        g(seed, "us_b32") / g(comp, "us_b32")  # type: ignore[operator]
        if g(seed, "us_b32") and g(comp, "us_b32")
        else None
    )
    labels = comp.get("n_labels")

    def both(k: str, fmt: str) -> list[str]:
        return [fnum(g(seed, k), fmt), fnum(g(comp, k), fmt)]

    def epochs(r: dict[str, Any]) -> str:
        cap = r.get("epochs_max")
        return f" ({r.get('epochs_run', '?')}" + (f" of ≤ {cap})" if cap else ")")

    out: list[list[str]] = [
        ["parameters", *both("params", "{:,.0f}"), "—", mark(None)],
        [".tflite bytes (int8)", *both("tflite_bytes", "{:,.0f}"), "—", mark(None)],
        [
            f"µs/window, batch 1 (LiteRT, 1 thread): compact {fnum(speedup)}× less",
            *both("us_b1", "{:.1f}"),
            *s.row(
                "compact µs/window vs seed 000 (batch 1)",
                f"{fnum(speedup)}× less",
                f"compact ≥ {SPEEDUP_MIN:g}× less than seed",
                ge(speedup, SPEEDUP_MIN),
            ),
        ],
        [
            f"µs/window, batch 32: compact {fnum(speedup32)}× less",
            *both("us_b32", "{:.1f}"),
            "—",
            mark(None),
        ],
        [
            "accuracy on infer",
            *both("infer_before", "{:.4f}"),
            *s.row(
                "compact accuracy on infer",
                fnum(g(comp, "infer_before"), "{:.4f}"),
                f"compact ≥ {INFER_ACC_MIN}",
                ge(g(comp, "infer_before"), INFER_ACC_MIN),
            ),
        ],
        ["accuracy on drift_infer", *both("drift_before", "{:.4f}"), "—", mark(None)],
        [
            f"infer after fine-tuning ({labels} labels)",
            *both("infer_after", "{:.4f}"),
            *s.row(
                "compact infer after fine-tuning",
                fnum(g(comp, "infer_after"), "{:.4f}"),
                f"compact ≥ {FT_ACC_MIN}",
                ge(g(comp, "infer_after"), FT_ACC_MIN),
            ),
        ],
        [
            "drift_infer after fine-tuning",
            *both("drift_after", "{:.4f}"),
            *s.row(
                "compact drift_infer after fine-tuning",
                fnum(g(comp, "drift_after"), "{:.4f}"),
                f"compact ≥ {FT_ACC_MIN}",
                ge(g(comp, "drift_after"), FT_ACC_MIN),
            ),
        ],
        [
            "labeled drift windows used",
            f"{seed.get('n_labels', '—')}",
            f"{labels if labels is not None else '—'}",
            *s.row(
                "labels for fine-tuning",
                f"{labels}",
                f"≤ {FT_LABELS_MAX}",
                labels is not None and int(labels) <= FT_LABELS_MAX,
            ),
        ],
        [
            "training s (epochs run)",
            fnum(g(seed, "train_s")) + epochs(seed),
            fnum(g(comp, "train_s")) + epochs(comp),
            *s.row(
                "compact training time",
                f"{fnum(g(comp, 'train_s'))} s",
                f"compact ≤ {TRAIN_S_MAX:g} s on 2 cores",
                le(g(comp, "train_s"), TRAIN_S_MAX),
            ),
        ],
        ["fine-tuning s", *both("finetune_s", "{:.1f}"), "— (inside the loop's ≤ 60 s)", "—"],
    ]
    note = ""
    if (
        seed.get("epochs_max")
        and comp.get("epochs_max")
        and seed["epochs_max"] < comp["epochs_max"]
    ):
        note = (
            f"Seed 000's network trained for at most {seed['epochs_max']} epochs here (compact: "
            f"{comp['epochs_max']}) to keep `make bench` under 15 minutes; its size and speed do "
            "not depend on epochs, its training seconds do.\n\n"
        )
    return (
        title
        + _how(meta, "models")
        + note
        + table(["measure", "seed 000", "compact", "target", "✓/✗"], out)
        + "\n"
    )


def _med(xs: list[float]) -> float:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return statistics.median(xs) if xs else float("nan")


def edge_section(
    rows: list[dict[str, Any]] | None, meta: dict[str, Any], c: list[Check], figs: dict[str, Any]
) -> str:
    """pi_edge against the no-model ceilings, flat out and paced (medians over rounds)."""
    title = "## pi_edge against the ceiling: flat out and 1,000 windows/s\n\n"
    if not rows:
        return title + _missing(meta, "edge", c, "edge")
    targets = list(dict.fromkeys(r["target"] for r in rows))
    paced = next((r["mode"] for r in rows if r["mode"] != "max"), "1000/s")
    s = _Section("edge", c)

    def med(target: str, mode: str, key: str) -> float:
        return _med([r[key] for r in rows if r["target"] == target and r["mode"] == mode])

    def dropped(target: str, mode: str) -> float:
        rs = [r for r in rows if r["target"] == target and r["mode"] == mode]
        return float(sum(r["sent"] - r["received"] for r in rs)) if rs else float("nan")

    def cells(mode: str, key: str, fmt: str) -> list[str]:
        return [fnum(med(t, mode, key), fmt) for t in targets]

    ceilings = [t for t in targets if t.startswith("ceiling")]
    baseline = next((t for t in targets if t.startswith("pi_edge@")), None)
    best_ceiling = max((med(t, "max", "rate") for t in ceilings), default=float("nan"))
    edge_rate = med("pi_edge", "max", "rate")
    ratio = edge_rate / best_ceiling if best_ceiling else float("nan")
    base_rate = med(baseline, "max", "rate") if baseline is not None else float("nan")
    base_ratio = edge_rate / base_rate if base_rate else float("nan")
    p99 = med("pi_edge", paced, "p99_ms")
    rss = max((r["peak_rss_mb"] for r in rows if r["target"] == "pi_edge"), default=float("nan"))
    drops = dropped("pi_edge", paced)
    out = [
        [
            "flat out: windows/s",
            *cells("max", "rate", "{:,.0f}"),
            *s.row(
                "pi_edge flat out / faster ceiling",
                f"{fnum(ratio, '{:.2f}')}×",
                f"pi_edge ≥ {FLAT_OUT_MIN}× the faster ceiling ({fnum(ratio, '{:.2f}')}×)",
                ge(ratio, FLAT_OUT_MIN),
            ),
        ],
        ["flat out: CPU µs/window", *cells("max", "cpu_us", "{:.0f}"), "—", mark(None)],
        *(
            [
                [
                    f"flat out: pi_edge / {baseline} (before issue 13, same run)",
                    *["" for _ in targets],
                    *s.row(
                        f"pi_edge flat out / {baseline}",
                        f"{fnum(base_ratio, '{:.2f}')}×",
                        f"pi_edge ≥ {BASELINE_MIN}× ({fnum(base_ratio, '{:.2f}')}×)",
                        ge(base_ratio, BASELINE_MIN),
                    ),
                ]
            ]
            if baseline is not None
            else []
        ),
        [f"{paced}: p50 ms", *cells(paced, "p50_ms", "{:.2f}"), "—", mark(None)],
        [
            f"{paced}: p99 ms",
            *cells(paced, "p99_ms", "{:.2f}"),
            *s.row(
                f"pi_edge p99 at {paced}",
                f"{fnum(p99, '{:.2f}')} ms",
                f"pi_edge ≤ {P99_MS_MAX:g} ms",
                le(p99, P99_MS_MAX),
            ),
        ],
        [
            f"{paced}: windows not classified (all rounds)",
            *[fnum(dropped(t, paced), "{:.0f}") for t in targets],
            *s.row(
                f"pi_edge windows lost at {paced}",
                fnum(drops, "{:.0f}"),
                "pi_edge 0 (classifies every window)",
                drops == 0,
            ),
        ],
        [f"{paced}: CPU µs/window", *cells(paced, "cpu_us", "{:.0f}"), "—", mark(None)],
        [
            "peak RSS MB (max over rounds)",
            *[
                fnum(max(r["peak_rss_mb"] for r in rows if r["target"] == t), "{:.0f}")
                for t in targets
            ],
            *s.row(
                "pi_edge peak RSS flat out",
                f"{fnum(rss, '{:.0f}')} MB",
                f"pi_edge ≤ {EDGE_RSS_MB_MAX:g} MB",
                le(rss, EDGE_RSS_MB_MAX),
            ),
        ],
    ]
    rounds = sum(1 for r in rows if r["target"] == targets[0] and r["mode"] == "max")
    figs["edge_latency.png"] = {
        "paced": paced,
        "curves": [
            (r["target"], r["quantiles_ms"])
            for r in rows
            if r["mode"] == paced and r.get("quantiles_ms")
        ],
    }
    figs["edge_throughput.png"] = {
        "targets": targets,
        "rates": [
            [r["rate"] for r in rows if r["target"] == t and r["mode"] == "max"] for t in targets
        ],
        "line": FLAT_OUT_MIN * best_ceiling,
    }
    return (
        title
        + _how(meta, "edge")
        + f"Medians over {rounds} rounds (targets alternate so load drift hits all alike); "
        "a driver sends from 100 machines, a collector measures sensor→prediction latency."
        + (
            f" `{baseline}` is pi_edge as it was before issue 13, run from a git worktree of "
            "that revision with the same model and broker, flat out only."
            if baseline is not None
            else ""
        )
        + "\n\n"
        + table(["measure", *targets, "target", "✓/✗"], out)
        + "\n\n![flat-out windows/s](plots/edge_throughput.png)\n"
        + f"![latency distribution at {paced}](plots/edge_latency.png)\n"
    )


def demo_section(
    data: dict[str, Any] | None, meta: dict[str, Any], c: list[Check], figs: dict[str, Any]
) -> str:
    """CPU per window and peak RSS at 16 machines × 10 Hz."""
    title = "## CPU per window at the demo's load (16 machines × 10 Hz)\n\n"
    if not data:
        return title + _missing(meta, "demo_load", c, "demo load")
    med = {k: (float(v[0]), float(v[1])) for k, v in data["medians"].items()}
    ceiling = med.get("ceiling", (float("nan"), 0.0))[0]
    s = _Section("demo load", c)
    out = []
    for name, (cpu, rss) in med.items():
        ratio = cpu / ceiling if ceiling else float("nan")
        limit = DEMO_CPU_MAX.get(name)
        if name == "pi_edge 2 types":  # against the ceiling of the same two-type load
            base = med.get("ceiling 2 types", (float("nan"), 0.0))[0]
            ratio = cpu / base if base else float("nan")
            extra = rss - med.get("pi_edge", (float("nan"), float("nan")))[1]
            cpu_cells = s.row(
                "a node of 2 machine types, CPU/window at demo load",
                f"{ratio:.2f}× ceiling of 2 types",
                f"≤ {DEMO_TYPES_CPU_MAX}× ceiling of 2 types",
                le(ratio, DEMO_TYPES_CPU_MAX),
            )
            rss_cells = s.row(
                "the second machine type's RSS at demo load",
                f"+{extra:.1f} MB",
                f"≤ {EXTRA_TYPE_RSS_MB_MAX:g} MB",
                le(extra, EXTRA_TYPE_RSS_MB_MAX),
            )
        elif limit is None:
            cpu_cells = [
                "— (reference)"
                if name.startswith("ceiling ") or name == "ceiling"
                else "— (the hand-off alone)",
                "—",
            ]
            rss_cells = ["—", "—"]
        else:
            cpu_cells = s.row(
                f"{name} CPU/window at demo load",
                f"{ratio:.2f}× ceiling",
                f"≤ {limit}× ceiling",
                le(ratio, limit),
            )
            rss_cells = s.row(
                f"{name} peak RSS at demo load",
                f"{rss:.1f} MB",
                f"≤ {DEMO_RSS_MB_MAX:g} MB",
                le(rss, DEMO_RSS_MB_MAX),
            )
        out.append([name, f"{cpu:.0f}", f"{ratio:.2f}×", *cpu_cells, f"{rss:.1f}", *rss_cells])
    figs["demo_load_cpu.png"] = {
        "medians": {k: v[0] for k, v in med.items()},
        "rounds": {k: [r["cpu_us"] for r in data.get("rows", []) if r["target"] == k] for k in med},
        "ceiling": ceiling,
    }
    return (
        title
        + _how(meta, "demo_load")
        + "CPU = the target's user + system time over the predictions it made (medians over "
        "rounds); pi_edge+dashboard draws its live dashboard on a 200 × 50 pseudo-terminal.\n\n"
        + table(
            [
                "target",
                "CPU µs/window",
                "× ceiling",
                "CPU target",
                "✓/✗",
                "peak RSS MB",
                "RSS target",
                "✓/✗",
            ],
            out,
        )
        + "\n\n![CPU per window at demo load](plots/demo_load_cpu.png)\n"
    )


def codec_section(
    rows: list[dict[str, Any]] | None, meta: dict[str, Any], c: list[Check], figs: dict[str, Any]
) -> str:
    """Binary frame vs JSON window: bytes and µs to encode and decode."""
    title = "## Codec: binary frame vs JSON window\n\n"
    if not rows:
        return title + _missing(meta, "codec", c, "codec")
    b = next((r for r in rows if r["form"] == "binary"), rows[0])
    out = [
        [
            r["form"],
            f"{r['bytes']:,}" + ("" if r is b else f" ({r['bytes'] / b['bytes']:.1f}×)"),
            f"{r['encode_us']:.1f}"
            + ("" if r is b else f" ({r['encode_us'] / b['encode_us']:.0f}×)"),
            f"{r['decode_us']:.1f}"
            + ("" if r is b else f" ({r['decode_us'] / b['decode_us']:.0f}×)"),
            "— (context: every window is decoded once)",
            mark(None),
        ]
        for r in rows
    ]
    figs["codec.png"] = {"rows": rows}
    return (
        title
        + _how(meta, "codec")
        + "One 60 × 4 window; protocol.window's encoders and decoders, best of 5, pure CPU.\n\n"
        + table(["form", "bytes/window", "encode µs", "decode µs", "target", "✓/✗"], out)
        + "\n\n![codec cost](plots/codec.png)\n"
    )


def fleet_section(
    rows: list[dict[str, Any]] | dict[str, Any] | None,
    meta: dict[str, Any],
    c: list[Check],
    figs: dict[str, Any],
) -> str:
    """Throughput and takeover with 1, 2 and 3 fleet nodes."""
    title = "## Fleet: 1, 2 and 3 nodes on this 2-core box\n\n"
    if isinstance(rows, dict):  # {"results": [...]} or {"rows": [...]} as well as a bare list
        rows = rows.get("results") or rows.get("rows")
    if not rows:
        return title + _missing(meta, "fleet", c, "fleet")
    s = _Section("fleet", c)
    out = []
    for r in rows:
        n = int(r["nodes"])
        oks = [
            s.row(f"{n} nodes: windows predicted twice", str(r["duplicated"]), "0",
                  int(r["duplicated"]) == 0)[1]
        ]  # fmt: skip
        row = [str(n), f"{r['sent']:,}", f"{r['received']:,}", f"{r['rate']:,.0f}"]
        row.append(f"{r['duplicated']} {oks[0]}")
        for key, gaps, fault in (
            ("kill_takeover_s", "kill_gaps", "kill -9"),
            ("stop_takeover_s", "stop_gaps", "SIGSTOP"),
        ):
            v = r.get(key)
            if n < 2 or v is None or (isinstance(v, float) and math.isnan(v)):
                row += ["—", "—"]
                continue
            ok = le(float(v), TAKEOVER_S_MAX)
            oks.append(
                s.row(f"{n} nodes: takeover after {fault}", f"{fnum(float(v), '{:.2f}')} s",
                      f"≤ {TAKEOVER_S_MAX:g} s", ok)[1]
            )  # fmt: skip
            row += [f"{fnum(float(v), '{:.2f}')} s {mark(ok)}", str(r.get(gaps, "—"))]
        row.append(NOT_OK if NOT_OK in oks else OK)
        out.append(row)
    figs["fleet.png"] = {
        "nodes": [int(r["nodes"]) for r in rows],
        "rate": [float(r["rate"]) for r in rows],
        "kill": [float(r.get("kill_takeover_s", math.nan)) for r in rows],
        "stop": [float(r.get("stop_takeover_s", math.nan)) for r in rows],
    }
    return (
        title
        + _how(meta, "fleet")
        + "Flat-out predictions/s of all nodes together; takeover = fault → the slowest of the "
        "victim's machines classified again (gaps: windows of the paced stream with no "
        "prediction). Every node here shares the same two cores with the broker and the driver, "
        "so more nodes add no throughput on this box; on separate Pis each adds its own CPU.\n\n"
        + table(
            [
                "nodes",
                "windows sent",
                "predictions",
                "predictions/s",
                "duplicated (target 0)",
                f"takeover after kill -9 (≤ {TAKEOVER_S_MAX:g} s)",
                "gaps",
                f"takeover after SIGSTOP (≤ {TAKEOVER_S_MAX:g} s)",
                "gaps",
                "✓/✗",
            ],
            out,
        )
        + "\n\n![fleet throughput and takeover](plots/fleet.png)\n"
    )


def drift_section(
    data: dict[str, Any] | None, meta: dict[str, Any], c: list[Check], figs: dict[str, Any]
) -> str:
    """The closed loop per drift mode: onset → detection → first batch → new model live."""
    title = "## The loop: drift recovery per mode\n\n"
    if not data:
        return title + _missing(meta, "drift_recovery", c, "drift recovery")
    s = _Section("drift recovery", c)
    out = []
    for m in data["modes"]:
        mode = m["mode"]
        params = " ".join(f"{k}={v:g}" for k, v in m.get("params", {}).items())
        gradual = mode == "ramp"
        oks: list[bool] = []
        det = m.get("detect_s")
        if gradual:
            det_cell = f"{fnum(det)} (gradual: no target)"
        else:
            ok = le(det, DETECT_S_MAX)
            s.row(f"{mode}: onset → drift state", f"{fnum(det)} s", f"≤ {DETECT_S_MAX:g} s", ok)
            oks.append(ok)
            det_cell = f"{fnum(det)} {mark(ok)}"
        before, after = m["before"], m.get("after")
        live, labels = m.get("live_s"), m.get("labels")
        if after is None:
            # no new model: right only when the old one still meets the accuracy target
            ok = all(ge(v, FT_ACC_MIN) for v in before)
            s.row(
                f"{mode}: no new model needed",
                f"old model {before[0]:.3f} / {before[1]:.3f}",
                f"old model ≥ {FT_ACC_MIN} on both",
                ok,
            )
            oks.append(ok)
            live_cell, labels_cell = f"— ({m.get('gate', '')}) {mark(ok)}", "—"
            acc = [f"{before[0]:.3f} → —", f"{before[1]:.3f} → —"]
        else:
            ok_live = le(live, LIVE_S_MAX)
            ok_lab = labels is not None and int(labels) <= FT_LABELS_MAX
            ok_acc = [ge(v, FT_ACC_MIN) for v in after]
            s.row(f"{mode}: onset → new model live", f"{fnum(live)} s", f"≤ {LIVE_S_MAX:g} s",
                  ok_live)  # fmt: skip
            s.row(f"{mode}: labels used", str(labels), f"≤ {FT_LABELS_MAX}", ok_lab)
            s.row(f"{mode}: drifted accuracy after", f"{after[0]:.3f}", f"≥ {FT_ACC_MIN}",
                  ok_acc[0])  # fmt: skip
            s.row(f"{mode}: original accuracy after", f"{after[1]:.3f}", f"≥ {FT_ACC_MIN}",
                  ok_acc[1])  # fmt: skip
            oks += [ok_live, ok_lab, *ok_acc]
            live_cell = f"{fnum(live)} {mark(ok_live)}"
            labels_cell = f"{labels} {mark(ok_lab)}"
            acc = [
                f"{b:.3f} → {a:.3f} {mark(ok)}"
                for b, a, ok in zip(before, after, ok_acc, strict=True)
            ]
        # drift cleared: every machine ok, and staying ok, ≤ 60 s after the model went live
        # (a ramp's last renewal comes once the ramp ends: no target but that it clears)
        cleared = m.get("cleared_s")
        if "cleared_s" in m:
            live_at = live if live is not None else det
            ok_clear = cleared is not None and (
                gradual or (live_at is not None and cleared - live_at <= CLEAR_AFTER_LIVE_S)
            )
            target = "clears" if gradual else f"≤ {CLEAR_AFTER_LIVE_S:g} s after the model"
            s.row(f"{mode}: onset → drift cleared", f"{fnum(cleared)} s", target, ok_clear)
            oks.append(ok_clear)
            clear_cell = f"{fnum(cleared)} {mark(ok_clear)}"
        else:
            clear_cell = "not measured"
        out.append(
            [
                f"{mode} {params}".strip(),
                det_cell,
                fnum(m.get("first_batch_s")),
                live_cell,
                clear_cell,
                labels_cell,
                *acc,
                mark(all(oks)),
            ]
        )
    figs["drift_timeline.png"] = {
        "modes": [
            (m["mode"], m.get("detect_s"), m.get("first_batch_s"), m.get("live_s"))
            for m in data["modes"]
        ],
        "timeout": data.get("timeout_s"),
    }
    return (
        title
        + _how(meta, "drift_recovery")
        + "Trainer daemon, pi_edge and simulator (16 machines × 10 Hz, 5 % labels) live on one "
        "Mosquitto; drift commanded after 15 s. Seconds from onset; accuracy of the old → new "
        f"model on 400 fresh drifted / original windows. Initial compact model trained in "
        f"{fnum(data.get('initial_train_s'), '{:.0f}')} s.\n\n"
        + table(
            [
                "drift mode",
                f"→ drift state s (≤ {DETECT_S_MAX:g})",
                "→ first batch s",
                f"→ new model live s (≤ {LIVE_S_MAX:g})",
                f"→ drift cleared s (≤ live + {CLEAR_AFTER_LIVE_S:g})",
                f"labels (≤ {FT_LABELS_MAX})",
                f"drifted acc. (≥ {FT_ACC_MIN})",
                f"original acc. (≥ {FT_ACC_MIN})",
                "✓/✗",
            ],
            out,
        )
        + "\n\n![drift recovery timeline](plots/drift_timeline.png)\n"
        + drift_plant_rows(data, s)
    )


PLANT_LOOP_F1_WITHIN = 0.02  # issue 14: macro-F1 back to within 2 points of the undrifted model


def drift_plant_rows(data: dict[str, Any], s: _Section) -> str:
    """The loop on the realistic plant (bench.drift_recovery --plant): its own table, since
    it is scored by macro-F1 against the true classes, not by accuracy."""
    rows = data.get("plant_modes")
    if not rows:
        return ""
    out = []
    for m in rows:
        mode, pl = m["mode"], m.get("plant") or {}
        machines = pl.get("machines", [])
        where = "all" if machines in (["all"], "all") else ",".join(machines)
        before, after = m["before"], m.get("after")
        target_f1 = before[1] - PLANT_LOOP_F1_WITHIN
        alarms = pl.get("false_drift_alarms")
        ok_alarms = le(alarms, PLANT_DRIFT_ALARMS_MAX)
        s.row(f"{mode}: false drift alarms before onset", str(alarms),
              f"≤ {PLANT_DRIFT_ALARMS_MAX:g}", ok_alarms)  # fmt: skip
        live, cleared = m.get("live_s"), m.get("cleared_s")
        if after is None:
            ok_f1 = [False, False]
            s.row(f"{mode}: new model", f"none ({m.get('gate', '')})", "a new model", False)
        else:
            ok_f1 = [ge(v, target_f1) for v in after]
            s.row(f"{mode}: drifted macro-F1 after", f"{after[0]:.3f}", f"≥ {target_f1:.3f}",
                  ok_f1[0])  # fmt: skip
            s.row(f"{mode}: undrifted macro-F1 after", f"{after[1]:.3f}", f"≥ {target_f1:.3f}",
                  ok_f1[1])  # fmt: skip
        live_at = live if live is not None else m.get("detect_s")
        ok_clear = (
            cleared is not None and live_at is not None and cleared - live_at <= CLEAR_AFTER_LIVE_S
        )
        s.row(f"{mode}: onset → drift cleared", f"{fnum(cleared)} s",
              f"≤ {CLEAR_AFTER_LIVE_S:g} s after the model", ok_clear)  # fmt: skip
        new = [f"{a:.3f}" for a in after] if after is not None else ["—", "—"]
        out.append(
            [
                f"{mode} {where}".strip(),
                f"{alarms} / {pl.get('false_machine_drift_alarms')} in "
                f"{fnum(pl.get('warmup_s'), '{:.0f}')} s {mark(ok_alarms)}",
                f"{sum(a['t_s'] < 0 for a in pl.get('attempts', []))} (+"
                f"{sum(t < 0 for t, _ in pl.get('failed_finetunes', []))} failed)",
                fnum(m.get("detect_s")),
                fnum(m.get("first_batch_s")),
                fnum(live),
                f"{fnum(cleared)} {mark(ok_clear)}",
                "—" if m.get("labels") is None else str(m["labels"]),
                f"{before[0]:.3f} → {new[0]} {mark(ok_f1[0])}",
                f"{before[1]:.3f} → {new[1]} {mark(ok_f1[1])}",
                mark(ok_alarms and ok_clear and all(ok_f1)),
            ]
        )
    loop = data.get("plant_loop") or {}
    return (
        "\n### On the realistic plant\n\n"
        "The same loop with the simulator in `--realism plant` (time × "
        f"{fnum(loop.get('time_scale'), '{:g}')}; rare developing faults, artefacts, labels "
        "5 % of windows, late and 5 % wrong), the initial model trained on a plant data set "
        f"in {fnum(data.get('plant_initial_train_s'), '{:.0f}')} s, drift commanded after "
        f"{fnum(loop.get('warmup_s'), '{:.0f}')} s of undrifted traffic (false alarms counted "
        "meanwhile). Macro-F1 against the TRUE classes on fresh plant windows "
        f"({fnum(loop.get('eval_hours'), '{:g}')} h × 16 machines, drifted and undrifted) of "
        "the old → new model; target: within "
        f"{PLANT_LOOP_F1_WITHIN * 100:g} points of the old model on undrifted windows.\n\n"
        + table(
            [
                "plant drift (machines)",
                f"false drift alarms before onset, overall / machine (≤ "
                f"{PLANT_DRIFT_ALARMS_MAX:g})",
                "fine-tunes before onset",
                "→ drift state s",
                "→ first batch s",
                "→ new model live s",
                f"→ drift cleared s (≤ live + {CLEAR_AFTER_LIVE_S:g})",
                "labels",
                "macro-F1 drifted",
                "macro-F1 undrifted",
                "✓/✗",
            ],
            out,
        )
        + "\n"
    )


PLANT_SEED_F1_MIN = 0.99  # seed-style data: the model is near exact
PLANT_FALSE_EVENTS_MAX = 0.01  # false fault events per machine-hour on the realistic plant
PLANT_DRIFT_ALARMS_MAX = 0.0  # false drift alarms per hour on an undrifted plant


def plant_section(rows: list[dict[str, Any]] | None, meta: dict[str, Any], c: list[Check]) -> str:
    """Quality measured honestly: seed-style data vs the realistic plant (bench.plant)."""
    title = "## Quality: seed-style data vs a realistic plant\n\n"
    if not rows:
        return title + _missing(meta, "plant", c, "plant quality")
    s = _Section("plant quality", c)
    out = []
    for r in rows:
        name = str(r.get("dataset"))
        f1, events, alarms = (
            r.get("macro_f1"),
            r.get("false_fault_events_per_machine_h"),
            r.get("drift_alarms_per_h"),
        )
        oks: list[bool] = []
        if name == "seed":
            oks.append(ge(f1, PLANT_SEED_F1_MIN))
            s.row("seed: macro-F1", fnum(f1, "{:.3f}"), f"≥ {PLANT_SEED_F1_MIN}", oks[-1])
        elif name == "plant":
            oks.append(le(events, PLANT_FALSE_EVENTS_MAX))
            s.row("plant: false fault events / machine-h", fnum(events, "{:.3f}"),
                  f"≤ {PLANT_FALSE_EVENTS_MAX}", oks[-1])  # fmt: skip
            oks.append(le(alarms, PLANT_DRIFT_ALARMS_MAX))
            s.row("plant: false drift alarms / h", fnum(alarms, "{:.2f}"),
                  f"≤ {PLANT_DRIFT_ALARMS_MAX:g}", oks[-1])  # fmt: skip
        recall = r.get("recall", {})
        out.append(
            [
                name,
                fnum(r.get("accuracy"), "{:.3f}"),
                fnum(f1, "{:.3f}"),
                fnum(r.get("macro_f1_developed"), "{:.3f}"),
                " / ".join(fnum(v, "{:.2f}") for v in recall.values()),
                f"{r.get('detected')} of {r.get('episodes')}",
                " / ".join(fnum(r.get(k), "{:.0f}") for k in ("delay_median_s", "delay_p90_s")),
                fnum(events, "{:.3f}"),
                fnum(alarms, "{:.2f}"),
                mark(all(oks)) if oks else mark(None),
            ]
        )
    return (
        title
        + _how(meta, "plant")
        + "Each data set trains the compact model, then a held-out stream is replayed through "
        "pi_edge's pieces (LiteRT, drift detector, debounced machine state) and scored against "
        "the TRUE classes (sensor_sim/README.md, Realistic plant). Accuracy hides rare faults; "
        "macro-F1 does not.\n\n"
        + table(
            [
                "data set",
                "accuracy",
                f"macro-F1 (seed ≥ {PLANT_SEED_F1_MIN})",
                "macro-F1, severity ≥ 0.5",
                "recall normal / bearing / wear / pump",
                "faults detected",
                "delay median / p90 s",
                f"false fault events / machine-h (plant ≤ {PLANT_FALSE_EVENTS_MAX})",
                f"false drift alarms / h (plant ≤ {PLANT_DRIFT_ALARMS_MAX:g})",
                "✓/✗",
            ],
            out,
        )
        + "\n"
    )


ESTIMATE_UNDRIFTED_MAE_MAX = 0.02  # on validation-like traffic the estimate must read ~truth


def estimate_section(d: dict[str, Any] | None, meta: dict[str, Any], c: list[Check]) -> str:
    """The label-free accuracy estimate against the true accuracy, per drift mode."""
    title = "## Label-free accuracy estimate (pi_edge/loop/accuracy_estimate.py)\n\n"
    if not d:
        return title + _missing(meta, "estimate", c, "accuracy estimate")
    s = _Section("accuracy estimate", c)
    default = str(d.get("default_method"))
    methods = list((d.get("mae_all") or {}).keys())
    rows = []
    for r in d.get("rows", []):
        rows.append(
            [r["scenario"], fnum(r.get("true_accuracy"), "{:.3f}")]
            + [
                f"{fnum(r['estimate'].get(m), '{:.3f}')} ({fnum(r['mae'].get(m), '{:.3f}')})"
                for m in methods
            ]
        )
    undrifted = (d.get("mae_undrifted") or {}).get(default)
    cells = s.row(
        f"undrifted |estimate − truth| ({default})",
        fnum(undrifted, "{:.3f}"),
        f"≤ {ESTIMATE_UNDRIFTED_MAE_MAX}",
        le(undrifted, ESTIMATE_UNDRIFTED_MAE_MAX),
    )
    rows.append(
        ["**mean absolute error**", ""] + [fnum(d["mae_all"].get(m), "{:.3f}") for m in methods]
    )
    rows.append(
        ["**mean signed error** (> 0 overestimates)", ""]
        + [fnum(d.get("bias_all", {}).get(m), "{:+.3f}") for m in methods]
    )
    return (
        title
        + _how(meta, "estimate")
        + f"Chunks of {d.get('estimate_windows')} windows (the node's estimate window); the "
        f"node uses `{default}` with this manifest. Undrifted: {cells[0]} {cells[1]}. A model "
        "that is confidently wrong under a drift (regime) fools every confidence-based "
        "estimate; the drift detector's input signal still asks for labels there.\n\n"
        + table(["scenario", "true accuracy"] + [f"{m} (MAE)" for m in methods], rows)
        + "\n"
    )


def cold_start_section(d: dict[str, Any] | None, meta: dict[str, Any], c: list[Check]) -> str:
    """Cold start on the realistic plant: an anomaly model from normal running only, then the
    fault classes technicians name (bench/cold_start.py)."""
    title = "## Cold start: anomaly model, then class growth (bench/cold_start.py)\n\n"
    if not d:
        return title + _missing(meta, "cold_start", c, "cold start")
    s = _Section("cold start", c)
    det, run = d.get("detection", {}), d.get("run", {})
    events = det.get("false_anomaly_events_per_machine_hour")
    cells = s.row(
        "false anomaly events / machine-h",
        fnum(events, "{:.4f}"),
        f"≤ {PLANT_FALSE_EVENTS_MAX} (as the plant's fault events)",
        le(events, PLANT_FALSE_EVENTS_MAX),
    )
    flagged = det.get("flagged_share_per_true_class", {})
    rows = [
        [
            f"v{g.get('version')}",
            f"`{g.get('new_class')}`",
            fnum(g.get("at_stream_h"), "{:.2f}"),
            ", ".join(f"{k} {v}" for k, v in (g.get("labels") or {}).items()),
            f"{fnum((g.get('gate') or {}).get('old'), '{:.4f}')} → "
            f"{fnum((g.get('gate') or {}).get('new'), '{:.4f}')}"
            + ("" if (g.get("gate") or {}).get("accepted") else " (refused)"),
            fnum(g.get("macro_f1_known"), "{:.3f}"),
            fnum(g.get("macro_f1_all"), "{:.3f}"),
            ", ".join(
                f"{k} {fnum(v, '{:.2f}')}"
                for k, v in (g.get("anomaly_share_unknown_classes") or {}).items()
            )
            or "-",
            fnum(g.get("anomaly_share_normal"), "{:.4f}"),
        ]
        for g in d.get("growth", [])
    ]
    return (
        title
        + _how(meta, "cold_start")
        + f"{run.get('machines')} plant machines, a window each every "
        f"{fnum(run.get('period_s'), '{:.0f}')} plant s; the anomaly model is fitted on "
        f"{run.get('normal_windows_fitted')} normal windows of "
        f"{fnum(run.get('history_h'), '{:.0f}')} h of history (threshold "
        f"{fnum(run.get('threshold'), '{:.2f}')}), then the next "
        f"{fnum(run.get('stream_h'), '{:.0f}')} h go through pi_edge's serving pieces (LiteRT, "
        "debounced state) and are scored against the TRUE classes. "
        f"Faults detected (state `anomaly` before the episode ended): {det.get('detected')} of "
        f"{det.get('episodes')}; onset → anomaly state median / p90 "
        f"{fnum(det.get('delay_min_median'))} / {fnum(det.get('delay_min_p90'))} plant min; "
        f"false anomaly events {det.get('false_anomaly_events')} in "
        f"{fnum(det.get('healthy_machine_hours'))} healthy machine-h = {fnum(events, '{:.4f}')} "
        f"/ machine-h {cells[0]} {cells[1]}; windows flagged per true class: "
        + ", ".join(f"{k} {fnum(v, '{:.3f}')}" for k, v in flagged.items())
        + ".\n\nClass growth: a technician labels the first "
        f"{run.get('labels_per_episode')} flagged windows of each detected episode with its true "
        "class; once a class no model knows has 4 labels, the class list grows by it (gated on "
        "the old classes' holdout). Faults of a class the model does not know count as missed "
        "in the macro-F1 over all 4; its anomaly head (jetson_trainer/build/anomaly_head.py) "
        "calls the share in the next column `anomaly`, and the last column is its false "
        "`anomaly` share on truly normal windows. Each grown model on a fresh "
        f"{fnum(run.get('eval_h'), '{:.0f}')} h plant stream:\n\n"
        + table(
            [
                "version",
                "new class",
                "at stream h",
                "labels so far",
                "gate old → new",
                "macro-F1, known classes",
                "macro-F1, all 4 (unknown = missed)",
                "unknown classes → `anomaly`",
                "normal → `anomaly`",
            ],
            rows,
        )
        + "\n"
    )


TYPE_RSS_MB_MAX = 8.0  # issue 24: one more machine type on a node costs at most this RSS


def types_section(d: dict[str, Any] | None, meta: dict[str, Any], c: list[Check]) -> str:
    """One node serving two machine types: µs/window of each type's model, RSS per extra type."""
    title = "## Machine types: one node, two models (bench/machine_types.py)\n\n"
    if not d:
        return title + _missing(meta, "machine_types", c, "machine types")
    s = _Section("machine types", c)
    rows = [
        [
            f"`{r.get('type')}`",
            "×".join(str(v) for v in r.get("shape", [])),
            str(r.get("classes")),
            str(r.get("quantization")),
            fnum(r.get("us_per_window_b1")),
            fnum(r.get("us_per_window_b16")),
            f"{fnum(r.get('invoke_us_per_window_b1'))} / {fnum(r.get('invoke_us_per_window_b16'))}",
        ]
        for r in d.get("rows", [])
    ]
    extra = d.get("rss_extra_type_mb")
    cells = s.row(
        "RSS of one more machine type",
        f"{fnum(extra, '{:.2f}')} MB",
        f"≤ {TYPE_RSS_MB_MAX:g} MB",
        le(extra, TYPE_RSS_MB_MAX),
    )
    return (
        title
        + _how(meta, "machine_types")
        + "µs per window through pi_edge's `Classifier.predict` (the model input transform and "
        "one LiteRT invoke, 1 thread), and the bare invoke. RSS: a fresh process vets the "
        f"built-in type's model ({fnum(d.get('rss_first_type_mb'), '{:.2f}')} MB with its "
        f"interpreters for batches 1..16), then the other type's: {cells[0]} {cells[1]} "
        f"{fnum(extra, '{:.2f}')} MB more.\n\n"
        + table(
            [
                "type",
                "window",
                "classes",
                "quantization",
                "µs/window batch 1",
                "batch 16",
                "bare invoke 1 / 16",
            ],
            rows,
        )
        + "\n"
    )


def console_section(d: dict[str, Any] | None, meta: dict[str, Any], c: list[Check]) -> str:
    """The operator console's refresh with 100 changing machines (bench/console_refresh.py)."""
    title = "## Console: one screen refresh with 100 changing machines\n\n"
    if not d:
        return title + _missing(meta, "console", c, "console")
    s = _Section("console", c)
    worst, target = d.get("worst_ms"), d.get("target_ms")
    rows = [
        [
            "worst refresh after the first",
            f"{fnum(worst)} ms",
            *s.row(
                "worst refresh after the first",
                f"{fnum(worst)} ms",
                f"< {fnum(target, '{:.0f}')} ms (half of the 2 Hz tick)",
                worst is not None and target is not None and worst < target,
            ),
        ],
        ["median refresh", f"{fnum(d.get('median_ms'))} ms", "—", mark(None)],
        ["first refresh (adds every row)", f"{fnum(d.get('first_ms'))} ms", "—", mark(None)],
        ["machines shown", str(d.get("machines_shown")), str(d.get("machines")), mark(None)],
    ]
    return (
        title
        + _how(meta, "console")
        + f"A real Mosquitto and `ConsoleLink`, the Textual app under its pilot; "
        f"{d.get('rounds')} rounds, each a new prediction for every machine, then one timed "
        "`refresh_site()` (what the app runs every 0.5 s).\n\n"
        + table(["figure", "value", "target", "✓/✗"], rows)
        + "\n"
    )


def run_section(meta: dict[str, Any], c: list[Check]) -> str:
    """Each step's parameters, seconds and status, and the total against 15 minutes."""
    s = _Section("make bench", c)
    out = [
        [
            f"`{st.get('name')}`",
            "`" + " ".join(st.get("argv", [])) + "`" if st.get("argv") else "—",
            fnum(st.get("seconds"), "{:.0f}"),
            "ok" if st.get("rc") == 0 else f"failed: {st.get('error', st.get('rc'))}",
        ]
        for st in meta.get("steps", [])
    ]
    total = meta.get("total_s")
    only = meta.get("only")
    cells = s.row(
        "make bench wall time",
        f"{fnum(total, '{:.0f}')} s",
        f"< {TOTAL_S_MAX / 60:g} min" + (f" (a partial run: --only {only})" if only else ""),
        None if only else total is not None and total < TOTAL_S_MAX,
    )
    out.append(["**total**", "", f"**{fnum(total, '{:.0f}')}** ({cells[0]} {cells[1]})", ""])
    return "## The run\n\n" + table(["step", "command", "seconds", "status"], out) + "\n"


LOADERS: dict[str, str] = {
    "models": "models.json",
    "edge": "edge.json",
    "demo_load": "demo_load.json",
    "codec": "codec.json",
    "fleet": "fleet.json",
    "drift_recovery": "drift_recovery.json",
    "plant": "plant.json",
    "estimate": "estimate.json",
    "machine_types": "machine_types.json",
    "cold_start": "cold_start.json",
    "console": "console.json",
}


def load(raw: Path) -> dict[str, Any]:
    """Every bench's JSON in `raw` by bench name (None when missing), plus 'meta'."""
    got: dict[str, Any] = {}
    for name, file in {**LOADERS, "meta": "meta.json"}.items():
        path = raw / file
        try:
            got[name] = json.loads(path.read_text()) if path.exists() else None
        except ValueError as exc:
            log.error(
                "%s is not valid JSON (%s): that bench's section says not measured", path, exc
            )
            got[name] = None
    return got


def build(data: dict[str, Any]) -> Report:
    """The whole report from the loaded JSON (pure: no files, no clock)."""
    meta = data.get("meta") or {}
    checks: list[Check] = []
    figs: dict[str, Any] = {}
    body = [
        models_section(data.get("models"), meta, checks),
        edge_section(data.get("edge"), meta, checks, figs),
        demo_section(data.get("demo_load"), meta, checks, figs),
        codec_section(data.get("codec"), meta, checks, figs),
        fleet_section(data.get("fleet"), meta, checks, figs),
        drift_section(data.get("drift_recovery"), meta, checks, figs),
        plant_section(data.get("plant"), meta, checks),
        estimate_section(data.get("estimate"), meta, checks),
        types_section(data.get("machine_types"), meta, checks),
        cold_start_section(data.get("cold_start"), meta, checks),
        console_section(data.get("console"), meta, checks),
        run_section(meta, checks),
    ]
    met = sum(ch.ok for ch in checks)
    failed = [ch for ch in checks if not ch.ok]
    machine = meta.get("machine", {})
    head = [
        "# edgeloop benchmark results",
        "",
        "Written by `make bench` (`python -m bench`, then `python -m bench.report` from the JSON "
        "in `bench/raw/`). Every ✓/✗ is computed from the measurement against the target named "
        "beside it.",
        "",
        f"- machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, "
        f"{machine.get('memory_gb', '?')} GB, Python {machine.get('python', '?')}",
        f"- date: {meta.get('started', '?')}; commit {meta.get('commit', '?')}"
        + (" (with uncommitted changes)" if meta.get("dirty") else ""),
        f"- total wall time: {fnum(meta.get('total_s'), '{:.0f}')} s "
        f"(target < {TOTAL_S_MAX / 60:g} min)"
        + (
            f"; **a partial run** (`--only {meta['only']}`): the other sections come from "
            "earlier runs' JSON"
            if meta.get("only")
            else ""
        ),
        f"- targets met: **{met} of {len(checks)}**",
        "",
    ]
    if failed:
        head += ["Not met:", ""]
        head += [f"- {ch.section}: {ch.measure} = {ch.value} (target {ch.target})" for ch in failed]
        head.append("")
    return Report("\n".join(head) + "\n" + "\n".join(body), checks, figs)


# ── figures (matplotlib, files only) ──────────────────────────────────────────────────────────

COLOURS = {
    "ceiling": "#7f7f7f",
    "ceiling-threaded": "#bcbd22",
    "pi_edge": "#1f77b4",
    "pi_edge+dashboard": "#d62728",
}


def _plot_edge_latency(axes: Any, d: dict[str, Any]) -> None:
    """Left: the whole distribution (CDF); right: its tail, percentiles 90–100."""
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    from .edge import QUANTILES

    pct = QUANTILES

    for ax, low in zip(axes, (0.0, 90.0), strict=True):
        seen: set[str] = set()
        for target, q in d["curves"]:
            if len(q) != len(pct):
                continue
            ax.plot(q, pct, color=COLOURS.get(target, "k"), lw=1.4, alpha=0.85,
                    label=None if target in seen else target)  # fmt: skip
            seen.add(target)
        ax.axvline(P99_MS_MAX, color="k", ls="--", lw=1)
        ax.axhline(99, color="k", ls=":", lw=1)
        ax.text(P99_MS_MAX, (low + 100) / 2, f"target: p99 ≤ {P99_MS_MAX:g} ms", ha="center",
                fontsize=9, bbox={"facecolor": "white", "alpha": 0.85, "lw": 0})  # fmt: skip
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(FormatStrFormatter("%g") if low else NullFormatter())
        ax.set_ylim(low, 100.5)
        ax.set_xlabel("sensor → prediction latency, ms (log)")
        ax.grid(alpha=0.3)
    tail = [
        v
        for _, q in d["curves"]
        if len(q) == len(pct)
        for p, v in zip(pct, q, strict=True)
        if p >= 90
    ]
    if tail and min(tail) > 0:
        axes[1].set_xlim(min(tail) * 0.8, max(*tail, P99_MS_MAX) * 1.25)
    axes[0].set_ylabel("percentile")
    axes[0].set_title(f"Latency CDF at {d['paced']} (a line per round)")
    axes[1].set_title("Its tail (p90–p100)")
    axes[0].legend(loc="upper left")


def _plot_edge_throughput(ax: Any, d: dict[str, Any]) -> None:
    import numpy as np

    med = [float(np.median(r)) if r else 0.0 for r in d["rates"]]
    xs = range(len(d["targets"]))
    ax.bar(xs, med, color=[COLOURS.get(t, "k") for t in d["targets"]])
    for x, rates in zip(xs, d["rates"], strict=True):
        ax.plot([x] * len(rates), rates, "ko", ms=4)
    ax.axhline(d["line"], color="k", ls="--", lw=1)
    ax.text(len(med) - 0.5, d["line"], f"target: 0.8× faster ceiling = {d['line']:,.0f}",
            ha="right", va="bottom", fontsize=9,
            bbox={"facecolor": "white", "alpha": 0.8, "lw": 0})  # fmt: skip
    ax.set_xticks(list(xs), d["targets"])
    ax.set_ylabel("windows/s (median; dots: rounds)")
    ax.set_title("Flat-out throughput")


def _plot_demo(ax: Any, d: dict[str, Any]) -> None:
    names = list(d["medians"])
    xs = range(len(names))
    ax.bar(xs, [d["medians"][n] for n in names], color=[COLOURS.get(n, "k") for n in names])
    for x, n in zip(xs, names, strict=True):
        ax.plot([x] * len(d["rounds"][n]), d["rounds"][n], "ko", ms=4)
        limit = DEMO_CPU_MAX.get(n)
        if limit:
            y = limit * d["ceiling"]
            ax.plot([x - 0.45, x + 0.45], [y, y], "k--", lw=1.5)
            ax.text(x, y, f"target ≤ {limit}× ceiling", ha="center", va="bottom", fontsize=9,
                    bbox={"facecolor": "white", "alpha": 0.8, "lw": 0})  # fmt: skip
    ax.set_xticks(list(xs), names)
    ax.set_ylabel("CPU µs per window (median; dots: rounds)")
    ax.set_title("CPU per window at 16 machines × 10 Hz")


def _plot_codec(axes: Any, d: dict[str, Any]) -> None:
    rows = d["rows"]
    forms = [r["form"] for r in rows]
    ax = axes[0]
    width = 0.38
    for i, key in enumerate(("encode_us", "decode_us")):
        xs = [j + (i - 0.5) * width for j in range(len(rows))]
        bars = ax.bar(xs, [r[key] for r in rows], width, label=key.split("_")[0])
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(range(len(rows)), forms)
    ax.set_yscale("log")
    ax.set_ylabel("µs per window (log)")
    ax.set_title("encode / decode")
    ax.legend()
    ax = axes[1]
    bars = ax.bar(forms, [r["bytes"] for r in rows], color="#9467bd")
    ax.bar_label(bars, fmt="%d", fontsize=8)
    ax.set_ylabel("bytes per window")
    ax.set_title("size")


def _plot_fleet(axes: Any, d: dict[str, Any]) -> None:
    ax = axes[0]
    ax.plot(d["nodes"], d["rate"], "o-")
    ax.set_xticks(d["nodes"])
    ax.set_ylim(bottom=0)
    ax.set_xlabel("fleet nodes")
    ax.set_ylabel("predictions/s, all nodes, flat out")
    ax.set_title("Throughput vs nodes (one 2-core box)")
    ax = axes[1]
    for key, m in (("kill", "o-"), ("stop", "s-")):
        pts = [(n, v) for n, v in zip(d["nodes"], d[key], strict=True) if math.isfinite(v)]
        if pts:
            ax.plot(*zip(*pts, strict=True), m, label="kill -9" if key == "kill" else "SIGSTOP")
    ax.axhline(TAKEOVER_S_MAX, color="k", ls="--", lw=1)
    ax.text(d["nodes"][0], TAKEOVER_S_MAX, f" target ≤ {TAKEOVER_S_MAX:g} s", va="bottom",
            fontsize=9)  # fmt: skip
    ax.set_xticks(d["nodes"])
    ax.set_ylim(0, TAKEOVER_S_MAX * 1.3)
    ax.set_xlabel("fleet nodes")
    ax.set_ylabel("takeover s")
    ax.set_title("Takeover after a node fault")
    ax.legend(loc="lower right")


def _plot_drift(ax: Any, d: dict[str, Any]) -> None:
    modes = d["modes"]
    horizon = max([LIVE_S_MAX, *(v for m in modes for v in m[1:] if v is not None)])
    for y, (_mode, det, first, live) in enumerate(modes):
        end = live if live is not None else (d.get("timeout") or horizon)
        ax.barh(y, end, color="#2ca02c" if live is not None else "#dddddd", alpha=0.5,
                hatch=None if live is not None else "//")  # fmt: skip
        for v, dy, marker, colour, lab in (
            (det, -0.2, "v", "#ff7f0e", "drift detected"),
            (first, 0.2, "^", "#9467bd", "first batch stored"),
            (live, 0.0, "*", "#2ca02c", "new model live"),
        ):
            if v is not None:
                ax.plot(v, y + dy, marker, color=colour, ms=12 if marker == "*" else 8,
                        label=lab if y == 0 else None)  # fmt: skip
        if live is None:
            ax.text(end, y, " no new model", va="center", fontsize=9)
    ax.axvline(0, color="k", lw=1)
    ax.axvline(LIVE_S_MAX, color="k", ls="--", lw=1)
    ax.set_yticks(range(len(modes)), [m[0] for m in modes])
    ax.invert_yaxis()
    ax.text(LIVE_S_MAX, -0.5, f" target: live ≤ {LIVE_S_MAX:g} s", va="bottom", fontsize=9)
    ax.set_xlabel("seconds after drift onset (bar: onset → new model live)")
    ax.set_title("Drift recovery timeline per mode", pad=18)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3, fontsize=9)


PLOTTERS: dict[str, tuple[Callable[[Any, dict[str, Any]], None], int, tuple[float, float]]] = {
    "edge_latency.png": (_plot_edge_latency, 2, (11, 4.5)),
    "edge_throughput.png": (_plot_edge_throughput, 1, (7, 4.5)),
    "demo_load_cpu.png": (_plot_demo, 1, (8, 5)),
    "codec.png": (_plot_codec, 2, (9, 4)),
    "fleet.png": (_plot_fleet, 2, (10, 4)),
    "drift_timeline.png": (_plot_drift, 1, (9, 5)),
}


def draw(figures: dict[str, Any], plots: Path) -> list[Path]:
    """One PNG per figure in `plots`; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in figures.items():
        fn, n, size = PLOTTERS[name]
        fig, axes = plt.subplots(1, n, figsize=size)
        try:
            fn(axes, data)
            fig.tight_layout()
            path = plots / name
            fig.savefig(path, dpi=100)
            written.append(path)
        finally:
            plt.close(fig)
    return written


def write(raw: Path, out: Path, plots: Path) -> Report:
    """Load `raw`, write `out` (Markdown) and the figures into `plots`."""
    report = build(load(raw))
    for stale in plots.glob("*.png") if plots.exists() else []:
        if stale.name in PLOTTERS and stale.name not in report.figures:
            stale.unlink()  # a figure of a bench that did not run this time
    draw(report.figures, plots)
    out.write_text(report.markdown)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--raw", type=Path, default=BENCH_DIR / "raw", help="the benches' JSON")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results.md")
    p.add_argument("--plots", type=Path, default=BENCH_DIR / "plots")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not args.raw.is_dir():
        p.error(f"no raw results directory {args.raw}: run `python -m bench` first")
    report = write(args.raw, args.out, args.plots)
    met = sum(c.ok for c in report.checks)
    log.info("wrote %s: %d of %d targets met", args.out, met, len(report.checks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
