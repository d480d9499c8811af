"""`--fleet GROUP`: which machines this node classifies, recomputed only when members change.

The rule (rendezvous hashing over the group's live members) and the membership (who is live,
from the statuses) are the contract's: protocol/fleet.py. This module keeps the answer for this
node where the paho thread can read it per window at the cost of one dict lookup:

    paho thread   statuses → `observe()`; each window/reading → `owns(machine, now)`, which
                  re-reads the member set at most every `check_every_s` (members also time out
                  without a message: a node killed before its Will arrives)
    worker        `take_lost()` → the machines this node no longer owns; it forgets their
                  per-machine state (the same path as the machine cap's eviction)
    status        `info()` → `detail.fleet` and the `fleet_skipped` metric

Pure: the caller passes the clock. A membership change bumps `generation` and re-decides every
machine in the cache (≈ 3 µs per machine and member, only then), so the hot path never hashes a
machine twice while the members stay the same.

>>> own = Ownership(Membership("line-1", "pi-b", timeout_s=6.0))
>>> own.observe("pi-a", "online", "line-1", now=0.0)
>>> [m for m in ("m01", "m04", "m05", "m07") if own.owns(m, now=0.1)]
['m01', 'm04']
>>> own.observe("pi-c", "online", "line-1", now=1.0)  # pi-c joins: pi-b gives m04 away
>>> [m for m in ("m01", "m04", "m05", "m07") if own.owns(m, now=1.1)], own.take_lost()
(['m01'], ['m04'])
>>> own.info()["members"], own.info()["skipped"], own.generation
(['pi-a', 'pi-b', 'pi-c'], 5, 2)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from protocol.fleet import FLEET_DETAIL, Membership, rendezvous_owner
from protocol.status_detail import FleetDetail

__all__ = ["DEFAULT_FLEET_TIMEOUT_S", "FLEET_DETAIL", "Change", "Membership", "Ownership"]

DEFAULT_FLEET_TIMEOUT_S = 6.0  # < 10 s takeover after kill -9, even before the Will arrives
CHECK_EVERY_S = 0.1  # how stale the member set the hot path reads may be


@dataclass(frozen=True, slots=True)
class Change:
    """One change of the member set, as this node saw it (for the log)."""

    group: str
    members: tuple[str, ...]
    previous: tuple[str, ...]
    owned: int  # machines of the cache this node owns now
    known: int  # machines in the cache
    lost: tuple[str, ...]
    gained: tuple[str, ...]

    def describe(self) -> str:
        """A log line.

        >>> Change("g", ("a", "b"), ("a",), 1, 2, ("m2",), ()).describe()
        'fleet g: members a, b (were a); owns 1 of 2 machines seen, lost 1, gained 0'
        """
        return (
            f"fleet {self.group}: members {', '.join(self.members)} "
            f"(were {', '.join(self.previous) or 'none'}); owns {self.owned} of {self.known} "
            f"machines seen, lost {len(self.lost)}, gained {len(self.gained)}"
        )


class Ownership:
    """This node's share of the machines: `owns(machine, now)` per window, cached.

    `max_cached` bounds the cache (machine ids come from topics, so anyone can invent them):
    when it is full the machines this node does not own are dropped from it (they are re-decided
    when seen again), and if the owned ones alone fill it, all of it. `on_change` is called
    (on the caller's thread) with each change of the member set.
    """

    def __init__(
        self,
        membership: Membership,
        *,
        check_every_s: float = CHECK_EVERY_S,
        max_cached: int = 65_536,
        on_change: Callable[[Change], None] | None = None,
    ) -> None:
        self.membership = membership
        self.node = membership.node
        self.check_every_s = check_every_s
        self.max_cached = max_cached
        self.on_change = on_change
        self.members: tuple[str, ...] = (self.node,)
        self.generation = 0
        self.skipped = 0  # windows and readings of machines another member owns
        self.moved = 0  # machines that left or joined this node's share, all told
        self._cache: dict[str, bool] = {}
        self._next_check = float("-inf")
        self._lost: list[str] = []
        self._lock = threading.Lock()  # guards _lost (worker) and the figures `info` reads

    def observe(self, node: str, state: str, group: str | None, now: float) -> None:
        """A status of `node` arrived (see `Membership.observe`); re-check members if it may
        change them."""
        if self.membership.observe(node, state, group, now):
            self._refresh(now)

    def owns(self, machine: str, now: float) -> bool:
        """Whether this node classifies `machine` (counts `skipped` when not)."""
        if now >= self._next_check:
            self._refresh(now)
        owned = self._cache.get(machine)
        if owned is None:
            if len(self._cache) >= self.max_cached:
                self._shrink()
            owned = self._cache[machine] = rendezvous_owner(machine, self.members) == self.node
        if not owned:
            self.skipped += 1
        return owned

    def owned(self, machine: str) -> bool:
        """Whether `machine` is this node's now, as far as the cache knows (no counting; any
        thread)."""
        return self._cache.get(machine, False)

    def mine(self, machine: str) -> bool:
        """Whether `machine` is this node's under the current members: the cache's answer,
        else computed (not cached, not counted; the worker asks this of evicted machines,
        which the cache may have dropped)."""
        owned = self._cache.get(machine)
        if owned is not None:
            return owned
        return rendezvous_owner(machine, self.members) == self.node

    def _shrink(self) -> None:
        kept = {m: True for m, owned in self._cache.items() if owned}
        self._cache = kept if len(kept) < self.max_cached else {}

    def _refresh(self, now: float) -> None:
        self._next_check = now + self.check_every_s
        members = self.membership.members(now)
        if members == self.members:
            return
        previous, self.members = self.members, members
        node = self.node
        cache = {m: rendezvous_owner(m, members) == node for m in self._cache}
        lost = tuple(m for m, was in self._cache.items() if was and not cache[m])
        gained = tuple(m for m, was in self._cache.items() if not was and cache[m])
        self._cache = cache
        with self._lock:
            self.generation += 1
            self.moved += len(lost) + len(gained)
            self._lost.extend(lost)
        if self.on_change is not None:
            owned = sum(cache.values())
            group = self.membership.group
            self.on_change(Change(group, members, previous, owned, len(cache), lost, gained))

    def take_lost(self) -> list[str]:
        """The machines given away since the last call (their state should be forgotten)."""
        with self._lock:
            lost, self._lost = self._lost, []
        # a machine lost and won back before the worker looked keeps its state
        cache = self._cache
        return [m for m in dict.fromkeys(lost) if not cache.get(m, False)]

    def detail(self) -> FleetDetail:
        """`detail.fleet` of the status: group, live members, machines owned and skipped."""
        cache = self._cache  # list() of its values is one C call: safe beside paho's inserts
        owned = list(cache.values())
        return FleetDetail(
            group=self.membership.group,
            members=tuple(self.members),
            owned=sum(1 for v in owned if v),
            seen=len(owned),
            skipped=self.skipped,
            generation=self.generation,
            moved=self.moved,
            timeout_s=self.membership.timeout_s,
        )

    def info(self) -> dict[str, Any]:
        """The JSON form of `detail()`, as the status carries it."""
        return self.detail().to_json_obj()
