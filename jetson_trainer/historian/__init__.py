"""Historian exports + a maintenance log → labeled windows: the pure core of `import`,
one job per module.

A plant's historian exports samples as a *long* table (`timestamp, machine, channel, value`,
one sample a row) or a *wide* one (`timestamp, machine, temperature, vibration, …`, one row a
time and machine, empty cells = no sample). This module turns those rows into the windows the
model reads, with no file or clock in sight (`command.py` is the I/O shell):

1. **Rows** (collect.py `Collector.feed`, layout.py): the layout is taken from the header
   (`detect_layout`): long if it has `channel` and `value` columns, wide otherwise. Times go
   through `parse_timestamp`, machine ids through `protocol.check_id`, channel names through
   the channel map onto the machine type's channels. A bad row or cell is refused and counted
   by kind with the first few `file:line` places (`Refusals`); it never stops the import.
2. **Grid** (windowing.py `windows_of_machine`): per machine and channel, samples are put on a
   grid of `sample_hz` slots aligned to the epoch (slot k covers [k/hz, (k+1)/hz)); a slot keeps the
   **last** sample that falls in it (the latest time; on equal times the later row), like a
   historian's "last value" interpolation, so a step stays a step. A hole of at most
   `max_gap_s` (missing slots / sample_hz) is forward-filled from the sample before it; a
   longer hole is left empty and is a *gap*.
3. **Windows**: each run of slots where every channel has a value is cut into windows of
   `window_length` slots every `stride` slots, starting at the run's first slot; the partial
   window left before a gap (or at the end) is dropped and counted.
4. **Labels** (maintenance.py `label_windows`): a window [start, start + T/hz) gets the class of a
   maintenance interval [from, to) of its machine that holds it *entirely*; a window that
   overlaps an interval only partly is *straddling*: unlabeled, counted, never guessed.
   Windows outside every interval are unlabeled, or `normal` with `unlabeled_normal`.
5. **Split** (dataset.py `split_by_time`; report.py writes the report): per machine, the last
   `holdout` fraction of the labeled windows in time goes to `infer`, the rest to `train`;
   windows that would overlap the other side (stride < window length) are dropped, so no
   sample is in both.

Timestamps (timestamps.py `parse_timestamp`): a number is seconds, milliseconds, microseconds or
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

from .collect import MAX_EXAMPLES, Collector, Refusals
from .dataset import DataSet, build_dataset, split_by_time
from .layout import FORMATS, MACHINE_COLUMNS, TIME_COLUMNS, Layout, detect_layout, parse_channel_map
from .maintenance import UNLABELED, Interval, label_windows, parse_maintenance
from .report import describe_refusals, report_markdown
from .timestamps import parse_timestamp
from .windowing import Grid, MachineWindows, windows_of_machine

__all__ = [
    "FORMATS",
    "MACHINE_COLUMNS",
    "MAX_EXAMPLES",
    "TIME_COLUMNS",
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
