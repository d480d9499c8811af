"""Samples → windows: a slot grid per machine, holes forward-filled up to max_gap_s, runs cut
into windows."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from protocol.errors import ConfigError
from protocol.machine_type import DEFAULT_TYPE

__all__ = ["Grid", "MachineWindows", "windows_of_machine"]

_SLOT_EPS = 1e-6  # of a slot: absorbs float error in t·hz (10.3 s · 10 Hz = 102.99999…)


@dataclass(frozen=True, slots=True)
class Grid:
    """How samples become windows: slots per second, the longest hole filled, window and stride.

    >>> Grid(sample_hz=2.0, max_gap_s=5.0).max_gap_slots, Grid().window_s
    (10, 60.0)
    """

    sample_hz: float = 1.0
    max_gap_s: float = 5.0
    window_length: int = DEFAULT_TYPE.window_length
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
