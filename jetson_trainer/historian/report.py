"""The import's report: coverage, gaps, windows per class, refusals and warnings, as Markdown."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from protocol.machine_type import DEFAULT_TYPE

from .collect import Collector, Refusals
from .maintenance import Interval

__all__ = ["describe_refusals", "report_markdown"]


def describe_refusals(refusals: Refusals) -> list[str]:
    """One line per refusal kind with its count and first places, for logs and reports."""
    return [
        f"{kind}: {n} (first at {', '.join(refusals.examples.get(kind, []))})"
        for kind, n in sorted(refusals.counts.items())
    ]


def _warnings(
    splits: Mapping[str, tuple[np.ndarray, np.ndarray]],
    by_machine: Mapping[str, list[Interval]],
    collector: Collector,
    machines: Mapping[str, Any],
    classes: Sequence[str] = DEFAULT_TYPE.classes,
) -> list[str]:
    out = []
    for machine in sorted(set(by_machine) - set(collector.samples)):
        lines = sorted(line for iv in by_machine[machine] for line in iv.lines)
        out.append(f"maintenance log lines {lines} name machine {machine}, which has no data")
    if "train" in splits:
        in_train = set(np.unique(splits["train"][1]).tolist())
        absent = [classes[i] for i in range(len(classes)) if i not in in_train]
        if absent:
            out.append(f"train has no window of class(es) {', '.join(absent)}")
        if "infer" in splits:
            only = sorted(set(np.unique(splits["infer"][1]).tolist()) - in_train)
            if only:
                out.append(
                    f"class(es) {', '.join(classes[i] for i in only)} occur only in the "
                    "held-out infer split (the last part in time): lower --holdout or add data"
                )
    empty = [m for m, s in machines.items() if not s["windows"]]
    if empty:
        out.append(
            f"machine(s) {', '.join(empty)} gave no window (every channel is needed in "
            f"unbroken runs of a window's length)"
        )
    return out


def report_markdown(report: Mapping[str, Any]) -> str:
    """The import report as Markdown (one table per machine, splits, refusals, warnings)."""
    grid = report["grid"]
    classes = list(report.get("classes") or DEFAULT_TYPE.classes)
    lines = [
        "# Historian import",
        "",
        f"Grid {grid['sample_hz']} Hz, windows of {grid['window_length']} samples every "
        f"{grid['stride']}, holes up to {grid['max_gap_s']} s filled; holdout "
        f"{report['holdout']}; outside maintenance intervals: "
        f"{'normal' if report['unlabeled_normal'] else 'unlabeled'}.",
        "",
        f"Rows {report['rows']}, samples accepted {report['accepted_samples']}, empty cells "
        f"{report['empty_cells']}, refused "
        f"{sum(r['count'] for r in report['refused'].values())}.",
        "",
        "| machine | first | last | covered s | gaps | gap s | windows | "
        + " | ".join(classes)
        + " | unlabeled | straddling | train | infer |",
        "|---" * (11 + len(classes)) + "|",
    ]
    for name, m in report["machines"].items():
        counts = " | ".join(str(m["classes"][c]) for c in classes)
        lines.append(
            f"| {name} | {m['first']} | {m['last']} | {m['covered_s']:g} | {m['gaps']} | "
            f"{m['gap_s']:g} | {m['windows']} | {counts} | {m['unlabeled']} | "
            f"{m['straddling']} | {m['train']} | {m['infer']} |"
        )
    lines += ["", "| split | " + " | ".join(classes) + " |", "|---" * (1 + len(classes)) + "|"]
    for split, per in report["splits"].items():
        if split != "unlabeled":
            lines.append(f"| {split} | " + " | ".join(str(per[c]) for c in classes) + " |")
    lines += [
        "",
        f"Unlabeled windows (written to unlabeled_data.npy): {report['splits']['unlabeled']}",
    ]
    if report["refused"]:
        lines += ["", "Refused:", ""]
        lines += [
            f"- {kind}: {r['count']} (first at {', '.join(r['first'])})"
            for kind, r in report["refused"].items()
        ]
    if report["warnings"]:
        lines += ["", "Warnings:", ""] + [f"- {w}" for w in report["warnings"]]
    return "\n".join(lines) + "\n"
