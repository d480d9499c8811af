"""The maintenance log: intervals of a class per machine, and the windows they label (whole
windows only)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from protocol import check_id
from protocol.errors import ConfigError, PayloadError
from protocol.machine_type import DEFAULT_TYPE, MachineType

from .collect import UNREADABLE, _is_empty
from .layout import MACHINE_COLUMNS
from .timestamps import _norm, parse_timestamp

__all__ = ["UNLABELED", "Interval", "label_windows", "parse_maintenance", "with_log_classes"]

UNLABELED = -1  # label of a window no maintenance interval (or flag) gives a class


@dataclass(frozen=True, slots=True)
class Interval:
    """Machine `machine` was in class index `cls` from `start` to `end` (s; inf = open).

    `lines`: the maintenance-log lines it came from (several when same-class ones merged).
    """

    machine: str
    start: float
    end: float
    cls: int
    lines: tuple[int, ...]


def parse_maintenance(
    header: Sequence[object],
    rows: Iterable[tuple[int, Sequence[object]]],
    source: str,
    classes: Sequence[str] = DEFAULT_TYPE.classes,
) -> list[Interval]:
    """Intervals from a `machine, from, to, class` log; ConfigError listing every bad line.

    `to` empty: open until the end of the data. Class names are the machine type's `classes`,
    any case.
    Overlapping or touching intervals of one class merge; overlapping ones of different
    classes are refused, naming both lines.

    >>> head = ["machine", "from", "to", "class"]
    >>> ivs = parse_maintenance(head, [(2, ["m01", "100", "200", "Bearing_Fault"]),
    ...                                (3, ["m01", "150", "", "bearing_fault"])], "log.csv")
    >>> ivs
    [Interval(machine='m01', start=100.0, end=inf, cls=1, lines=(2, 3))]
    >>> parse_maintenance(head, [(2, ["m01", "100", "200", "pump_fault"]),
    ...                          (3, ["m01", "150", "300", "drive_wear"])], "log.csv")
    Traceback (most recent call last):
    ...
    protocol.errors.ConfigError: maintenance log log.csv: line 3: drive_wear from 150.0 to \
300.0 overlaps line 2 (pump_fault from 100.0 to 200.0) on machine m01; a window cannot be both: \
correct one of the intervals
    """
    cols = _columns(header, source)
    errors: list[str] = []
    raw: list[Interval] = []
    by_name = {c.lower(): i for i, c in enumerate(classes)}
    for line, cells in rows:
        if cells is UNREADABLE:
            errors.append(f"line {line}: a field beyond the CSV field limit")
            continue
        if all(_is_empty(c) for c in cells):
            continue
        if len(cells) <= max(cols.values()):
            errors.append(f"line {line}: {len(cells)} cells, expected machine, from, to, class")
            continue
        try:
            machine = check_id(str(cells[cols["machine"]]).strip())
            name = str(cells[cols["class"]]).strip()
            if name.lower() not in by_name:
                raise ValueError(f"class {name!r} is not one of {', '.join(classes)}")
            start = parse_timestamp(cells[cols["from"]])
            end_cell = cells[cols["to"]]
            end = math.inf if _is_empty(end_cell) else parse_timestamp(end_cell)
            if end <= start:
                raise ValueError(f"to ({end}) is not after from ({start})")
        except (ValueError, PayloadError) as exc:
            errors.append(f"line {line}: {exc}")
            continue
        raw.append(Interval(machine, start, end, by_name[name.lower()], (line,)))
    if errors:
        more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
        raise ConfigError(
            f"maintenance log {source}: " + "; ".join(errors[:10]) + more + "; fix those lines"
        )
    return _merge(raw, source, classes)


def _columns(header: Sequence[object], source: str) -> dict[str, int]:
    """Where the log's machine, from, to and class are; ConfigError naming a missing one."""
    names = [_norm(h) for h in header]
    cols: dict[str, int] = {}
    for key, options in (
        ("machine", MACHINE_COLUMNS),
        ("from", ("from", "start")),
        ("to", ("to", "end")),
        ("class", ("class", "label")),
    ):
        found = [names.index(o) for o in options if o in names]
        if not found:
            raise ConfigError(
                f"maintenance log {source}: header {[str(h) for h in header][:8]} has no "
                f"{key!r} column; it needs machine, from, to, class"
            )
        cols[key] = found[0]
    return cols


