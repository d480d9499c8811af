"""The pure part of the plant sources: back-off, the sampling grid, held values, read plans
and the per-source counts. No socket, no clock (times are passed in), no asyncio.

>>> b = Backoff(0.5, 8.0)
>>> [b.next() for _ in range(6)]
[0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
>>> b.reset(); b.next()
0.5
>>> next_tick(100.26, 0.1)  # the next grid time strictly after now
100.3
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from protocol.sources import BIT_TABLES, ModbusRegister

__all__ = [
    "EVENTS",
    "MAX_BITS",
    "MAX_REGISTERS",
    "PROBLEMS",
    "Backoff",
    "Block",
    "Held",
    "SourceStats",
    "next_tick",
    "plan_reads",
]

MAX_REGISTERS = 125  # one read of holding/input registers (Modbus application protocol 6.3)
MAX_BITS = 2000  # one read of coils/discrete inputs
EVENTS = ("connects", "reconnects", "connection_failures", "readings", "bad", "stale")
PROBLEMS = {  # kind → what happened and what to check, for the node's log line
    "source_bad_value": "a source value was bad: an OPC UA status that is not Good, a Modbus "
    "exception response, or a number that is not finite after decoding and scaling",
    "source_stale": "an OPC UA value had no data change for longer than the source's stale_s",
    "source_disconnected": "a source server could not be reached or went away; reconnecting "
    "with back-off",
    "source_bad_point": "the server refused a point (an unknown OPC UA node id); check the "
    "signals file against the server's address space",
}


class Backoff:
    """Delays between reconnect attempts: `first`, doubling up to `most`; `reset()` after a
    connection that worked."""

    def __init__(self, first: float = 0.5, most: float = 30.0) -> None:
        if not 0 < first <= most:
            raise ValueError(f"back-off needs 0 < first ≤ most, got {first}, {most}")
        self.first, self.most = first, most
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(self.most, self._next * 2)
        return delay

    def reset(self) -> None:
        self._next = self.first


def next_tick(now_s: float, interval_s: float) -> float:
    """The first multiple of `interval_s` after `now_s`: when the next sample is taken.

    Sampling on multiples of the interval (1 / sample_hz by default) puts every sample on its
    own grid slot, so jitter of the wake-up does not make duplicates or holes.

    >>> next_tick(10.0, 0.5), next_tick(10.01, 0.5)
    (10.5, 10.5)
    """
    k = math.floor(now_s / interval_s + 1e-9) + 1
    return round(k * interval_s, 9)


class Held:
    """The latest value of one OPC UA point, sampled on the grid (OPC UA reports changes only).

    `sample(now)` gives the value, or the reason there is none: "none" (no value yet), "bad"
    (the last status was not Good) or "stale" (no change for longer than `stale_s`).

    >>> h = Held(stale_s=5.0)
    >>> h.sample(0.0)
    'none'
    >>> h.update(1.5, True, 10.0); h.sample(12.0)
    1.5
    >>> h.sample(16.0)
    'stale'
    >>> h.update(None, False, 16.0); h.sample(16.5)
    'bad'
    """

    __slots__ = ("good", "stale_s", "updated_s", "value")

    def __init__(self, stale_s: float | None = None) -> None:
        self.stale_s = stale_s
        self.value: float | None = None
        self.good = False
        self.updated_s = -math.inf

    def update(self, value: float | None, good: bool, now_s: float) -> None:
        """A data change: the value (None if it was not a number) and whether its status is
        Good; a bad status keeps the point bad until a good value comes."""
        self.good = good and value is not None and math.isfinite(value)
        self.value = value if self.good else None
        self.updated_s = now_s

    def clear(self) -> None:
        """The subscription is gone (disconnected): no value until the next data change."""
        self.value, self.good, self.updated_s = None, False, -math.inf

    def sample(self, now_s: float) -> float | str:
        if self.updated_s == -math.inf:
            return "none"
        if not self.good or self.value is None:
            return "bad"
        if self.stale_s is not None and now_s - self.updated_s > self.stale_s:
            return "stale"
        return self.value


@dataclass(frozen=True, slots=True)
class Block:
    """One Modbus read: a table, the first address, how many, and the registers it serves as
    (reading index, register, offset into the block)."""

    table: str
    address: int
    count: int
    members: tuple[tuple[int, ModbusRegister, int], ...]


def plan_reads(registers: Sequence[tuple[int, ModbusRegister]]) -> list[Block]:
    """Group registers into as few reads as possible: per table, addresses that touch or
    overlap, up to 125 registers (2000 bits) a read. Gaps are never read across — a device may
    answer an address it does not have with an exception for the whole read.

    >>> from protocol.sources import ModbusRegister, Point
    >>> p = Point("m1", "t")
    >>> regs = [(0, ModbusRegister("holding", 0, "float32", "big", "big", p)),
    ...         (1, ModbusRegister("holding", 2, "uint16", "big", "big", p)),
    ...         (2, ModbusRegister("holding", 10, "int16", "big", "big", p)),
    ...         (3, ModbusRegister("coil", 3, "bool", "big", "big", p))]
    >>> [(b.table, b.address, b.count, [m[0] for m in b.members]) for b in plan_reads(regs)]
    [('coil', 3, 1, [3]), ('holding', 0, 3, [0, 1]), ('holding', 10, 1, [2])]
    """
    blocks: list[Block] = []
    ordered = sorted(registers, key=lambda ir: (ir[1].table, ir[1].address, ir[0]))
    start = end = -1
    table = ""
    members: list[tuple[int, ModbusRegister]] = []

    def close() -> None:
        if members:
            blocks.append(
                Block(
                    table, start, end - start, tuple((i, r, r.address - start) for i, r in members)
                )
            )

    for index, reg in ordered:
        limit = MAX_BITS if reg.table in BIT_TABLES else MAX_REGISTERS
        stop = reg.address + reg.width
        if reg.table == table and reg.address <= end and max(end, stop) - start <= limit:
            end = max(end, stop)
            members.append((index, reg))
            continue
        close()
        table, start, end, members = reg.table, reg.address, stop, [(index, reg)]
    close()
    return blocks


class SourceStats:
    """One source's state and counts, as the node's status shows them (`info()`).

    Written by the sources' thread only; `info()` copies (ints and strings: safe to read).
    """

    def __init__(self, name: str, kind: str, points: int) -> None:
        self.name, self.kind, self.points = name, kind, points
        self.state = "connecting"
        # every key from the start: the status thread copies it while this one counts
        self.counts: Counter[str] = Counter(dict.fromkeys(EVENTS, 0))
        self.last_error = ""

    def connected(self) -> None:
        if self.counts["connects"]:
            self.counts["reconnects"] += 1
        self.counts["connects"] += 1
        self.state = "connected"

    def failed(self, error: BaseException | str) -> None:
        """A connection that failed or ended; the error is kept bounded and escaped."""
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        text = text if len(text) <= 200 else text[:199] + "…"
        self.last_error = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
        self.state = "reconnecting"
        self.counts["connection_failures"] += 1

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "state": self.state,
            "points": self.points,
            **{k: self.counts[k] for k in EVENTS},
            **({"last_error": self.last_error} if self.last_error else {}),
        }
