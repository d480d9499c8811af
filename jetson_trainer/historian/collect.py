"""Rows → per-machine, per-channel samples; every bad row or cell is refused and counted by
kind, never fatal.

A value must be finite as the float32 the model reads (`1e308` is finite in float64 and +inf in
float32: `out_of_range`); a row with a cell longer than `MAX_CELL` characters, or one the file
reader could not split (`UNREADABLE`), is refused whole (`oversized_field`, `unreadable_row`) —
that row only, never the import."""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from protocol import check_id
from protocol.errors import PayloadError
from protocol.machine_type import DEFAULT_TYPE

from .layout import Layout, _channel_index
from .timestamps import _norm, parse_timestamp

__all__ = ["MAX_CELL", "MAX_EXAMPLES", "UNREADABLE", "Collector", "Refusals"]

MAX_EXAMPLES = 5  # places kept per refusal kind
MAX_CELL = 1024  # characters in one cell: a timestamp, a machine id, a channel or a number
FLOAT32_MAX = 3.4028234663852886e38  # the largest finite float32
# what a file reader yields for a row it could not split (a field beyond the CSV field limit)
UNREADABLE: tuple[object, ...] = ("\x00unreadable row",)


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

    def __init__(
        self,
        channel_map: Mapping[str, str] | None = None,
        channels: Sequence[str] = DEFAULT_TYPE.channel_names,
    ) -> None:
        self.channel_map = dict(channel_map or {})
        self.channels = tuple(channels)  # the machine type's, in its order
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
            if cells is UNREADABLE:
                self.refusals.add("unreadable_row", where)
                continue
            if any(isinstance(c, str | bytes) and len(c) > MAX_CELL for c in cells):
                self.refusals.add("oversized_field", where)
                continue
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
                ch = _channel_index(_norm(cells[layout.channel]), self.channel_map, self.channels)
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
        if abs(value) > FLOAT32_MAX:  # finite here, +inf as the float32 the model reads
            self.refusals.add("out_of_range", where)
            return
        per_channel = self.samples.get(machine)
        if per_channel is None:
            per_channel = [(array("d"), array("d")) for _ in self.channels]
            self.samples[machine] = per_channel
        per_channel[ch][0].append(t)
        per_channel[ch][1].append(value)
        self.accepted += 1

    def channels_seen(self) -> set[str]:
        """Channels with at least one accepted sample on any machine."""
        return {
            self.channels[i]
            for per_channel in self.samples.values()
            for i, (ts, _) in enumerate(per_channel)
            if len(ts)
        }


def _is_empty(cell: object) -> bool:
    return cell is None or (isinstance(cell, str) and not cell.strip())
