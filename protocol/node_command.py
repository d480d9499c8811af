r"""Node commands: an operator asks one node to act (`{prefix}/nodes/{node}/command`, QoS 1).

The console (or any MQTT client with the operator's login) publishes one JSON object, not
retained, on the topic of the node it means (`Topics.node_command`). One command exists,
`rollback` (protocol/README.md, "Node command"). Version 2 is *addressed*: it names the model
version it rolls back from and carries an id, so that a node can tell a repeat, a QoS 1
duplicate or a stale command (the node no longer serves `from`) and do nothing:

    {"v": 2, "cmd": "rollback", "id": "console@1700000000.5", "from": 3}

Version 1 (`{"v": 1, "cmd": "rollback"}`, an optional `id`) is still read, so that an old
console's command is refused *with a reason* (`NodeCommand.addressed` is False; pi_edge counts
`command_unaddressed` and does nothing) rather than as an unreadable message. An `id` is 1..64
of `A-Z a-z 0-9 _ . : @ -`; `from` a model version (1..2³¹−1, the manifest's range).

>>> c = NodeCommand("rollback", id="console@1700000000.5", from_version=3)
>>> c.to_json()
b'{"v":2,"cmd":"rollback","id":"console@1700000000.5","from":3}'
>>> NodeCommand.from_json(c.to_json()) == c, c.addressed
(True, True)
>>> old = NodeCommand.from_json(b'{"v":1,"cmd":"rollback","id":"console@1700000000"}')
>>> old.id, old.from_version, old.addressed
('console@1700000000', None, False)
>>> for bad in (b'{"v":3,"cmd":"rollback"}', b'{"v":1,"cmd":"reboot"}',
...             b'{"v":1,"cmd":"rollback","x":1}', b'[1]', b'{"v":1,"cmd":"rollback","id":"a b"}',
...             b'{"v":2,"cmd":"rollback","id":"a"}', b'{"v":2,"cmd":"rollback","id":"a","from":0}',
...             b'{"v":1,"cmd":"rollback","from":3}'):
...     try:
...         NodeCommand.from_json(bad)
...     except PayloadError as exc:
...         print(exc.kind)
bad_version
bad_field
bad_field
bad_json
bad_id
bad_field
bad_field
bad_field
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ._json import loads, short
from .errors import PayloadError

__all__ = [
    "MAX_NODE_COMMAND_BYTES",
    "NODE_COMMANDS",
    "NODE_COMMAND_VERSION",
    "NODE_COMMAND_VERSIONS",
    "NodeCommand",
]

NODE_COMMAND_VERSION = 2  # what a sender writes: the addressed form
NODE_COMMAND_VERSIONS = (1, 2)  # what a reader reads (1: refused with a reason, not acted on)
NODE_COMMANDS = ("rollback",)
MAX_NODE_COMMAND_BYTES = 512  # a command is ~80 bytes; anything bigger is not one
MAX_FROM_VERSION = 2**31 - 1  # protocol.manifest.MAX_VERSION
_FIELDS = {1: frozenset({"v", "cmd", "id"}), 2: frozenset({"v", "cmd", "id", "from"})}
_REQUIRED = {1: frozenset({"cmd"}), 2: frozenset({"cmd", "id", "from"})}
_ID = re.compile(r"[A-Za-z0-9_.:@\-]{1,64}")


@dataclass(frozen=True, slots=True)
class NodeCommand:
    """One command to one node: `cmd` in NODE_COMMANDS; `id` and `from_version` (both set:
    a version 2, addressed command; both optional only in a version 1 command)."""

    cmd: str
    id: str | None = None
    from_version: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.cmd, str) or self.cmd not in NODE_COMMANDS:
            raise PayloadError(
                f"node command cmd {short(self.cmd)} is not one of {list(NODE_COMMANDS)}; "
                "this node's build knows only these",
                kind="bad_field",
            )
        if self.id is not None and (not isinstance(self.id, str) or not _ID.fullmatch(self.id)):
            raise PayloadError(
                f"node command id {short(self.id)} must be 1..64 of A-Z a-z 0-9 _ . : @ -",
                kind="bad_id",
            )
        if self.from_version is not None:
            v = self.from_version
            if type(v) is not int or not 1 <= v <= MAX_FROM_VERSION:
                raise PayloadError(
                    f"node command from {short(v)} must be a model version 1..{MAX_FROM_VERSION}",
                    kind="bad_field",
                )
            if self.id is None:
                raise PayloadError(
                    "an addressed node command (with from) must carry an id", kind="bad_field"
                )

    @property
    def addressed(self) -> bool:
        """Whether it names the version it acts on (version 2): only such a rollback is done."""
        return self.from_version is not None

    def to_json(self) -> bytes:
        """Version 2 when addressed, else the version 1 form (an old sender's, for tests)."""
        obj: dict[str, Any] = {"v": 2 if self.addressed else 1, "cmd": self.cmd}
        if self.id is not None:
            obj["id"] = self.id
        if self.from_version is not None:
            obj["from"] = self.from_version
        return json.dumps(obj, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> NodeCommand:
        """Parse and check a node command; PayloadError (with .kind) says what was wrong."""
        obj: Any = loads(data, "node command", max_bytes=MAX_NODE_COMMAND_BYTES, max_depth=1)
        if not isinstance(obj, dict):
            raise PayloadError(f"node command must be a JSON object, got {short(obj)}", "bad_json")
        version = obj.get("v")
        if type(version) is not int or version not in NODE_COMMAND_VERSIONS:
            raise PayloadError(
                f"node command version {short(version)}, this build reads "
                f"{list(NODE_COMMAND_VERSIONS)}; upgrade the node to match the console",
                kind="bad_version",
            )
        fields, required = _FIELDS[version], _REQUIRED[version]
        unknown = set(obj) - fields
        if unknown or not required <= set(obj):
            raise PayloadError(
                f"node command v{version} has fields {short(sorted(obj))}; allowed are "
                f"{', '.join(sorted(fields))} (required: {', '.join(sorted(required))})",
                kind="bad_field",
            )
        return cls(obj["cmd"], obj.get("id"), obj.get("from"))
