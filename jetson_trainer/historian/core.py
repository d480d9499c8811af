"""Historian exports + a maintenance log → labeled windows: the pure core of `import`.

A plant's historian exports samples as a *long* table (`timestamp, machine, channel, value`,
one sample a row) or a *wide* one (`timestamp, machine, temperature, vibration, …`, one row a
time and machine, empty cells = no sample). This module turns those rows into the windows the
model reads, with no file or clock in sight (`jetson_trainer.historian.command` is the I/O shell):

1. **Rows** (`Collector.feed`): the layout is taken from the header (`detect_layout`): long if
   it has `channel` and `value` columns, wide otherwise. Times go through `parse_timestamp`,
   machine ids through `protocol.check_id`, channel names through the channel map onto
   `protocol.CHANNELS`. A bad row or cell is refused and counted by kind with the first few
   `file:line` places (`Refusals`); it never stops the import.
2. **Grid** (`windows_of_machine`): per machine and channel, samples are put on a grid of
   `sample_hz` slots aligned to the epoch (slot k covers [k/hz, (k+1)/hz)); a slot keeps the
   **last** sample that falls in it (the latest time; on equal times the later row), like a
   historian's "last value" interpolation, so a step stays a step. A hole of at most
   `max_gap_s` (missing slots / sample_hz) is forward-filled from the sample before it; a
   longer hole is left empty and is a *gap*.
3. **Windows**: each run of slots where every channel has a value is cut into windows of
   `window_length` slots every `stride` slots, starting at the run's first slot; the partial
   window left before a gap (or at the end) is dropped and counted.
4. **Labels** (`label_windows`): a window [start, start + T/hz) gets the class of a
   maintenance interval [from, to) of its machine that holds it *entirely*; a window that
   overlaps an interval only partly is *straddling*: unlabeled, counted, never guessed.
   Windows outside every interval are unlabeled, or `normal` with `unlabeled_normal`.
5. **Split** (`split_by_time`): per machine, the last `holdout` fraction of the labeled
   windows in time goes to `infer`, the rest to `train`; windows that would overlap the
   other side (stride < window length) are dropped, so no sample is in both.

Timestamps (`parse_timestamp`): a number is seconds, milliseconds, microseconds or
nanoseconds since the epoch, chosen by magnitude (|t| < 1e11 → s, < 1e14 → ms, < 1e17 → µs,
else ns: 1e11 s is the year 5138 and 1e11 ms the year 1973, so any plausible date reads right);
text is ISO 8601 / RFC 3339 (`2026-11-24T08:00:00Z`, `2026-11-24 09:00:00+01:00`), and a time
without a zone is taken as **UTC**.

>>> c = Collector()
>>> rows = [(2, ["0", "m01", "temperature", "50"]), (3, ["1", "m01", "temperature", "oops"])]
>>> c.feed(detect_layout(["timestamp", "machine", "channel", "value"]), rows, "a.csv")
>>> c.accepted, dict(c.refusals.counts), c.refusals.examples["non_numeric"]
(1, {'non_numeric': 1}, ['a.csv:3'])
"""

from __future__ import annotations

import math
import re
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from protocol import CHANNELS, CLASSES, WINDOW_LENGTH, check_id
from protocol.errors import ConfigError, PayloadError

__all__ = [
    "FORMATS",
    "UNLABELED",
    "Collector",
    "DataSet",
    "Grid",
    "Interval",
    "Layout",
    "MachineWindows",
    "Refusals",
    "build_dataset",
    "describe_refusals",
    "detect_layout",
    "label_windows",
    "parse_channel_map",
    "parse_maintenance",
    "parse_timestamp",
    "report_markdown",
    "split_by_time",
    "windows_of_machine",
]

