"""Fleet groups: which live node of a group owns which machine, decided by every node alone.

Nodes of one fleet group (`pi_edge run --fleet GROUP`) never talk to each other and have no
coordinator. Each learns the group's live members from the retained statuses on
`…/nodes/+/status` (`detail.fleet.group`, state online/offline/degraded, the offline Last Will)
and gives each machine to the member with the highest rendezvous (highest-random-weight) hash
of `(node, machine)`. All members compute the same owner from the same member set, so every
machine is classified by exactly one node; when a node goes, only its machines move (each to
the member that ranks second for it), and a node that joins takes about 1/n of them.

This is part of the contract (protocol/README.md, "Fleet"): the console, or any third party,
finds a machine's owning node with `rendezvous_owner(machine, members)` from the statuses alone.

    weight(node, machine) = big-endian uint64 of BLAKE2b-64(utf8(node) ‖ 0x00 ‖ utf8(machine))
    owner(machine)        = the member with the largest weight (ties: the larger node id)

>>> members = ("pi-a", "pi-b", "pi-c")
>>> [rendezvous_owner(m, members) for m in ("m01", "m04", "m05")]
['pi-b', 'pi-c', 'pi-a']
>>> [rendezvous_owner(m, (*members, "pi-d")) for m in ("m01", "m04", "m05")]  # pi-d joins
['pi-d', 'pi-c', 'pi-a']
>>> [rendezvous_owner(m, ("pi-a", "pi-b")) for m in ("m01", "m04", "m05")]  # pi-c goes
['pi-b', 'pi-b', 'pi-a']
>>> rendezvous_owner("m01", ()) is None
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .errors import PayloadError
from .messages import Status
from .status_detail import DetailReader, FleetDetail

__all__ = [
    "FLEET_DETAIL",
    "FLEET_ROLE",
    "Membership",
    "fleet_group_of",
    "fleet_view",
    "rendezvous_owner",
    "rendezvous_weight",
]

FLEET_DETAIL = FleetDetail.KEY  # the status `detail` key: {"group", "members", "owned", ...}
FLEET_ROLE = "edge"  # only pi_edge nodes are members


def rendezvous_weight(node: str, machine: str) -> int:
    """The stable 64-bit weight of `machine` on `node` (the same on every host and run;
    Python's `hash()` is salted per process and would split the fleet).

    >>> rendezvous_weight("pi-a", "m01")
    7106909881034969508
    """
    digest = hashlib.blake2b(node.encode() + b"\0" + machine.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rendezvous_owner(machine: str, members: Iterable[str]) -> str | None:
    """The member that owns `machine` (None if there is no member).

    >>> rendezvous_owner("m07", ["pi-b", "pi-a"]) == rendezvous_owner("m07", ["pi-a", "pi-b"])
    True
    """
    best: tuple[int, str] | None = None
    for node in members:
        key = (rendezvous_weight(node, machine), node)
        if best is None or key > best:
            best = key
    return None if best is None else best[1]


def fleet_group_of(
    detail: Mapping[str, Any], on_bad: Callable[[PayloadError], object] | None = None
) -> str | None:
    """The fleet group an edge status's `detail` names (`detail.fleet`, read by
    `protocol.status_detail.FleetDetail`), or None: not a fleet node, or malformed (then
    `on_bad` is told why, so that the caller counts it).

    >>> fleet = FleetDetail("line-1", ("pi-a",), 0, 0, 0, 1, 0, 6.0).to_json_obj()
    >>> fleet_group_of({"v": 1, "fleet": fleet}), fleet_group_of({"fleet": 3})
    ('line-1', None)
    """
    fleet = DetailReader(detail, FleetDetail.ROLE, on_bad).get(FleetDetail)
    return None if fleet is None else fleet.group


def fleet_view(
    topic_node: str,
    status: Status | None,
    on_bad: Callable[[PayloadError], object] | None = None,
) -> tuple[str, str | None] | None:
    """What a status on `…/nodes/{topic_node}/status` says about membership: (state, group),
    or None when it does not count at all.

    The topic is the trust anchor: the broker's ACL lets a login write only its own status topic,
    so a status counts only when its payload's `node` is the topic's and its `role` is edge. A
    status naming another node is refused (`on_bad`, kind `bad_id`); one of another role (the
    trainer's, the simulator's) is not about membership. An empty retained message (`status`
    None: the node's own retained status cleared) reads as offline.

    >>> fleet = {"fleet": FleetDetail("line-1", ("pi-a",), 0, 0, 0, 1, 0, 6.0).to_json_obj()}
    >>> fleet_view("pi-a", Status("pi-a", "edge", "online", "1", detail=fleet))
    ('online', 'line-1')
    >>> fleet_view("pi-a", Status("pi-b", "edge", "offline", "1"), print)  # forged for pi-b
    status of node 'pi-b' on the topic of node 'pi-a'; a node writes only its own status
    >>> fleet_view("pi-a", Status("pi-a", "trainer", "online", "1", detail=fleet)) is None
    True
    >>> fleet_view("pi-a", None)
    ('offline', None)
    """
    if status is None:
        return "offline", None
    if status.node != topic_node:
        if on_bad is not None:
            on_bad(
                PayloadError(
                    f"status of node {status.node!r} on the topic of node {topic_node[:80]!r}; "
                    "a node writes only its own status",
                    "bad_id",
                )
            )
        return None
    if status.role != FLEET_ROLE:
        return None
    return status.state, fleet_group_of(status.detail, on_bad)


class Membership:
    """The live members of one fleet group as seen by node `node`, from the statuses it hears.

    A member is live while its last `online` status of this group arrived less than
    `timeout_s` ago and no offline or degraded status (its Last Will, a clean stop, a dead
    thread) or a status of another group came after it. `node` itself is always a member
    (while it runs it serves, whatever its own retained status says). Times are the caller's
    monotonic clock at arrival, never the sender's timestamp, so clocks need not agree. Not
    thread-safe: feed and read it from one thread (pi_edge: paho's network thread).

    Its own statuses, echoed by the broker, tell the observer whether it is the one cut off:
    once it has heard itself, and then not for `timeout_s` (its process was frozen, its link
    stalled), nobody is timed out — the others did not go silent, it went deaf — so that a
    node waking up does not claim every machine for the windows still in its socket.

    >>> m = Membership("line-1", "pi-a", timeout_s=6.0)
    >>> m.observe("pi-b", "online", "line-1", now=0.0), m.members(1.0)
    (True, ('pi-a', 'pi-b'))
    >>> m.members(6.5)  # pi-b fell silent (killed before its Will came): gone after 6 s
    ('pi-a',)
    >>> m.observe("pi-c", "online", "line-1", now=7.0), m.observe("pi-c", "offline", None, 7.5)
    (True, True)
    >>> m.members(7.6), m.observe("sim", "online", None, 8.0)  # no fleet detail: not a member
    (('pi-a',), False)

    `allowed` (a site's list of its fleet's node ids, `--fleet-members`) makes every other node
    id a non-member whatever its status says: phantom members cannot take machines away.

    >>> m = Membership("line-1", "pi-a", timeout_s=6.0, allowed=frozenset({"pi-a", "pi-b"}))
    >>> m.observe("pi-x", "online", "line-1", now=0.0), m.observe("pi-b", "online", "line-1", 0.0)
    (False, True)
    >>> m.members(1.0)
    ('pi-a', 'pi-b')
    """

    def __init__(
        self, group: str, node: str, timeout_s: float, allowed: frozenset[str] | None = None
    ) -> None:
        if not timeout_s > 0:
            raise ValueError(f"fleet timeout {timeout_s!r} s must be > 0")
        self.group = group
        self.node = node
        self.timeout_s = timeout_s
        self.allowed = allowed  # None: any node id
        self.ignored = 0  # online statuses of node ids not in `allowed`
        self._seen: dict[str, float] = {}  # other live-looking node → arrival of its online
        self._self_seen: float | None = None  # arrival of this node's own last online status

    def observe(self, node: str, state: str, group: str | None, now: float) -> bool:
        """One status of `node` (its `state` and `detail.fleet.group`) arrived at `now`.

        Returns whether it could change the member set (a new member, or one gone).
        """
        if node == self.node:
            if state == "online":
                self._self_seen = now
            return False
        if self.allowed is not None and node not in self.allowed:
            self.ignored += state == "online"
            return False
        if state == "online" and group == self.group:
            known = node in self._seen and now - self._seen[node] < self.timeout_s
            self._seen[node] = now
            return not known
        return self._seen.pop(node, None) is not None

    def members(self, now: float) -> tuple[str, ...]:
        """The live members at `now`, sorted, this node included; expired ones are dropped
        (unless this node has stopped hearing its own statuses: then it keeps them all)."""
        deaf = self._self_seen is not None and now - self._self_seen >= self.timeout_s
        expired = [] if deaf else [n for n, t in self._seen.items() if now - t >= self.timeout_s]
        for n in expired:
            del self._seen[n]
        return tuple(sorted((self.node, *self._seen)))
