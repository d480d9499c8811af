"""The simulator as the technician who answers a node's label requests (`--answer-label-requests`).

pi_edge asks for the labels of the windows it is least sure about on its own
`{prefix}/labels/requests/{node}` (protocol.label_request). The simulator knows the true class
of every window it published, so it can answer each requested window with a label event for
exactly that window's [from, to),
after `delay_s` (a technician is not instant), on `{prefix}/labels`. This is what lets the live
loop heal from a handful of labels without in-band ground truth.

Pure: the publisher feeds the windows it sent with their true classes (`remember`), hands over
decoded requests (`submit`, paho's thread) and publishes what `due(now)` returns.

>>> import numpy as np
>>> from protocol import Window
>>> from protocol.label_request import LabelRequest, LabelRequests
>>> a = RequestAnswerer(delay_s=5.0)
>>> w = Window("m01", 7, 1_795_507_190_250_000_000, np.zeros((60, 4), np.float32))
>>> a.remember([w], ["pump_fault"])
>>> ts = w.timestamp_ns / 1e9
>>> req = LabelRequests("pi-1", ts, (LabelRequest("m01", ts, ts + 1e-6, "normal", 0.4, 7),
...                                  LabelRequest("m09", ts, ts + 1e-6, "normal", 0.4, 1)))
>>> a.submit(req.to_json(), now=100.0)
>>> a.due(now=104.0), [(e.machine, e.cls, e.start) for e in a.due(now=105.0)]  # ts_ns / 1e9
([], [('m01', 'pump_fault', 1795507190.2499998)])
>>> a.counts
{'requests': 1, 'asked': 2, 'answered': 1, 'unknown': 1, 'refused': 0, 'dropped': 0}
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Sequence

from protocol import PayloadError, Window
from protocol.label_request import LabelRequests
from protocol.labels import LabelEvent

__all__ = ["RequestAnswerer"]

REMEMBERED = 65_536  # published windows whose true class is remembered (~7 min of 16 × 10 Hz)
MAX_PENDING = 4096  # answers waiting for their delay


class RequestAnswerer:
    """True classes of recent windows; label requests in, delayed label events out."""

    def __init__(
        self, delay_s: float = 5.0, source: str = "sensor_sim", remembered: int = REMEMBERED
    ) -> None:
        if delay_s < 0 or remembered < 1:
            raise ValueError("the answer delay must be ≥ 0 and remembered ≥ 1")
        self.delay_s = delay_s
        self.source = source
        self.remembered = remembered
        self._truth: OrderedDict[tuple[str, int], tuple[int, str]] = OrderedDict()
        self._pending: deque[tuple[float, LabelEvent]] = deque()
        self._lock = threading.Lock()  # paho's thread submits, the publishing loop does the rest
        self.counts = {
            "requests": 0,
            "asked": 0,
            "answered": 0,
            "unknown": 0,
            "refused": 0,
            "dropped": 0,
        }

    def remember(self, windows: Sequence[Window], classes: Sequence[str]) -> None:
        """The windows just published and their true class names."""
        with self._lock:
            truth = self._truth
            for w, cls in zip(windows, classes, strict=True):
                truth[(w.machine, w.seq)] = (w.timestamp_ns, cls)
            while len(truth) > self.remembered:
                truth.popitem(last=False)

    def submit(self, payload: bytes, now: float, asker: str | None = None) -> None:
        """A label request as received from node `asker` (its topic's; None: the legacy shared
        topic, where only the payload names the node); its answers are due at `now` + delay. A
        bad payload, or one naming another node than its topic's, is counted (`refused`) and
        ignored: any node may ask, nobody must stop the simulator."""
        try:
            requests = LabelRequests.from_json(payload)
        except PayloadError:
            with self._lock:
                self.counts["refused"] += 1
            return
        if asker is not None and requests.node != asker:  # a node asks only in its own name
            with self._lock:
                self.counts["refused"] += 1
            return
        with self._lock:
            self.counts["requests"] += 1
            for r in requests.requests:
                self.counts["asked"] += 1
                known = self._truth.get((r.machine, r.seq))
                # the same window: the request's float seconds are ts_ns / 1e9 (±0.3 µs)
                if known is None or abs(known[0] / 1e9 - r.start) >= 1e-6:
                    self.counts["unknown"] += 1  # not ours, or too long ago
                    continue
                if len(self._pending) >= MAX_PENDING:
                    self.counts["dropped"] += 1
                    continue
                event = r.label_event(known[1], source=self.source)
                self._pending.append((now + self.delay_s, event))

    def due(self, now: float) -> list[LabelEvent]:
        """The answers whose delay has passed, oldest first."""
        out = []
        with self._lock:
            while self._pending and self._pending[0][0] <= now:
                out.append(self._pending.popleft()[1])
            self.counts["answered"] += len(out)
        return out
