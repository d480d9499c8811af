"""The cap on tracked machines: least-recently-seen machine ids are evicted, and counted.

Every per-machine structure of a node (drift detectors, keeper rate limits, telemetry rows, the
prediction-topic cache) grows by one entry per new id; a flood of ids would grow them without
end. The worker tells `MachineTracker` which machines a batch carried; the ids it evicts are
then forgotten by each of those structures, so none holds more than `cap` machines between
two batches. Pure: the caller does the forgetting.

>>> t = MachineTracker(cap=2)
>>> t.seen(["m1", "m2"]), t.seen(["m1"]), t.seen(["m3"]), t.ids(), t.evicted
([], [], ['m2'], ['m1', 'm3'], 1)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

__all__ = ["DEFAULT_MAX_MACHINES", "STATUS_MACHINES", "MachineTracker"]

DEFAULT_MAX_MACHINES = 1024  # a site's machines per node, with room to spare
STATUS_MACHINES = 32  # machines a status message lists by name (plus how many there are)


class MachineTracker:
    """Machine ids by recency, at most `cap`; not thread-safe (the worker owns it)."""

    def __init__(self, cap: int) -> None:
        if cap < 1:
            raise ValueError(f"machine cap {cap} must be ≥ 1")
        self.cap = cap
        self._ids: OrderedDict[str, None] = OrderedDict()  # least recently seen first
        self.evicted = 0

    def seen(self, machines: Iterable[str]) -> list[str]:
        """Mark `machines` as just seen (in order); returns the ids evicted to stay at `cap`."""
        ids = self._ids
        for m in machines:
            if m in ids:
                ids.move_to_end(m)
            else:
                ids[m] = None
        out = []
        while len(ids) > self.cap:
            out.append(ids.popitem(last=False)[0])
        self.evicted += len(out)
        return out

    def forget(self, machines: Iterable[str]) -> None:
        """Stop tracking `machines` (not an eviction: they went elsewhere; not counted)."""
        for m in machines:
            self._ids.pop(m, None)

    def ids(self) -> list[str]:
        """Tracked ids, least recently seen first."""
        return list(self._ids)

    def __len__(self) -> int:
        return len(self._ids)
