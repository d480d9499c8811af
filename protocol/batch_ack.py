r"""Batch acknowledgements: the trainer tells a Pi that a drift batch is in its store.

After the trainer's store has committed a drift batch (or found every window in it already
there), the trainer publishes, at QoS 1 and not retained, on `{prefix}/drift/acks/{node}`
(`Topics.drift_acks`) for the node that sent it — and only then acknowledges the batch to the
broker. The Pi deletes the batch's windows from its durable buffer only on this message, never
on the broker's PUBACK: a broker that crashes before it saved its queue then loses nothing.
JSON, version 1 (protocol/README.md, "Batch acknowledgement"):

    {"v": 1, "batch": "<32 hex digits: the batch_id>", "stored": n, "duplicates": d,
     "refused": r}

`stored` windows were new, `duplicates` were in the store already (a resent batch is all
duplicates and is acknowledged all the same), `refused` failed the store's range checks.

>>> ack = BatchAck(bytes(range(16)), stored=3, duplicates=1)
>>> ack.to_json()
b'{"v":1,"batch":"000102030405060708090a0b0c0d0e0f","stored":3,"duplicates":1,"refused":0}'
>>> BatchAck.from_json(ack.to_json()) == ack
True
>>> for bad in (b'{"v":2}', b'{"v":1,"batch":"zz","stored":0,"duplicates":0,"refused":0}',
...             b'{"v":1,"batch":"' + b"0" * 32 + b'","stored":-1,"duplicates":0,"refused":0}'):
...     try:
...         BatchAck.from_json(bad)
...     except PayloadError as exc:
...         print(exc.kind)
bad_version
bad_field
bad_field
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ._json import loads, need_int, short
from .drift_batch import MAX_RECORDS
from .errors import PayloadError

__all__ = ["ACK_VERSION", "MAX_ACK_BYTES", "BatchAck"]

ACK_VERSION = 1
MAX_ACK_BYTES = 512  # an ack is ~100 bytes; anything bigger is not one
_FIELDS = ("v", "batch", "stored", "duplicates", "refused")
_HEX32 = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True, slots=True)
class BatchAck:
    """The trainer holds drift batch `batch_id`: `stored` + `duplicates` + `refused` windows.

    Each count is 0..4096 (a batch's record limit).
    """

    batch_id: bytes
    stored: int = 0
    duplicates: int = 0
    refused: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.batch_id, bytes) or len(self.batch_id) != 16:
            raise PayloadError(
                f"batch ack: batch_id must be 16 bytes, got {short(self.batch_id)}", "bad_field"
            )
        for name in ("stored", "duplicates", "refused"):
            need_int(getattr(self, name), f"batch ack {name}", 0, MAX_RECORDS)

    def to_json(self) -> bytes:
        return (
            f'{{"v":{ACK_VERSION},"batch":"{self.batch_id.hex()}","stored":{self.stored:d},'
            f'"duplicates":{self.duplicates:d},"refused":{self.refused:d}}}'
        ).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> BatchAck:
        """Parse and check an ack; PayloadError (with .kind) says what was wrong."""
        obj: Any = loads(data, "batch ack", max_bytes=MAX_ACK_BYTES, max_depth=1)
        if not isinstance(obj, dict):
            raise PayloadError(f"batch ack must be a JSON object, got {short(obj)}", "bad_json")
        version = obj.get("v")
        if type(version) is not int or version != ACK_VERSION:
            raise PayloadError(
                f"batch ack version {short(version)}, this build reads {ACK_VERSION}; "
                "upgrade the Pi (pi_edge) to match the trainer",
                kind="bad_version",
            )
        if set(obj) != set(_FIELDS):
            raise PayloadError(
                f"batch ack has fields {short(sorted(obj))}, expected exactly {list(_FIELDS)}",
                kind="bad_field",
            )
        batch = obj["batch"]
        if not isinstance(batch, str) or not _HEX32.fullmatch(batch):
            raise PayloadError(
                f"batch ack batch must be 32 lowercase hex digits, got {short(batch)}",
                kind="bad_field",
            )
        return cls(bytes.fromhex(batch), obj["stored"], obj["duplicates"], obj["refused"])