def with_log_classes(
    header: Sequence[object],
    rows: Iterable[tuple[int, Sequence[object]]],
    source: str,
    kind: MachineType,
) -> MachineType:
    """`kind` with the class names of the log it does not list (any case) appended in the
    order they first appear — for a type with `open_classes`; `kind` itself for a closed one
    (whose unknown names `parse_maintenance` refuses). ConfigError for a name no type may have
    (listing the lines), or past 64 classes.

    >>> from protocol.machine_type import Channel
    >>> fan = MachineType("fan", (Channel("vib"),), classes=("ok",), open_classes=True)
    >>> head = ["machine", "from", "to", "class"]
    >>> rows = [(2, ["fan-1", "1", "2", "Seal leak"]), (3, ["fan-1", "5", "", "OK"]),
    ...         (4, ["fan-2", "1", "2", "seal LEAK"]), (5, ["fan-2", "3", "4", "3"])]
    >>> with_log_classes(head, rows, "log.csv", fan).classes
    ('ok', 'Seal leak', '3')
    """
    if not kind.open_classes:
        return kind
    column = _columns(header, source)["class"]
    errors: list[str] = []
    for line, cells in rows:
        if cells is UNREADABLE or len(cells) <= column or _is_empty(cells[column]):
            continue  # parse_maintenance says what is wrong with the line
        name = str(cells[column]).strip()
        if name.lower() in {c.lower() for c in kind.classes}:
            continue
        try:
            kind = kind.with_class(name)
        except PayloadError as exc:
            errors.append(f"line {line}: {exc}")
    if errors:
        raise ConfigError(f"maintenance log {source}: " + "; ".join(errors[:10]))
    return kind


def _merge(raw: list[Interval], source: str, classes: Sequence[str]) -> list[Interval]:
    out: list[Interval] = []
    for machine in sorted({iv.machine for iv in raw}):
        ivs = sorted((iv for iv in raw if iv.machine == machine), key=lambda iv: iv.start)
        for i, a in enumerate(ivs):
            for b in ivs[i + 1 :]:
                if b.start >= a.end:
                    break
                if a.cls != b.cls:
                    raise ConfigError(
                        f"maintenance log {source}: line {b.lines[0]}: {_describe(b, classes)} "
                        f"overlaps line {a.lines[0]} ({_describe(a, classes)}) on machine "
                        f"{machine}; a window "
                        "cannot be both: correct one of the intervals"
                    )
        merged: list[Interval] = []
        for iv in ivs:
            prev = next((m for m in reversed(merged) if m.cls == iv.cls), None)
            if prev is not None and iv.start <= prev.end:
                merged[merged.index(prev)] = Interval(
                    machine, prev.start, max(prev.end, iv.end), iv.cls, prev.lines + iv.lines
                )
            else:
                merged.append(iv)
        out.extend(merged)
    return out


def _describe(iv: Interval, classes: Sequence[str]) -> str:
    return f"{classes[iv.cls]} from {iv.start} to {iv.end if math.isfinite(iv.end) else 'open'}"


def label_windows(
    starts: np.ndarray,
    window_s: float,
    intervals: Iterable[Interval],
    *,
    unlabeled_normal: bool,
    normal: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, straddling) for windows [start, start + window_s) of one machine.

    A label is the class of the interval that holds the window entirely; UNLABELED (-1) else,
    or `normal` (the type's healthy class) with `unlabeled_normal` for windows that touch no
    interval. `straddling`
    marks windows that overlap an interval only partly: they stay UNLABELED.

    >>> iv = [Interval("m", 100.0, 200.0, 2, (2,))]
    >>> labels, straddling = label_windows(np.array([0.0, 90.0, 100.0, 140.0, 190.0]), 60.0, iv,
    ...                                    unlabeled_normal=True)
    >>> labels.tolist(), straddling.tolist()
    ([0, -1, 2, 2, -1], [False, True, False, False, True])
    """
    starts = np.asarray(starts, np.float64)
    ends = starts + window_s
    labels = np.full(len(starts), UNLABELED, np.int64)
    touched = np.zeros(len(starts), bool)
    for iv in intervals:
        inside = (starts >= iv.start) & (ends <= iv.end)
        labels[inside] = iv.cls
        touched |= (starts < iv.end) & (ends > iv.start) & ~inside
    straddling = touched & (labels == UNLABELED)
    if unlabeled_normal:
        labels[(labels == UNLABELED) & ~straddling] = normal
    return labels, straddling
