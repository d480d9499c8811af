"""Windows + labels → the data set `train` reads: per-machine time split into train and infer."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from protocol.errors import ConfigError
from protocol.machine_type import DEFAULT_TYPE, MachineType

from .collect import Collector
from .maintenance import UNLABELED, Interval, label_windows
from .report import _warnings, describe_refusals
from .windowing import Grid, windows_of_machine

__all__ = ["DataSet", "build_dataset", "split_by_time"]


def split_by_time(
    starts: np.ndarray, window_s: float, holdout: float
) -> tuple[np.ndarray, np.ndarray]:
    """(train, infer) masks: the last `holdout` of the windows in time → infer.

    Windows that would overlap the first infer window are in neither (only with overlapping
    windows, stride < window length), so train and infer share no sample.

    >>> train, infer = split_by_time(np.arange(10) * 30.0, 60.0, 0.2)  # overlapping windows
    >>> np.flatnonzero(train).tolist(), np.flatnonzero(infer).tolist()
    ([0, 1, 2, 3, 4, 5, 6], [8, 9])
    """
    starts = np.asarray(starts, np.float64)
    n_infer = math.floor(holdout * len(starts) + 0.5)
    if n_infer == 0:
        return np.ones(len(starts), bool), np.zeros(len(starts), bool)
    cutoff = np.sort(starts)[len(starts) - n_infer]
    return starts + window_s <= cutoff, starts >= cutoff


@dataclass
class DataSet:
    """What `import` writes: labeled splits, unlabeled windows, a per-window index, a report.

    `splits`: {"train"/"infer": (x (N, T, C) float32, y (N,) int64)}, only non-empty ones;
    `unlabeled`: (M, T, C) windows no label reached (straddling ones included);
    `index`: (split, row in split, machine, start s, label or UNLABELED) per written window.
    """

    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    unlabeled: np.ndarray
    index: list[tuple[str, int, str, float, int]]
    report: dict[str, Any]


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def _class_counts(y: np.ndarray, classes: Sequence[str]) -> dict[str, int]:
    return {name: int((y == i).sum()) for i, name in enumerate(classes)}


def build_dataset(
    collector: Collector,
    intervals: Sequence[Interval],
    grid: Grid,
    *,
    holdout: float,
    unlabeled_normal: bool,
    kind: MachineType = DEFAULT_TYPE,
) -> DataSet:
    """Windows, labels and splits of every machine in `collector`, with the report.

    ConfigError when nothing usable came out: no accepted sample, a model channel never seen
    (map it with --channel-map), or no labeled window (give a maintenance log that covers the
    data, or --unlabeled-normal).
    """
    if not collector.accepted:
        raise ConfigError(
            f"no sample was accepted from {collector.rows} rows; refused: "
            + ("; ".join(describe_refusals(collector.refusals)) or "none")
            + ". Check the file's format (--format long|wide) and channel names (--channel-map)"
        )
    channels, classes = kind.channel_names, kind.classes
    missing = [c for c in channels if c not in collector.channels_seen()]
    if missing:
        unknown = collector.refusals.counts.get("unknown_channel", 0)
        raise ConfigError(
            f"no sample of channel(s) {', '.join(missing)} on any machine; machine type "
            f"{kind.name} has {', '.join(channels)}. {unknown} rows/cells named unknown "
            "channels (first at "
            f"{', '.join(collector.refusals.examples.get('unknown_channel', [])) or '-'}): map "
            "the historian's names with --channel-map OLD=NEW"
        )
    by_machine: dict[str, list[Interval]] = {}
    for iv in intervals:
        by_machine.setdefault(iv.machine, []).append(iv)
    parts: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {
        "train": ([], []),
        "infer": ([], []),
    }
    unlabeled: list[np.ndarray] = []
    index: list[tuple[str, int, str, float, int]] = []
    rows = {"train": 0, "infer": 0, "unlabeled": 0}
    machines: dict[str, Any] = {}
    for machine in sorted(collector.samples):
        mw = windows_of_machine(machine, collector.samples[machine], grid)
        labels, straddling = label_windows(
            mw.starts,
            grid.window_s,
            by_machine.get(machine, []),
            unlabeled_normal=unlabeled_normal,
            normal=classes.index(kind.normal),
        )
        labeled = np.flatnonzero(labels != UNLABELED)
        train, infer = split_by_time(mw.starts[labeled], grid.window_s, holdout)
        for split, pick in (("train", labeled[train]), ("infer", labeled[infer])):
            parts[split][0].append(mw.x[pick])
            parts[split][1].append(labels[pick])
            for i in pick.tolist():
                index.append((split, rows[split], machine, float(mw.starts[i]), int(labels[i])))
                rows[split] += 1
        rest = np.flatnonzero(labels == UNLABELED)
        unlabeled.append(mw.x[rest])
        for i in rest.tolist():
            index.append(("unlabeled", rows["unlabeled"], machine, float(mw.starts[i]), UNLABELED))
            rows["unlabeled"] += 1
        machines[machine] = {
            "first": _iso(mw.first) if mw.span_s else None,
            "last": _iso(mw.last) if mw.span_s else None,
            "span_s": mw.span_s,
            "covered_s": mw.covered_s,
            "gaps": mw.gaps,
            "gap_s": mw.gap_s,
            "filled_samples": mw.filled_samples,
            "merged_samples": mw.merged_samples,
            "partial_windows_dropped": mw.partial_dropped,
            "windows": len(mw.x),
            "classes": _class_counts(labels, classes),
            "unlabeled": int((labels == UNLABELED).sum()),
            "straddling": int(straddling.sum()),
            "holdout_overlap_dropped": int(len(labeled) - train.sum() - infer.sum()),
            "train": int(train.sum()),
            "infer": int(infer.sum()),
        }
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, (xs, ys) in parts.items():
        if rows[split]:
            splits[split] = (np.concatenate(xs), np.concatenate(ys))
    n_ch = len(channels)
    unl = np.concatenate(unlabeled) if unlabeled else np.zeros((0, grid.window_length, n_ch))
    warnings = _warnings(splits, by_machine, collector, machines, classes)
    report: dict[str, Any] = {
        "grid": {
            "sample_hz": grid.sample_hz,
            "max_gap_s": grid.max_gap_s,
            "window_length": grid.window_length,
            "stride": grid.step,
        },
        "machine_type": kind.name,
        "classes": list(classes),
        "holdout": holdout,
        "unlabeled_normal": unlabeled_normal,
        "rows": collector.rows,
        "accepted_samples": collector.accepted,
        "empty_cells": collector.empty_cells,
        "refused": {
            kind: {"count": n, "first": collector.refusals.examples.get(kind, [])}
            for kind, n in sorted(collector.refusals.counts.items())
        },
        "machines": machines,
        "splits": {
            **{s: _class_counts(y, classes) for s, (_, y) in splits.items()},
            "unlabeled": len(unl),
        },
        "warnings": warnings,
    }
    if "train" not in splits:
        raise ConfigError(
            "no labeled window for train: "
            + f"{sum(m['windows'] for m in machines.values())} windows were cut, "
            + f"{rows['unlabeled']} unlabeled ("
            + f"{sum(m['straddling'] for m in machines.values())} straddling an interval). "
            + "Give a maintenance log (--maintenance) whose intervals cover whole windows, "
            + "or --unlabeled-normal if the machines ran normally outside them"
        )
    return DataSet(splits, unl.astype(np.float32), index, report)
