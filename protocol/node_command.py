r"""Node commands: an operator asks one node to act (`{prefix}/nodes/{node}/command`, QoS 1).

The console (or any MQTT client with the operator's login) publishes one JSON object, not
retained, on the topic of the node it means (`Topics.node_command`). Version 1 knows one
command (protocol/README.md, "Node command"):

    {"v": 1, "cmd": "rollback"}

`rollback` makes a pi_edge node do what `pi_edge rollback` does on its state dir: the previous
model becomes current, the version rolled away from is blocked, the node serves the previous
model between two batches. An optional `id` (1..64 of `A-Z a-z 0-9 _ . : @ -`) lets the sender
find its command in the node's log.

>>> c = NodeCommand("rollback")
>>> c.to_json()
b'{"v":1,"cmd":"rollback"}'
>>> NodeCommand.from_json(b'{"v":1,"cmd":"rollback","id":"console@1700000000"}').id
'console@1700000000'
>>> for bad in (b'{"v":2,"cmd":"rollback"}', b'{"v":1,"cmd":"reboot"}',
...             b'{"v":1,"cmd":"rollback","x":1}', b'[1]', b'{"v":1,"cmd":"rollback","id":"a b"}'):
...     try:
...         NodeCommand.from_json(bad)
...     except PayloadError as exc:
...         print(exc.kind)
bad_version
bad_field
bad_field
bad_json
bad_id
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ._json import loads, short
from .errors import PayloadError

__all__ = ["MAX_NODE_COMMAND_BYTES", "NODE_COMMANDS", "NODE_COMMAND_VERSION", "NodeCommand"]

NODE_COMMAND_VERSION = 1
NODE_COMMANDS = ("rollback",)
MAX_NODE_COMMAND_BYTES = 512  # a command is ~60 bytes; anything bigger is not one
_FIELDS = frozenset({"v", "cmd", "id"})
_ID = re.compile(r"[A-Za-z0-9_.:@\-]{1,64}")


@dataclass(frozen=True, slots=True)
class NodeCommand:
    """One command to one node: `cmd` in NODE_COMMANDS, an optional `id` for the logs."""

    cmd: str
    id: str | None = None

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

    def to_json(self) -> bytes:
        obj: dict[str, Any] = {"v": NODE_COMMAND_VERSION, "cmd": self.cmd}
        if self.id is not None:
            obj["id"] = self.id
        return json.dumps(obj, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> NodeCommand:
        """Parse and check a node command; PayloadError (with .kind) says what was wrong."""
        obj: Any = loads(data, "node command", max_bytes=MAX_NODE_COMMAND_BYTES, max_depth=1)
        if not isinstance(obj, dict):
            raise PayloadError(f"node command must be a JSON object, got {short(obj)}", "bad_json")
        version = obj.get("v")
        if type(version) is not int or version != NODE_COMMAND_VERSION:
            raise PayloadError(
                f"node command version {short(version)}, this build reads "
                f"{NODE_COMMAND_VERSION}; upgrade the node to match the console",
                kind="bad_version",
            )
        unknown = set(obj) - _FIELDS
        if unknown or "cmd" not in obj:
            raise PayloadError(
                f"node command has fields {short(sorted(obj))}; allowed are v, cmd (required) "
                "and id",
                kind="bad_field",
            )
        return cls(obj["cmd"], obj.get("id"))
