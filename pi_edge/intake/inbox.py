"""The inbox between the MQTT thread and the inference worker, and its micro-batching policy.

The paho thread only calls `Inbox.put` (never blocks: when full, the oldest item is evicted
and counted, because the newest window matters most). The worker calls `Inbox.get_batch`,
which returns up to `policy.max_size` items. Under load (arrivals above `policy.wait_above_per_s`)
it waits at most `policy.max_wait_s` for the batch to fill, and is woken once when it is full,
not on every put. Why: on one GIL, a worker that grabs every window as it lands wakes and
contends with the network thread per window; bench/edge.py measured flat-out throughput swing
between 10k and 16k windows/s run to run that way, and 15k–18k/s with the wait. Below the
threshold nothing waits for a full batch.

At a light, realistic rate (below `policy.low_rate_below_per_s`) the worker instead gathers for
up to `policy.low_rate_wait_s` after the first window (no wake-up per put meanwhile), trading a
few milliseconds of latency for CPU: every batch costs two thread hand-offs (paho → worker, and
worker → paho with the predictions) and the fixed cost of an invoke and of the detectors'
numpy calls, whatever its size. At the demo's 160 windows/s a 50 ms gather makes batches of
~8 and cut pi_edge's CPU per window from ~840 to ~390 µs (bench/demo_load.py, one box, side by
side); the default 100 ms (batches of ~16) took it from 1.09× to 0.93× the no-model ceiling's
CPU per window, 1.27× to 1.05× with the dashboard (one run each, quiet box). A window of 6 s of
samples is then classified up to 0.1 s later. The rates in between (the 1,000/s latency
bench) pay nothing.

A node serving several machine types splits each batch by type: every type's share pays the
fixed costs of an invoke and of its own drift watch, so two types gathered for 100 ms cost what
one type gathered for 50 ms. `BatchPolicy.spread_over(k)` gathers k times as long at a light
rate, so each type's invoke sees the batch one type would (bench/demo_load.py, two types, one
box, side by side: 1.19× → 1.04× the ceiling's CPU per window at 100 → 200 ms); the latency of
a light node grows the same way, to at most 1 s.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
RATE_WINDOW_S = 0.1  # the arrival rate is counted over this much of the recent past
RATE_SAMPLES = 8192  # arrival times kept for it (the rate saturates at 81,920 windows/s)


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """Micro-batch size, and how long to wait for a batch to fill once windows arrive faster
    than `wait_above_per_s` (0: always wait).

    >>> p = BatchPolicy(max_size=24, max_wait_s=0.002)
    >>> p.max_size, p.max_wait_s, p.wait_above_per_s, p.low_rate_wait_s
    (24, 0.002, 0.0, 0.0)
    >>> BatchPolicy(max_size=0)
    Traceback (most recent call last):
    ...
    ValueError: batch max 0 must be in 1..4096
    """

    max_size: int = 64
    max_wait_s: float = 0.001
    wait_above_per_s: float = 0.0
    low_rate_wait_s: float = 0.0
    low_rate_below_per_s: float = 0.0

    def spread_over(self, types: int) -> BatchPolicy:
        """This policy for batches shared by `types` machine types with traffic: the light-rate
        gather is `types` times as long (at most 1 s), so each type's share is what one type's
        batch would be (see the module doc).

        >>> BatchPolicy(low_rate_wait_s=0.1).spread_over(2).low_rate_wait_s
        0.2
        >>> BatchPolicy(low_rate_wait_s=0.3).spread_over(5).low_rate_wait_s
        1.0
        >>> BatchPolicy(low_rate_wait_s=0.1).spread_over(0).low_rate_wait_s
        0.1
        """
        wait = min(1.0, self.low_rate_wait_s * max(1, types))
        return dataclasses.replace(self, low_rate_wait_s=wait)

    def __post_init__(self) -> None:
        if not 0.0 <= self.low_rate_wait_s <= 1.0:
            raise ValueError(f"low-rate batch wait {self.low_rate_wait_s} s must be in 0..1 s")
        if self.low_rate_below_per_s < 0:
            raise ValueError(f"low-rate threshold {self.low_rate_below_per_s}/s must be ≥ 0")
        if not 1 <= self.max_size <= 4096:
            raise ValueError(f"batch max {self.max_size} must be in 1..4096")
        if not 0.0 <= self.max_wait_s <= 1.0:
            raise ValueError(f"batch wait {self.max_wait_s} s must be in 0..1 s")
        if self.wait_above_per_s < 0:
            raise ValueError(f"batch wait threshold {self.wait_above_per_s}/s must be ≥ 0")


class Inbox(Generic[T]):
    """A bounded, thread-safe FIFO that drops its oldest item when full.

    >>> box = Inbox[int](capacity=3)
    >>> [box.put(i) for i in range(5)]
    [False, False, False, True, True]
    >>> box.dropped, box.get_batch(BatchPolicy(max_size=8, max_wait_s=0.0), timeout=0.0)
    (2, [2, 3, 4])

    With `full_wait_s` > 0 a put into a full inbox first waits that long for the worker to take
    a batch (backpressure: paho's thread stops reading, the broker holds the windows) and drops
    the oldest only if no room came. Flat out, receiving and decoding windows only to drop them
    took the CPU the worker needed: the node fell to 0.35× the no-model ceiling, dropping over
    half the windows (a 30,000-window flood on this 2-core box).

    >>> box = Inbox[int](capacity=1, full_wait_s=0.01)
    >>> box.put(1), box.put(2), box.dropped  # nobody took 1 within 10 ms
    (False, True, 1)
    """

    def __init__(self, capacity: int, full_wait_s: float = 0.0) -> None:
        if capacity < 1:
            raise ValueError(f"queue size {capacity} must be ≥ 1")
        if not 0.0 <= full_wait_s <= 1.0:
            raise ValueError(f"full-inbox wait {full_wait_s} s must be in 0..1 s")
        self.capacity = capacity
        self.full_wait_s = full_wait_s
        self._items: deque[T] = deque()
        lock = threading.Lock()
        self._cond = threading.Condition(lock)
        self._room = threading.Condition(lock)  # a put waiting for the worker to take a batch
        self._room_waiters = 0
        self.full_waits = 0  # puts that found the inbox full and waited
        self._need = 0  # items the waiting worker needs before it is worth waking it; 0: none waits
        self.dropped = 0
        self.arrived = 0
        self.arrival_rate = 0.0  # windows/s over the last RATE_WINDOW_S, as of the last batch
        self._times: deque[float] = deque(maxlen=RATE_SAMPLES)  # arrival times, for the rate

    def put(self, item: T) -> bool:
        """Append (waiting up to `full_wait_s` for room when full); True if the oldest item
        was evicted to make room."""
        with self._cond:
            if len(self._items) >= self.capacity and self.full_wait_s > 0:
                self.full_waits += 1
                self._room_waiters += 1
                try:
                    if self._need:  # the worker waits for a fuller batch: it is full now
                        self._need = 0
                        self._cond.notify()
                    self._room.wait_for(lambda: len(self._items) < self.capacity, self.full_wait_s)
                finally:
                    self._room_waiters -= 1
            evicted = len(self._items) >= self.capacity
            if evicted:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._times.append(time.monotonic())
            self.arrived += 1
            if self._need and len(self._items) >= self._need:
                self._need = 0
                self._cond.notify()
        return evicted

    def __len__(self) -> int:
        return len(self._items)

    def wake(self) -> None:
        """Wake a worker waiting in get_batch (e.g. to stop or to swap a model)."""
        with self._cond:
            self._cond.notify_all()

    def get_batch(self, policy: BatchPolicy, timeout: float) -> list[T]:
        """Up to policy.max_size items; [] if none arrived within `timeout` seconds."""
        with self._cond:
            if not self._items:
                self._need = 1
                self._cond.wait(timeout)
                self._need = 0
                if not self._items:
                    return []
            now = time.monotonic()
            times, horizon = self._times, now - RATE_WINDOW_S
            while times and times[0] < horizon:
                times.popleft()
            # a sliding count, current at every batch: after an idle spell, a burst at 1,000/s
            # is seen as one within 40 ms (a rate refreshed every 0.1 s over the idle spell
            # gathered its first 100 windows, which cost the 1,000/s bench its p99)
            self.arrival_rate = len(times) / RATE_WINDOW_S
            wait, enough = 0.0, policy.max_size
            if self.arrival_rate < policy.low_rate_below_per_s:
                wait = policy.low_rate_wait_s  # light traffic: gather a few per invoke, but
                # as many as the threshold rate brings in that time mean it is not light
                # (traffic resuming at 1,000/s after a pause: its first batch waits ≤ 20 ms)
                enough = min(
                    policy.max_size,
                    max(2, math.ceil(policy.low_rate_below_per_s * policy.low_rate_wait_s)),
                )
            elif self.arrival_rate >= policy.wait_above_per_s:
                wait = policy.max_wait_s  # heavy traffic: let the batch fill
            if len(self._items) < enough and wait > 0:
                deadline = now + wait
                while len(self._items) < enough:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._need = enough  # one wake-up when the batch is big enough, not per put
                    self._cond.wait(left)
                    self._need = 0
            n = min(len(self._items), policy.max_size)
            batch = [self._items.popleft() for _ in range(n)]
            if self._room_waiters:
                self._room.notify()
            return batch