FORMATS = ("auto", "long", "wide")
UNLABELED = -1  # label of a window no maintenance interval (or flag) gives a class
MAX_EXAMPLES = 5  # places kept per refusal kind
TIME_COLUMNS = ("timestamp", "time", "ts", "datetime")
MACHINE_COLUMNS = ("machine", "machine_id", "asset")
_MS_FROM, _US_FROM, _NS_FROM = 1e11, 1e14, 1e17
_MAX_S = 1e11  # year 5138: anything later is a unit mistake, refused
_SLOT_EPS = 1e-6  # of a slot: absorbs float error in t·hz (10.3 s · 10 Hz = 102.99999…)
_FRACTION = re.compile(r"\.(\d+)")


def _norm(name: object) -> str:
    """A header or channel name compared case- and space-insensitively (BOM dropped)."""
    return str(name).strip().lstrip("\ufeff").strip().lower()


def parse_timestamp(value: object) -> float:
    """Seconds since the epoch (UTC) from a number (unit by magnitude) or ISO 8601 text.

    Raises ValueError saying what was seen. Naive times (no zone) are UTC.

    >>> [parse_timestamp(v) for v in (1700000000, "1700000000000", 1.7e15, "1700000000000000000")]
    [1700000000.0, 1700000000.0, 1700000000.0, 1700000000.0]
    >>> parse_timestamp("2023-11-14T22:13:20Z"), parse_timestamp("2023-11-14 23:13:20.5+01:00")
    (1700000000.0, 1700000000.5)
    >>> parse_timestamp("2023-11-14T22:13:20")  # no zone: UTC
    1700000000.0
    >>> parse_timestamp("yesterday")
    Traceback (most recent call last):
    ...
    ValueError: time 'yesterday' is neither a number (s, ms, µs or ns since the epoch) nor ISO 8601
    """
    if isinstance(value, datetime):
        dt = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return _in_range(dt.timestamp(), value)
    if isinstance(value, bool) or value is None:
        raise ValueError(f"time {value!r} is not a time")
    if isinstance(value, int | float):
        return _in_range(_from_number(value), value)
    text = str(value).strip()
    number: int | float
    try:
        number = int(text)
    except ValueError:
        try:
            number = float(text)
        except ValueError:
            return _in_range(_from_iso(text), value)
    return _in_range(_from_number(number), value)


def _from_number(number: float) -> float:
    size = abs(number)
    if size < _MS_FROM:
        return float(number)
    if size < _US_FROM:
        return number / 1e3
    if size < _NS_FROM:
        return number / 1e6
    return number / 1e9


