"""Who may speak in a status: the trainer takes a node's status only from that node's own topic,
and an edge node's report only from a node that is an edge node.

A status is retained on `{prefix}/nodes/{node}/status`, and the broker's ACL decides who may
write which topic (per device in the secure profile, `%u`/`%c` patterns). The payload names a
node and a role too, which anybody who may write *some* status topic can set to anything; so
the topic's node is the sender, the payload must agree with it, and a node keeps the role it
was first heard with. `StatusSenders.check` says why a status is refused (one of `REFUSALS`),
or None; the intake counts each refusal and hands only accepted `edge` statuses to the model
registry and the staged rollout.

Pure: no clock, socket or thread (the intake's status thread owns one).

>>> senders = StatusSenders("site", own_id="trainer-1")
>>> from protocol import Status
>>> pi1 = Status("pi-1", "edge", "online", "0.1.0", model_version=2)
>>> senders.check("site/nodes/pi-1/status", pi1) is None
True
>>> senders.check("site/nodes/pi-2/status", pi1)  # pi-1's status on pi-2's topic
'node_mismatch'
>>> senders.check("site/nodes/pi-1/status", Status("pi-1", "trainer", "online", "0.1.0"))
'role_changed'
>>> senders.check("site/nodes/trainer-1/status", Status("trainer-1", "edge", "online", "0.1"))
'role_changed'
>>> senders.check("other/nodes/pi-1/status", pi1)
'bad_topic'
"""

from __future__ import annotations

from protocol import Status

__all__ = ["MAX_ROLES", "REFUSALS", "StatusSenders", "node_of_status_topic"]

MAX_ROLES = 4096  # nodes whose first role is remembered (the least recently heard go first)
REFUSALS = ("bad_topic", "node_mismatch", "role_changed")


def node_of_status_topic(prefix: str, topic: str) -> str | None:
    """The node of a `{prefix}/nodes/{node}/status` topic, else None.

    >>> node_of_status_topic("a/b", "a/b/nodes/pi-1/status"), node_of_status_topic("a", "a/x")
    ('pi-1', None)
    """
    head = f"{prefix}/nodes/"
    if not topic.startswith(head) or not topic.endswith("/status"):
        return None
    node = topic[len(head) : -len("/status")]
    return node if node and "/" not in node else None


class StatusSenders:
    """Checks each status against the topic it came on and the role its node had before."""

    def __init__(self, prefix: str, *, own_id: str, max_roles: int = MAX_ROLES) -> None:
        self.prefix = prefix
        self.max_roles = max_roles
        self._roles: dict[str, str] = {own_id: "trainer"}  # by recency, own id first and kept
        self._own = own_id

    def check(self, topic: str, status: Status) -> str | None:
        """Why `status`, received on `topic`, is refused (one of REFUSALS), or None."""
        node = node_of_status_topic(self.prefix, topic)
        if node is None:
            return "bad_topic"
        if status.node != node:
            return "node_mismatch"
        known = self._roles.get(node)
        if known is not None and known != status.role:
            return "role_changed"
        if node != self._own:
            self._roles.pop(node, None)  # re-inserted last: the dict is by recency
            self._roles[node] = status.role
            while len(self._roles) > self.max_roles:  # a flood of node ids: forget the stalest
                stalest = next(n for n in self._roles if n != self._own)
                del self._roles[stalest]
        return None
