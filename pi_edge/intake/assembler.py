"""Windows from single readings: per machine, align samples to a grid and cut every T slots.

`pi_edge run --signals FILE` hears one reading per message (protocol/signals.py reads the
file, matches the topic and parses the payload); the `Assembler` here turns those readings into
the same `Window`s the model classifies. Pure: no clock, no MQTT, no lock (the service calls it
from paho's thread under its own lock), so every rule below is tested without a broker.

The rules, per machine:

- A sample at time t goes to slot `round(t * sample_hz)`; window k holds slots kT..kT+T-1 (T is
  the model's window length), so windows are aligned to the epoch: the same readings make the
  same windows on any node, after any restart. The window's `seq` is k and its `timestamp_ns`
  the time of slot kT.
- Out of order: a sample may arrive up to `reorder_s` after a newer one. A window is finished
  when all its T × C cells are filled (at once), or when a sample `reorder_s` past its end
  arrives; finishing a window finishes every older pending one first, so `seq` only goes up.
  At most `max_pending` windows per machine are open (the oldest is finished early).
- A sample for a finished window is `signal_late` (dropped). One more than
  `max_gap_s + reorder_s + T/sample_hz` older than the newest sample means the sender's clock
  went back (or that newest stamp was bogus): `signal_time_jump`, the machine starts over from
  that sample, so one wrong stamp costs at most the windows open at the time.
- Two samples for one cell (slot, channel): the last one wins, `signal_duplicate`.
- A cell with no sample is forward-filled from that channel's previous sample (also one from
  the window before) if it is at most `max_gap_s` older (`signal_filled` counts cells);
  otherwise the window is dropped, `signal_gap_dropped` (also a window with no earlier sample
  to fill its first cells from). Windows that never received a sample leave a gap in `seq`.
- At most `max_machines` machines are tracked: a new one evicts the least recently heard
  (`signal_machines_evicted`), as does `forget` (the node's machine cap).

Counts are in `counts` (`signal_samples` taken, `signal_windows` made, and the kinds above);
`on_problem(kind, n)` is called for each problem kind as it happens, so that the node can log
and count it with its other errors.

>>> from protocol.signals import SignalMap, SignalSpec, slot_ns
>>> m = SignalMap([SignalSpec("p/{machine}/a", "a"), SignalSpec("p/{machine}/b", "b")],
...               ("a", "b"), sample_hz=1.0, max_gap_s=2.0)
>>> asm = Assembler(m, window_length=3)
>>> out = []
>>> for t in (300.0, 301.0, 302.0):  # slots 300..302: window 100
...     out += asm.feed("m1", 0, t, t)
...     out += asm.feed("m1", 1, t, -t)
>>> w = out[0]
>>> w.machine, w.seq, w.timestamp_ns == slot_ns(300, 1.0), w.data.tolist()
('m1', 100, True, [[300.0, -300.0], [301.0, -301.0], [302.0, -302.0]])
>>> asm.feed("m1", 0, 303.0, 1.0) + asm.feed("m1", 0, 302.0, 9.0)  # a late one
[]
>>> dict(asm.counts)
{'signal_samples': 7, 'signal_windows': 1, 'signal_late': 1}
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable

import numpy as np
import numpy.typing as npt

from protocol import Window, check_id
from protocol.signals import SignalMap, slot_ns, slot_of

from .machine_cap import DEFAULT_MAX_MACHINES

__all__ = ["MAX_PENDING", "PROBLEMS", "Assembler"]

MAX_PENDING = 8  # open windows per machine: bounds memory whatever reorder_s says
PROBLEMS = {  # kind → what happened and what to check, for the node's log line
    "signal_bad_value": "a reading was not a finite number or had no valid time",
    "signal_late": "a reading came after its window was finished; raise reorder_s if the "
    "sender reorders that much",
    "signal_duplicate": "a second reading for one slot and channel (the last one wins); a "
    "sender faster than sample_hz, or QoS 1 re-sends",
    "signal_time_jump": "a reading far older than the newest of its machine: the sender's clock "
    "went back (or a bogus stamp came before); the machine's open windows were dropped",
    "signal_gap_dropped": "a window had a hole longer than max_gap_s (or a channel that never "
    "came) and was dropped; check that every channel's topic is published",
    "signal_machines_evicted": "more machines than --max-machines; the least recently heard "
    "was forgotten",
}
_NONE = np.iinfo(np.int64).min // 2  # "no sample yet" as a slot: every gap from it is too long


class _Pending:
    """One open window: T × C cells (NaN = empty) and how many are filled."""

    __slots__ = ("data", "filled")

    def __init__(self, t: int, c: int) -> None:
        self.data: npt.NDArray[np.float64] = np.full((t, c), np.nan)
        self.filled = 0


class _Machine:
    """One machine's open windows and the last real sample of each channel."""

    __slots__ = ("done_below", "last_slot", "last_value", "newest", "pending")

    def __init__(self, c: int) -> None:
        self.pending: dict[int, _Pending] = {}
        self.done_below: int | None = None  # windows below this are finished
        self.newest = _NONE  # the newest slot heard
        self.last_slot = np.full(c, _NONE, np.int64)
        self.last_value = np.zeros(c, np.float64)