def _from_iso(text: str) -> float:
    frac = _FRACTION.search(text)
    whole = _FRACTION.sub("", text, count=1) if frac else text
    try:
        dt = datetime.fromisoformat(whole.replace("z", "Z"))
    except ValueError:
        raise ValueError(
            f"time {text[:40]!r} is neither a number (s, ms, µs or ns since the epoch) nor ISO 8601"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp() + (float("0." + frac.group(1)) if frac else 0.0)


def _in_range(seconds: float, seen: object) -> float:
    if not (math.isfinite(seconds) and 0.0 <= seconds < _MAX_S):
        raise ValueError(f"time {str(seen)[:40]!r} is not between 1970 and the year 5138")
    return float(seconds)


def parse_channel_map(items: Iterable[str]) -> dict[str, str]:
    """{historian name: model channel} from `old=new` items; ConfigError on a bad item.

    >>> parse_channel_map(["TT101=temperature", " Vib_RMS = vibration "])
    {'tt101': 'temperature', 'vib_rms': 'vibration'}
    >>> parse_channel_map(["flow=debit"])
    Traceback (most recent call last):
    ...
    protocol.errors.ConfigError: channel map 'flow=debit': 'debit' is not a model channel; \
map onto one of temperature, vibration, pressure, power
    """
    out: dict[str, str] = {}
    for item in items:
        old, sep, new = item.partition("=")
        if not sep or not _norm(old) or not _norm(new):
            raise ConfigError(f"channel map {item!r} is not OLD=NEW (e.g. TT101=temperature)")
        if _norm(new) not in CHANNELS:
            raise ConfigError(
                f"channel map {item!r}: {new.strip()!r} is not a model channel; map onto one "
                f"of {', '.join(CHANNELS)}"
            )
        out[_norm(old)] = _norm(new)
    return out


@dataclass(frozen=True, slots=True)
class Layout:
    """Where the columns are: `fmt` "long" (channel + value columns) or "wide".

    `columns` (wide): (column index, header name, channel index or None if unknown).
    """

    fmt: str
    time: int
    machine: int
    channel: int = -1
    value: int = -1
    columns: tuple[tuple[int, str, int | None], ...] = ()

    @property
    def unknown_columns(self) -> list[str]:
        """Wide columns that name no model channel (their cells are refused)."""
        return [name for _, name, ch in self.columns if ch is None]


def detect_layout(
    header: Sequence[object], fmt: str = "auto", channel_map: Mapping[str, str] | None = None
) -> Layout:
    """The layout of a table from its header; ConfigError naming what is missing.

    >>> detect_layout(["Timestamp", "machine", "channel", "value"]).fmt
    'long'
    >>> w = detect_layout(["time", "machine", "temperature", "TT2"], channel_map={"tt2": "power"})
    >>> w.fmt, w.columns
    ('wide', ((2, 'temperature', 0), (3, 'TT2', 3)))
    """
    if fmt not in FORMATS:
        raise ConfigError(f"format {fmt!r} is not one of {FORMATS}")
    names = [_norm(h) for h in header]
    cmap = channel_map or {}

    def find(options: tuple[str, ...], what: str) -> int:
        for option in options:
            if option in names:
                return names.index(option)
        raise ConfigError(
            f"header {[str(h) for h in header][:12]} has no {what} column (one of "
            f"{', '.join(options)}); long files need timestamp, machine, channel, value; wide "
            "files timestamp, machine and one column per channel"
        )

    time = find(TIME_COLUMNS, "time")
    machine = find(MACHINE_COLUMNS, "machine")
    is_long = "channel" in names and "value" in names
    if fmt == "long" or (fmt == "auto" and is_long):
        return Layout(
            "long", time, machine, find(("channel",), "channel"), find(("value",), "value")
        )
    columns = tuple(
        (i, str(header[i]).strip().lstrip("\ufeff"), _channel_index(names[i], cmap))
        for i in range(len(names))
        if i not in (time, machine)
    )
    if not columns:
        raise ConfigError(
            f"header {[str(h) for h in header][:12]} has no channel columns; a wide file has "
            f"timestamp, machine and one column per channel ({', '.join(CHANNELS)})"
        )
    return Layout("wide", time, machine, columns=columns)


def _channel_index(name: str, cmap: Mapping[str, str]) -> int | None:
    name = cmap.get(name, name)
    return CHANNELS.index(name) if name in CHANNELS else None


@dataclass
class Refusals:
    """Refused rows or cells by kind, with the first `MAX_EXAMPLES` places of each."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, where: str) -> None:
        """Count one refusal of `kind` at `where` ("file:line")."""
        self.counts[kind] = self.counts.get(kind, 0) + 1
        seen = self.examples.setdefault(kind, [])
        if len(seen) < MAX_EXAMPLES:
            seen.append(where)

    @property
    def total(self) -> int:
        """All refusals."""
        return sum(self.counts.values())


class Collector:
    """Accepted samples per machine and channel (compact float arrays) and the refusals.

    `feed` takes rows already split into cells (strings, numbers or datetimes), each with its
    line or row number, so the CSV and the Parquet reader share every rule.
    """

    def __init__(self, channel_map: Mapping[str, str] | None = None) -> None:
        self.channel_map = dict(channel_map or {})
        self.samples: dict[str, list[tuple[array[float], array[float]]]] = {}
        self.refusals = Refusals()
        self.accepted = 0
        self.empty_cells = 0  # wide cells without a sample: not an error
        self.rows = 0
        self._machines_ok: set[str] = set()

    def feed(
        self, layout: Layout, rows: Iterable[tuple[int, Sequence[object]]], source: str
    ) -> None:
        """Parse `rows` ((line, cells) pairs) of `source` laid out as `layout`."""
        need = max(layout.time, layout.machine, layout.channel, layout.value)
        for line, cells in rows:
            self.rows += 1
            where = f"{source}:{line}"
            if len(cells) <= need:
                self.refusals.add("short_row", where)
                continue
            machine = self._machine(cells[layout.machine], where)
            if machine is None:
                continue
            try:
                t = parse_timestamp(cells[layout.time])
            except ValueError:
                self.refusals.add("bad_time", where)
                continue
            if layout.fmt == "long":
                ch = _channel_index(_norm(cells[layout.channel]), self.channel_map)
                if ch is None:
                    self.refusals.add("unknown_channel", where)
                    continue
                self._add(machine, ch, t, cells[layout.value], where, empty_ok=False)
            else:
                for i, name, ch in layout.columns:
                    cell = cells[i] if i < len(cells) else None
                    if ch is None:
                        if not _is_empty(cell):
                            self.refusals.add("unknown_channel", f"{where} column {name!r}")
                        continue
                    self._add(machine, ch, t, cell, where, empty_ok=True)

    def _machine(self, cell: object, where: str) -> str | None:
        name = str(cell).strip() if cell is not None else ""
        if name in self._machines_ok:
            return name
        try:
            check_id(name)
        except PayloadError:
            self.refusals.add("bad_machine", where)
            return None
        self._machines_ok.add(name)
        return name

    def _add(
        self, machine: str, ch: int, t: float, cell: object, where: str, *, empty_ok: bool
    ) -> None:
        if _is_empty(cell):
            if empty_ok:
                self.empty_cells += 1
            else:
                self.refusals.add("empty_value", where)
            return
        try:
            if isinstance(cell, bool):
                raise ValueError(cell)
            value = float(cell) if isinstance(cell, int | float) else float(str(cell).strip())
        except (TypeError, ValueError, OverflowError):
            self.refusals.add("non_numeric", where)
            return
        if not math.isfinite(value):
            self.refusals.add("not_finite", where)
            return
        per_channel = self.samples.get(machine)
        if per_channel is None:
            per_channel = [(array("d"), array("d")) for _ in CHANNELS]
            self.samples[machine] = per_channel
        per_channel[ch][0].append(t)
        per_channel[ch][1].append(value)
        self.accepted += 1

    def channels_seen(self) -> set[str]:
        """Model channels with at least one accepted sample on any machine."""
        return {
            CHANNELS[i]
            for per_channel in self.samples.values()
            for i, (ts, _) in enumerate(per_channel)
            if len(ts)
        }


def _is_empty(cell: object) -> bool:
    return cell is None or (isinstance(cell, str) and not cell.strip())


@dataclass(frozen=True, slots=True)
class Grid:
    """How samples become windows: slots per second, the longest hole filled, window and stride.

    >>> Grid(sample_hz=2.0, max_gap_s=5.0).max_gap_slots, Grid().window_s
    (10, 60.0)
    """

    sample_hz: float = 1.0
    max_gap_s: float = 5.0
    window_length: int = WINDOW_LENGTH
    stride: int | None = None  # None: window_length (windows side by side)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.sample_hz) and self.sample_hz > 0):
            raise ConfigError(f"sample rate {self.sample_hz} Hz must be a number above 0")
        if not (math.isfinite(self.max_gap_s) and self.max_gap_s >= 0):
            raise ConfigError(f"max gap {self.max_gap_s} s must be 0 or more")
        if self.window_length < 1 or (self.stride is not None and self.stride < 1):
            raise ConfigError("window length and stride must be at least 1 sample")

    @property
    def step(self) -> int:
        """Slots from one window's start to the next."""
        return self.stride or self.window_length

    @property
    def max_gap_slots(self) -> int:
        """The longest run of missing slots that is forward-filled."""
        return math.floor(self.max_gap_s * self.sample_hz + 1e-9)

    @property
    def window_s(self) -> float:
        """A window's duration in seconds."""
        return self.window_length / self.sample_hz


@dataclass
class MachineWindows:
    """One machine's windows and what it took to make them.

    `starts`: window start times (s since the epoch), `x`: (N, T, C) float32. Coverage figures
    are in seconds of grid slots: `span_s` first to last sample, `covered_s` slots with every
    channel (after filling), `gaps`/`gap_s` the runs of slots without.
    """

    machine: str
    starts: np.ndarray
    x: np.ndarray
    first: float = 0.0
    last: float = 0.0
    span_s: float = 0.0
    covered_s: float = 0.0
    filled_samples: int = 0
    merged_samples: int = 0  # samples that shared a slot with a later one (last wins)
    gaps: int = 0
    gap_s: float = 0.0
    partial_dropped: int = 0


def windows_of_machine(
    machine: str, per_channel: Sequence[tuple[Sequence[float], Sequence[float]]], grid: Grid
) -> MachineWindows:
    """Resample one machine's samples onto `grid` and cut its windows (module docstring, 2-3).

    >>> ts = [float(t) for t in range(10) if t != 4]            # slot 4 missing: filled
    >>> mw = windows_of_machine("m", [(ts, [float(t) for t in ts])] * 4, Grid(window_length=3))
    >>> mw.x[:, :, 0].tolist(), mw.filled_samples, mw.partial_dropped  # 1 slot × 4 channels
    ([[0.0, 1.0, 2.0], [3.0, 3.0, 5.0], [6.0, 7.0, 8.0]], 4, 1)
    >>> gap = [0.0, 1.0, 2.0, 9.0, 10.0, 11.0]                  # 6 missing slots > 5 s: a gap
    >>> mw = windows_of_machine("m", [(gap, gap)] * 4, Grid(window_length=3))
    >>> mw.starts.tolist(), mw.gaps, mw.gap_s
    ([0.0, 9.0], 1, 6.0)
    """
    hz = grid.sample_hz
    n_ch = len(per_channel)
    slot_k: list[np.ndarray] = []
    slot_v: list[np.ndarray] = []
    merged = 0
    for ts, vs in per_channel:
        t = np.asarray(ts, np.float64)
        v = np.asarray(vs, np.float64)
        order = np.argsort(t, kind="stable")
        k = np.floor(t[order] * hz + _SLOT_EPS).astype(np.int64)
        last = np.ones(len(k), bool)
        last[:-1] = k[1:] != k[:-1]
        merged += int(len(k) - last.sum())
        slot_k.append(k[last])
        slot_v.append(v[order][last])
    out = MachineWindows(machine, np.zeros(0), np.zeros((0, grid.window_length, n_ch), np.float32))
    occupied = np.unique(np.concatenate(slot_k)) if slot_k else np.zeros(0, np.int64)
    if not len(occupied):
        return out
    max_gap = grid.max_gap_slots
    # segments: stretches without a hole longer than max_gap in the union of all channels,
    # so memory is bounded by the samples, not by the time a machine's data spans
    breaks = np.flatnonzero(np.diff(occupied) - 1 > max_gap)
    seg_first = np.r_[occupied[0], occupied[breaks + 1]]
    seg_last = np.r_[occupied[breaks], occupied[-1]]
    out.merged_samples = merged
    out.first, out.last = occupied[0] / hz, (occupied[-1] + 1) / hz
    out.span_s = (int(occupied[-1]) - int(occupied[0]) + 1) / hz
    out.gaps = len(breaks)
    out.gap_s = float(np.sum(seg_first[1:] - seg_last[:-1] - 1)) / hz
    starts: list[np.ndarray] = []
    xs: list[np.ndarray] = []
    covered = 0
    for k0, k1 in zip(seg_first.tolist(), seg_last.tolist(), strict=True):
        dense, filled = _dense(slot_k, slot_v, k0, k1, max_gap)
        out.filled_samples += filled
        valid = np.isfinite(dense).all(axis=1)
        covered += int(valid.sum())
        run_first, run_last = _runs(valid)
        gap_first, gap_last = _runs(~valid)
        out.gaps += len(gap_first)
        out.gap_s += float(np.sum(gap_last - gap_first + 1)) / hz
        for r0, r1 in zip(run_first.tolist(), run_last.tolist(), strict=True):
            length = r1 - r0 + 1
            n = (
                (length - grid.window_length) // grid.step + 1
                if length >= grid.window_length
                else 0
            )
            offsets = r0 + np.arange(n) * grid.step
            if offsets.size:
                idx = offsets[:, None] + np.arange(grid.window_length)[None, :]
                xs.append(dense[idx].astype(np.float32))
                starts.append((k0 + offsets) / hz)
            end = int(offsets[-1]) + grid.window_length if offsets.size else r0
            out.partial_dropped += int(end <= r1)
    out.covered_s = covered / hz
    if xs:
        out.x = np.concatenate(xs)
        out.starts = np.concatenate(starts).astype(np.float64)
    return out


def _dense(
    slot_k: list[np.ndarray], slot_v: list[np.ndarray], k0: int, k1: int, max_gap: int
) -> tuple[np.ndarray, int]:
    """Slots k0..k1 × channels, holes of ≤ max_gap slots forward-filled, longer ones NaN."""
    length = k1 - k0 + 1
    dense = np.full((length, len(slot_k)), np.nan)
    filled = 0
    pos = np.arange(length)
    for c, (k, v) in enumerate(zip(slot_k, slot_v, strict=True)):
        lo, hi = np.searchsorted(k, k0, "left"), np.searchsorted(k, k1, "right")  # k is sorted
        at = k[lo:hi] - k0
        if not at.size:
            continue
        dense[at, c] = v[lo:hi]
        present = np.zeros(length, bool)
        present[at] = True
        prev = np.maximum.accumulate(np.where(present, pos, -1))  # last sample at or before
        nxt = np.minimum.accumulate(np.where(present, pos, length)[::-1])[::-1]  # next one
        hole = nxt - prev - 1  # the missing run a slot sits in (a trailing one counts to k1)
        fill = ~present & (prev >= 0) & (hole <= max_gap)
        dense[fill, c] = dense[prev[fill], c]
        filled += int(fill.sum())
    return dense, filled


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, last) indices of each run of True in `mask`.

    >>> [a.tolist() for a in _runs(np.array([1, 1, 0, 1, 0, 0, 1], bool))]
    [[0, 3, 6], [1, 3, 6]]
    """
    edges = np.diff(np.r_[0, mask.astype(np.int8), 0])
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1


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
    header: Sequence[object], rows: Iterable[tuple[int, Sequence[object]]], source: str
) -> list[Interval]:
    """Intervals from a `machine, from, to, class` log; ConfigError listing every bad line.

    `to` empty: open until the end of the data. Class names are `protocol.CLASSES`, any case.
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
    errors: list[str] = []
    raw: list[Interval] = []
    by_name = {c.lower(): i for i, c in enumerate(CLASSES)}
    for line, cells in rows:
        if all(_is_empty(c) for c in cells):
            continue
        if len(cells) <= max(cols.values()):
            errors.append(f"line {line}: {len(cells)} cells, expected machine, from, to, class")
            continue
        try:
            machine = check_id(str(cells[cols["machine"]]).strip())
            name = str(cells[cols["class"]]).strip()
            if name.lower() not in by_name:
                raise ValueError(f"class {name!r} is not one of {', '.join(CLASSES)}")
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
    return _merge(raw, source)


