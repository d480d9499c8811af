"""Pure running statistics: sliding-window rates, latency percentiles, per-kind counters.

No clock is read here: every method takes `now` (seconds, any monotonic origin), so tests
drive time by hand.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np


class RateMeter:
    """Events per second over the last `window_s` seconds, in one-second buckets.

    >>> r = RateMeter(window_s=4)
    >>> for t in range(8):
    ...     r.add(10, now=float(t))
    >>> r.rate(now=7.5)
    10.0
    >>> r.rate(now=100.0)
    0.0
    """

    def __init__(self, window_s: int = 5) -> None:
        if window_s < 1:
            raise ValueError(f"window_s {window_s} must be ≥ 1")
        self.window_s = window_s
        self._buckets: deque[list[int]] = deque()  # [second, count]
        self.total = 0

    def add(self, n: int, now: float) -> None:
        sec = math.floor(now)
        if self._buckets and self._buckets[-1][0] == sec:
            self._buckets[-1][1] += n
        else:
            self._buckets.append([sec, n])
        self.total += n
        self._trim(sec)

    def _trim(self, sec: int) -> None:
        while self._buckets and self._buckets[0][0] < sec - self.window_s:
            self._buckets.popleft()

    def rate(self, now: float) -> float:
        """Mean rate over the last `window_s` whole seconds before `now`'s second."""
        sec = math.floor(now)
        self._trim(sec)
        done = sum(c for s, c in self._buckets if sec - self.window_s <= s < sec)
        return done / self.window_s


class LatencyWindow:
    """p50/p99 of the last `size` samples (a ring buffer, so memory stays fixed).

    >>> lw = LatencyWindow(size=100)
    >>> for v in range(1, 201):
    ...     lw.add(float(v))
    >>> lw.percentiles()
    (150.5, 199.01)
    >>> LatencyWindow().percentiles()
    (0.0, 0.0)
    """

    def __init__(self, size: int = 2048) -> None:
        if size < 1:
            raise ValueError(f"size {size} must be ≥ 1")
        self._buf = np.zeros(size, dtype=np.float64)
        self._n = 0
        self._i = 0

    def add(self, value: float) -> None:
        self._buf[self._i] = value
        self._i = (self._i + 1) % len(self._buf)
        self._n = min(self._n + 1, len(self._buf))

    def extend(self, values: np.ndarray | list[float]) -> None:
        v = np.asarray(values, dtype=np.float64).ravel()[-len(self._buf) :]
        size, n = len(self._buf), len(v)
        first = min(n, size - self._i)
        self._buf[self._i : self._i + first] = v[:first]
        self._buf[: n - first] = v[first:]
        self._i = (self._i + n) % size
        self._n = min(self._n + n, size)

    def __len__(self) -> int:
        return self._n

    def total(self) -> float:
        """The sum of the samples in the window (a Prometheus summary's `_sum`)."""
        return round(float(self._buf[: self._n].sum()), 3)

    def percentiles(self, qs: tuple[float, float] = (50.0, 99.0)) -> tuple[float, float]:
        if self._n == 0:
            return (0.0, 0.0)
        p = np.percentile(self._buf[: self._n], qs)
        return (round(float(p[0]), 3), round(float(p[1]), 3))


class KindCounter:
    """Counts per kind and decides when a kind may be logged again (at most once per interval).

    >>> c = KindCounter(log_interval_s=10.0)
    >>> [c.count("truncated", now=t) for t in (0.0, 1.0, 9.9, 10.0, 10.5)]
    [True, False, False, True, False]
    >>> c.count("bad_json", now=10.5), c.as_dict()
    (True, {'bad_json': 1, 'truncated': 5})
    >>> c.suppressed("truncated")
    1
    """

    def __init__(self, log_interval_s: float = 10.0) -> None:
        self.log_interval_s = log_interval_s
        self._counts: dict[str, int] = {}
        self._last_log: dict[str, float] = {}
        self._since_log: dict[str, int] = {}

    def count(self, kind: str, now: float, n: int = 1) -> bool:
        """Add `n` to `kind`; True when the caller should log this occurrence."""
        self._counts[kind] = self._counts.get(kind, 0) + n
        last = self._last_log.get(kind)
        if last is None or now - last >= self.log_interval_s:
            self._last_log[kind] = now
            self._since_log[kind] = 0
            return True
        self._since_log[kind] = self._since_log.get(kind, 0) + n
        return False

    def suppressed(self, kind: str) -> int:
        """How many of `kind` were counted but not logged since the last logged one."""
        return self._since_log.get(kind, 0)

    def total(self) -> int:
        return sum(self._counts.values())

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self._counts.items()))