class Assembler:
    """Aligned windows per machine from single readings (rules in the module docstring).

    Not thread-safe: one caller at a time (the node holds a lock around `feed` and `forget`).
    """

    def __init__(
        self,
        signals: SignalMap,
        window_length: int,
        *,
        max_machines: int = DEFAULT_MAX_MACHINES,
        on_problem: Callable[[str, int], object] | None = None,
    ) -> None:
        if window_length < 1 or max_machines < 1:
            raise ValueError(f"window_length {window_length} and max_machines must be ≥ 1")
        self.signals = signals
        self.t = window_length
        self.c = len(signals.channels)
        self.max_machines = max_machines
        hz = signals.sample_hz
        self.gap_slots = math.floor(signals.max_gap_s * hz + 1e-9)
        self.reorder_slots = math.ceil(signals.reorder_s * hz - 1e-9)
        self.jump_slots = self.gap_slots + self.reorder_slots + window_length
        self.max_pending = min(MAX_PENDING, self.reorder_slots // window_length + 2)
        self.counts: Counter[str] = Counter()
        self._on_problem = on_problem
        self._machines: OrderedDict[str, _Machine] = OrderedDict()  # least recent first
        self._rows = np.arange(window_length)
        self._columns = signals.columns  # MQTT signals', then the source points' (OPC UA, Modbus)

    # ---- input ---------------------------------------------------------------------------
    def feed(self, machine: str, index: int, t_s: float, value: float) -> list[Window]:
        """Take one reading `index` (a SignalMap reading index: an MQTT signal's, or an OPC UA
        or Modbus point's) for `machine` at `t_s` seconds;
        returns the windows it finished (usually none, one per T slots).

        `machine` must be a valid id (PayloadError "bad_id" before anything is kept).
        """
        st = self._machines.get(machine)
        if st is None:
            check_id(machine)
            st = self._machines[machine] = _Machine(self.c)
            while len(self._machines) > self.max_machines:
                self._machines.popitem(last=False)
                self._problem("signal_machines_evicted")
        else:
            self._machines.move_to_end(machine)
        if not math.isfinite(value) or not math.isfinite(t_s) or t_s < 0:
            self._problem("signal_bad_value")  # SignalMap.parse refuses these already
            return []
        slot = slot_of(t_s, self.signals.sample_hz)
        t = self.t
        w, row = divmod(slot, t)
        if slot < st.newest - self.jump_slots:  # the sender's clock went back: start over
            self._problem("signal_time_jump")
            st = self._machines[machine] = _Machine(self.c)
        elif st.done_below is not None and w < st.done_below:
            self._problem("signal_late")
            return []
        pending = st.pending.get(w)
        if pending is None:
            pending = st.pending[w] = _Pending(t, self.c)
        column = self._columns[index]
        if math.isnan(pending.data[row, column]):
            pending.filled += 1
        else:
            self._problem("signal_duplicate")  # the last one wins (a correction, a re-send)
        pending.data[row, column] = value
        self.counts["signal_samples"] += 1
        st.newest = max(st.newest, slot)
        if pending.filled == t * self.c:
            return self._finish_through(machine, st, w)
        horizon = st.newest - self.reorder_slots  # windows ending before this are finished
        due = max((k for k in st.pending if (k + 1) * t <= horizon), default=None)
        if len(st.pending) > self.max_pending:
            oldest = sorted(st.pending)[len(st.pending) - self.max_pending - 1]
            due = oldest if due is None else max(due, oldest)
        return [] if due is None else self._finish_through(machine, st, due)

    def forget(self, machines: Iterable[str]) -> None:
        """Drop `machines`' open windows (the node's machine cap evicted them)."""
        for m in machines:
            self._machines.pop(m, None)

    def __len__(self) -> int:
        """Machines tracked."""
        return len(self._machines)

    def pending(self, machine: str) -> int:
        """Open windows of `machine` (0 if unknown)."""
        st = self._machines.get(machine)
        return 0 if st is None else len(st.pending)

    # ---- finishing windows -----------------------------------------------------------------
    def _finish_through(self, machine: str, st: _Machine, last: int) -> list[Window]:
        out = []
        for k in sorted(k for k in st.pending if k <= last):
            window = self._finish(machine, st, k)
            if window is not None:
                out.append(window)
        st.done_below = max(last + 1, st.done_below or 0)
        return out

    def _finish(self, machine: str, st: _Machine, k: int) -> Window | None:
        """Close window k: forward-fill short holes, or drop it; update the channels' last."""
        data = st.pending.pop(k).data
        t = self.t
        valid = ~np.isnan(data)
        slots = k * t + self._rows
        # the slot of each cell's latest real sample (this window's, or the carried one)
        src = np.where(valid, slots[:, None], _NONE)
        src = np.maximum.accumulate(np.vstack([st.last_slot[None, :], src]), axis=0)[1:]
        complete = bool(valid.all())
        ok = complete or bool((slots[:, None] - src <= self.gap_slots).all())
        if ok and not complete:
            at = np.maximum.accumulate(np.where(valid, self._rows[:, None], -1), axis=0)
            here = np.take_along_axis(data, np.maximum(at, 0), axis=0)
            filled = np.where(at >= 0, here, st.last_value[None, :])
            self.counts["signal_filled"] += int(t * self.c - valid.sum())
        else:
            filled = data
        seen = valid.any(axis=0)  # carry each channel's last real sample to the next window
        if seen.any():
            last_row = t - 1 - np.argmax(valid[::-1], axis=0)
            cols = np.flatnonzero(seen)
            st.last_slot[cols] = k * t + last_row[cols]
            st.last_value[cols] = data[last_row[cols], cols]
        if not ok:
            self._problem("signal_gap_dropped")
            return None
        self.counts["signal_windows"] += 1
        return Window(machine, k, slot_ns(k * t, self.signals.sample_hz), filled)

    def _problem(self, kind: str) -> None:
        self.counts[kind] += 1
        if self._on_problem is not None:
            self._on_problem(kind, 1)
