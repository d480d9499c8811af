"""Which held windows to ask a technician to label: the ones whose label would help most.

After a drift the trainer recovers from a handful of labels (2 per class with replay), provided
they are the right ones: windows the model is unsure about (they sit where the drift moved the
classes), spread over the classes the model predicts and over the machines (one drifting
machine's 50 least sure windows teach less than 8 windows of 4 classes on 4 machines). The node
holds its recent windows anyway (labels.RecentWindows); this module picks among them, purely:

- candidates are held windows without a label that were not asked for before, and either
  unsure (confidence below `sure_at`: the serving model's validation windows are rarely less
  sure, estimate.Reference.sure_at) or of a machine whose drift state is not ok (a drifting
  machine's confident windows may be confidently wrong: regime drift); a sure window of a
  healthy machine would spend a scarce label on what the model knows;
- least sure first: smallest margin between the two top probabilities, then lowest confidence,
  then newest (its answer must find it still held);
- round robin over the predicted classes (in order of their least sure window), and within a
  class over its machines, so 8 picks are 2 of each class the model predicts, from different
  machines, each the least sure of its machine (the trainer fine-tunes once it has 2 labels of
  every class; the least sure windows alone sit between two confusable classes); at most
  `per_machine` windows of one machine per request;
- while machines drift the predictions are not to be trusted (regime drift: confidently
  wrong), so the picks go round robin over the machines instead, one each, those asked longest
  ago first: each machine's current state is a draw of the true classes. Live, 90 s of regime
  drift, 16 windows asked: with ties broken oldest first, 5 to 10 of the 16 answers found
  their window (the oldest held ones expired before the answer) and only 2 classes; now 15 of
  16, all 4 classes;
- at most `per_minute` windows asked for in any 60 s (`Budget`), and only while the node's drift
  verdict is suspect/drift or its label-free accuracy estimate is below `below` (`LabelAsker`).

The shell (service.py) turns the picks into a `protocol.label_request.LabelRequests` on
`{prefix}/labels/requests/{node}`; the answer is an ordinary label event whose [from, to)
covers just the requested window's timestamp, so it reaches the held window through
`labels.Labeler`.

>>> c = [Candidate("m01", i, i * 10**9, p, conf, conf) for i, (p, conf) in enumerate(
...     [(0, 0.9), (0, 0.4), (1, 0.5), (0, 0.45), (2, 0.99)])]
>>> c.append(Candidate("m02", 9, 9 * 10**9, 0, 0.6, 0.6))
>>> [(x.machine, x.seq) for x in select(c, k=4, per_machine=3)]
[('m01', 1), ('m01', 2), ('m01', 4), ('m02', 9)]
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass

__all__ = ["SPAN_S", "AskConfig", "Budget", "Candidate", "LabelAsker", "select"]

MAX_REMEMBERED = 65_536  # windows asked for that are remembered (never asked again)
SPAN_S = 1e-6  # a request's [from, to): the window's timestamp and 1 µs, no other window


@dataclass(frozen=True, slots=True)
class Candidate:
    """A held, unlabeled window: its machine, seq and time, the class the model predicted,
    its confidence (top probability) and margin (top − second probability)."""

    machine: str
    seq: int
    ts_ns: int
    predicted: int
    confidence: float
    margin: float

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.machine, self.seq, self.ts_ns)


def select(
    candidates: Iterable[Candidate],
    k: int,
    per_machine: int,
    asked: Container[tuple[str, int, int]] = (),
    *,
    by_class: bool = True,
    last_asked: Mapping[str, float] | None = None,
) -> list[Candidate]:
    """Up to `k` candidates, least sure first, round robin over predicted classes and within
    each over machines, at most `per_machine` per machine, none whose key is in `asked`.
    `by_class=False` (predictions not trusted: drift): round robin over machines only, those
    asked longest ago (`last_asked`, epoch s; never asked first) first.

    >>> mk = lambda m, s, p, conf: Candidate(m, s, s, p, conf, conf)
    >>> pool = [mk("a", s, 0, 0.3 + s / 100) for s in range(5)] + [mk("b", 9, 1, 0.8)]
    >>> [(x.machine, x.seq) for x in select(pool, k=5, per_machine=2)]
    [('a', 0), ('b', 9), ('a', 1)]
    >>> [x.seq for x in select(pool, k=2, per_machine=5, asked={("a", 0, 0)})]
    [1, 9]
    >>> select(pool, k=0, per_machine=1)
    []
    """
    if k <= 0 or per_machine <= 0:
        return []
    groups: dict[int, dict[str, list[Candidate]]] = {}
    for c in candidates:
        if c.key not in asked:
            group = c.predicted if by_class else 0
            groups.setdefault(group, {}).setdefault(c.machine, []).append(c)
    ago = last_asked or {}
    classes: list[deque[deque[Candidate]]] = []  # per class: its machines' queues, in turn
    for of_group in groups.values():
        queues = []
        for bucket in of_group.values():
            bucket.sort(key=_unsure)
            queues.append(deque(bucket))
        queues.sort(key=lambda q: (ago.get(q[0].machine, -math.inf), *_unsure(q[0])))
        classes.append(deque(queues))
    classes.sort(key=lambda m: _unsure(m[0][0]))
    picked: list[Candidate] = []
    per: dict[str, int] = {}
    while classes and len(picked) < k:
        still = []
        for machines in classes:  # one window of each class per round
            if len(picked) >= k:
                break
            while machines:
                q = machines.popleft()
                if per.get(q[0].machine, 0) >= per_machine:
                    continue  # this machine has its share: drop its queue
                c = q.popleft()
                picked.append(c)
                per[c.machine] = per.get(c.machine, 0) + 1
                if q:
                    machines.append(q)  # the class's next window comes from another machine
                break
            if machines:
                still.append(machines)
        classes = still
    return picked


def _unsure(c: Candidate) -> tuple[float, float, int]:
    """Sort key: least sure first (smallest margin, then lowest confidence), then newest: the
    answer comes back seconds later and must still find its window held (labels.RecentWindows
    forgets the oldest; a regime drift's windows are all 1.00 sure, and the oldest ones asked
    for expired before their answers arrived)."""
    return (c.margin, c.confidence, -c.ts_ns)


class Budget:
    """At most `per_minute` items in any 60 s; `take(n, now)` says how many of n may go now.

    >>> b = Budget(per_minute=4)
    >>> b.take(3, now=0.0), b.take(3, now=10.0), b.take(3, now=61.0)
    (3, 1, 3)
    """

    def __init__(self, per_minute: int) -> None:
        if per_minute < 0:
            raise ValueError(f"label request budget {per_minute} must be ≥ 0")
        self.per_minute = per_minute
        self._sent: deque[float] = deque()

    def available(self, now: float) -> int:
        while self._sent and self._sent[0] <= now - 60.0:
            self._sent.popleft()
        return max(0, self.per_minute - len(self._sent))

    def take(self, n: int, now: float) -> int:
        n = min(n, self.available(now))
        self._sent.extend([now] * n)
        return n


@dataclass(frozen=True, slots=True)
class AskConfig:
    """When and how much to ask: `per_minute` windows at most (0: never), `per_machine` per
    request, only while drift is suspect/drift or the estimate is below `below`, checked every
    `every_s` seconds."""

    per_minute: int = 8
    per_machine: int = 2
    below: float = 0.9
    every_s: float = 2.0

    def __post_init__(self) -> None:
        if self.per_minute < 0 or self.per_machine < 1:
            raise ValueError("label requests need per_minute ≥ 0 and per_machine ≥ 1")
        if not 0.0 <= self.below <= 1.0:
            raise ValueError(f"label request estimate threshold {self.below} must be in [0, 1]")
        if self.every_s <= 0:
            raise ValueError(f"label request check interval {self.every_s} must be > 0")


class LabelAsker:
    """The decision per check (pure: time, drift and estimate come in); the worker's alone.

    >>> asker = LabelAsker(AskConfig(per_minute=3, per_machine=1, below=0.9, every_s=1.0))
    >>> pool = [Candidate(m, 1, 5, 0, 0.5, 0.1) for m in ("a", "b", "c", "d")]
    >>> asker.due(0.0, "ok", 0.95), asker.due(1.0, "ok", None), asker.due(1.5, "suspect", 0.99)
    (False, False, False)
    >>> asker.due(2.0, "suspect", 0.99), [c.machine for c in asker.pick(pool, now=2.0)]
    (True, ['a', 'b', 'c'])
    >>> asker.due(3.0, "ok", 0.5), asker.pick(pool, now=3.0)  # the budget is spent
    (False, [])
    >>> asker.due(62.0, "drift", None), [c.machine for c in asker.pick(pool, now=62.0)]
    (True, ['d'])
    """

    def __init__(self, config: AskConfig) -> None:
        self.config = config
        self.budget = Budget(config.per_minute)
        self._asked: OrderedDict[tuple[str, int, int], None] = OrderedDict()
        self._last_asked: dict[str, float] = {}  # machine → when a window of it was last asked
        self._next = float("-inf")
        self.requests = 0  # messages
        self.windows = 0  # windows asked for

    def due(self, now: float, drift: str, estimate: float | None) -> bool:
        """Whether to look for windows now: the check interval passed, the budget allows one,
        and the node is unsure (drift suspect/drift, or the estimate below `below`)."""
        cfg = self.config
        if now < self._next or not cfg.per_minute:
            return False
        self._next = now + cfg.every_s
        unsure = drift in ("suspect", "drift") or (estimate is not None and estimate < cfg.below)
        return unsure and self.budget.available(now) > 0

    def due_flagged(self, now: float) -> bool:
        """Whether to look for windows an anomaly model flagged: the check interval passed and
        the budget allows one (what it flags is unsure by definition: no drift needed).

        >>> asker = LabelAsker(AskConfig(per_minute=1, every_s=1.0))
        >>> asker.due_flagged(0.0), asker.due_flagged(0.5), asker.due_flagged(1.0)
        (True, False, True)
        """
        if now < self._next or not self.config.per_minute:
            return False
        self._next = now + self.config.every_s
        return self.budget.available(now) > 0

    def pick(
        self,
        candidates: Iterable[Candidate],
        now: float,
        *,
        drifting: Container[str] = (),
        sure_at: float = 1.0,
    ) -> list[Candidate]:
        """The windows to ask for now (remembered, and counted against the budget): those
        less confident than `sure_at`, and any of a `drifting` machine.

        >>> asker = LabelAsker(AskConfig(per_minute=8, per_machine=4))
        >>> pool = [Candidate(m, i, i, 0, conf, conf) for i, (m, conf) in enumerate(
        ...     [("a", 0.99), ("a", 0.5), ("b", 0.97), ("c", 0.95)])]
        >>> [(c.machine, c.seq) for c in asker.pick(pool, 0.0, drifting={"b"}, sure_at=0.9)]
        [('a', 1), ('b', 2)]
        """
        room = self.budget.available(now)
        eligible = (c for c in candidates if c.confidence < sure_at or c.machine in drifting)
        if drifting:  # the predicted classes are not to be trusted: one window of each machine
            # in turn, the machines asked longest ago first (each machine's current state is
            # a draw of the true classes; a few machines' least sure windows are not)
            picks = select(
                eligible, room, 1, self._asked, by_class=False, last_asked=self._last_asked
            )
        else:
            picks = select(eligible, room, self.config.per_machine, self._asked)
        self.budget.take(len(picks), now)
        for c in picks:
            self._asked[c.key] = None
            self._last_asked[c.machine] = now
        while len(self._asked) > MAX_REMEMBERED:
            self._asked.popitem(last=False)
        if picks:
            self.requests += 1
            self.windows += len(picks)
        return picks

    @property
    def next_check(self) -> float:
        """When `due` looks again (the shell skips the drift and estimate reads before)."""
        return self._next

    def stats(self) -> dict[str, int]:
        return {"requests": self.requests, "windows": self.windows}