def _merge(raw: list[Interval], source: str) -> list[Interval]:
    out: list[Interval] = []
    for machine in sorted({iv.machine for iv in raw}):
        ivs = sorted((iv for iv in raw if iv.machine == machine), key=lambda iv: iv.start)
        for i, a in enumerate(ivs):
            for b in ivs[i + 1 :]:
                if b.start >= a.end:
                    break
                if a.cls != b.cls:
                    raise ConfigError(
                        f"maintenance log {source}: line {b.lines[0]}: {_describe(b)} overlaps "
                        f"line {a.lines[0]} ({_describe(a)}) on machine {machine}; a window "
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


def _describe(iv: Interval) -> str:
    return f"{CLASSES[iv.cls]} from {iv.start} to {iv.end if math.isfinite(iv.end) else 'open'}"


def label_windows(
    starts: np.ndarray, window_s: float, intervals: Iterable[Interval], *, unlabeled_normal: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, straddling) for windows [start, start + window_s) of one machine.

    A label is the class of the interval that holds the window entirely; UNLABELED (-1) else,
    or 0 (normal) with `unlabeled_normal` for windows that touch no interval. `straddling`
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
        labels[(labels == UNLABELED) & ~straddling] = CLASSES.index("normal")
    return labels, straddling


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


def describe_refusals(refusals: Refusals) -> list[str]:
    """One line per refusal kind with its count and first places, for logs and reports."""
    return [
        f"{kind}: {n} (first at {', '.join(refusals.examples.get(kind, []))})"
        for kind, n in sorted(refusals.counts.items())
    ]


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


def _class_counts(y: np.ndarray) -> dict[str, int]:
    return {name: int((y == i).sum()) for i, name in enumerate(CLASSES)}


def build_dataset(
    collector: Collector,
    intervals: Sequence[Interval],
    grid: Grid,
    *,
    holdout: float,
    unlabeled_normal: bool,
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
    missing = [c for c in CHANNELS if c not in collector.channels_seen()]
    if missing:
        unknown = collector.refusals.counts.get("unknown_channel", 0)
        raise ConfigError(
            f"no sample of channel(s) {', '.join(missing)} on any machine; the model needs "
            f"{', '.join(CHANNELS)}. {unknown} rows/cells named unknown channels (first at "
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
            mw.starts, grid.window_s, by_machine.get(machine, []), unlabeled_normal=unlabeled_normal
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
            "classes": _class_counts(labels),
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
    n_ch = len(CHANNELS)
    unl = np.concatenate(unlabeled) if unlabeled else np.zeros((0, grid.window_length, n_ch))
    warnings = _warnings(splits, by_machine, collector, machines)
    report: dict[str, Any] = {
        "grid": {
            "sample_hz": grid.sample_hz,
            "max_gap_s": grid.max_gap_s,
            "window_length": grid.window_length,
            "stride": grid.step,
        },
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
            **{s: _class_counts(y) for s, (_, y) in splits.items()},
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


def _warnings(
    splits: Mapping[str, tuple[np.ndarray, np.ndarray]],
    by_machine: Mapping[str, list[Interval]],
    collector: Collector,
    machines: Mapping[str, Any],
) -> list[str]:
    out = []
    for machine in sorted(set(by_machine) - set(collector.samples)):
        lines = sorted(line for iv in by_machine[machine] for line in iv.lines)
        out.append(f"maintenance log lines {lines} name machine {machine}, which has no data")
    if "train" in splits:
        in_train = set(np.unique(splits["train"][1]).tolist())
        absent = [CLASSES[i] for i in range(len(CLASSES)) if i not in in_train]
        if absent:
            out.append(f"train has no window of class(es) {', '.join(absent)}")
        if "infer" in splits:
            only = sorted(set(np.unique(splits["infer"][1]).tolist()) - in_train)
            if only:
                out.append(
                    f"class(es) {', '.join(CLASSES[i] for i in only)} occur only in the "
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
        + " | ".join(CLASSES)
        + " | unlabeled | straddling | train | infer |",
        "|---" * (11 + len(CLASSES)) + "|",
    ]
    for name, m in report["machines"].items():
        classes = " | ".join(str(m["classes"][c]) for c in CLASSES)
        lines.append(
            f"| {name} | {m['first']} | {m['last']} | {m['covered_s']:g} | {m['gaps']} | "
            f"{m['gap_s']:g} | {m['windows']} | {classes} | {m['unlabeled']} | "
            f"{m['straddling']} | {m['train']} | {m['infer']} |"
        )
    lines += ["", "| split | " + " | ".join(CLASSES) + " |", "|---" * (1 + len(CLASSES)) + "|"]
    for split, counts in report["splits"].items():
        if split != "unlabeled":
            lines.append(f"| {split} | " + " | ".join(str(counts[c]) for c in CLASSES) + " |")
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
