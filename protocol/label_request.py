r"""Label requests: a Pi asks for the labels of the windows whose label would help most.

While its drift verdict is `suspect`/`drift`, or its label-free accuracy estimate is low,
pi_edge picks a few of the windows it still holds — the ones its model is least sure about,
spread over predicted classes and machines — and publishes them, at QoS 1 and not retained, on
`{prefix}/labels/requests/{node}` (`Topics.label_requests`). JSON, version 1 (protocol/README.md,
"Label request"):

    {"v": 1, "node": "pi-1", "ts": 1795507200.5,
     "requests": [{"machine": "m01", "from": 1795507190.25, "to": 1795507190.250001,
                   "predicted": "normal", "confidence": 0.41, "seq": 1234}]}

`from`/`to` is the window's own time span on the node: a label event (protocol.labels) for that
machine with exactly this `from` and `to` labels that one held window and no other, wherever it
comes from (a technician's app, the simulator's `--answer-label-requests`). `predicted` and
`confidence` say what the model thought; `seq` is the window's sequence number.

>>> r = LabelRequests("pi-1", 1795507200.5,
...                   (LabelRequest("m01", 1795507190.25, 1795507190.250001, "normal", 0.41, 7),))
>>> LabelRequests.from_json(r.to_json()) == r
True
>>> r.requests[0].label_event("bearing_fault").to_json()  # doctest: +ELLIPSIS
b'{"v":1,"id":"req-m01-7@1795507190250",...,"from":1795507190.25,"to":1795507190.250001,...}'
>>> for bad in (b'{"v":2}', b'{"v":1,"node":"pi-1","ts":1,"requests":[{"machine":"m/1"}]}',
...             b'{"v":1,"node":"pi-1","ts":1,"requests":[{"machine":"m01","from":2,"to":1,'
...             b'"predicted":"normal","confidence":0.5,"seq":1}]}', b'[]'):
...     try:
...         LabelRequests.from_json(bad)
...     except PayloadError as exc:
...         print(exc.kind)
bad_version
bad_field
bad_field
bad_json
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ._json import loads, need_int, need_number, short
from .errors import PayloadError
from .labels import MAX_UNIX_S, MIN_UNIX_S, LabelEvent
from .names import check_name
from .topics import check_id

__all__ = ["LABEL_REQUEST_VERSION", "MAX_REQUESTS", "LabelRequest", "LabelRequests"]

LABEL_REQUEST_VERSION = 1
MAX_REQUESTS = 64  # windows one message asks for
MAX_REQUEST_BYTES = 16 * 1024  # a request is ~130 bytes
MAX_SEQ = (1 << 64) - 1  # a window's seq: uint64 (protocol.window.MAX_SEQ)
_FIELDS = frozenset({"machine", "from", "to", "predicted", "confidence", "seq"})
_TOP = frozenset({"v", "node", "ts", "requests"})


def _bad(msg: str) -> PayloadError:
    return PayloadError(msg, kind="bad_field")


@dataclass(frozen=True, slots=True)
class LabelRequest:
    """One window a node asks to have labeled: `machine`, its span [start, end) in s since the
    epoch, the class the model `predicted` with its `confidence`, and the window's `seq`."""

    machine: str
    start: float
    end: float
    predicted: str
    confidence: float
    seq: int

    def __post_init__(self) -> None:
        try:
            check_id(self.machine)
        except PayloadError as exc:
            raise _bad(f"label request: {exc}") from exc
        for name, what in (("start", "from"), ("end", "to")):
            value = need_number(
                getattr(self, name), f"label request {what}", MIN_UNIX_S, MAX_UNIX_S
            )
            object.__setattr__(self, name, value)
        if not self.end > self.start:
            raise _bad(f"label request to ({self.end}) must be after from ({self.start})")
        try:  # a class of the machine's type
            check_name(self.predicted, "label request predicted")
        except PayloadError as exc:
            raise _bad(str(exc)) from None
        confidence = need_number(self.confidence, "label request confidence", 0.0, 1.0)
        object.__setattr__(self, "confidence", confidence)
        need_int(self.seq, "label request seq", 0, MAX_SEQ)

    def label_event(self, cls: str, source: str | None = None) -> LabelEvent:
        """The label event that answers this request with class `cls` (it labels exactly the
        requested window on the node that asked)."""
        return LabelEvent(
            self.machine,
            cls,
            self.start,
            self.end,
            label_id=f"req-{self.machine}-{self.seq}@{round(self.start * 1000)}"[:96],
            source=source,
        )

    def to_obj(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "from": self.start,
            "to": self.end,
            "predicted": self.predicted,
            "confidence": self.confidence,
            "seq": self.seq,
        }

    @classmethod
    def from_obj(cls, obj: object) -> LabelRequest:
        if not isinstance(obj, dict) or set(obj) != _FIELDS:
            keys = sorted(obj) if isinstance(obj, dict) else short(obj)
            raise _bad(f"a label request needs exactly the fields {sorted(_FIELDS)}, got {keys}")
        if not isinstance(obj["machine"], str) or not isinstance(obj["predicted"], str):
            raise _bad("label request machine and predicted must be strings")
        return cls(
            obj["machine"], obj["from"], obj["to"], obj["predicted"], obj["confidence"], obj["seq"]
        )


@dataclass(frozen=True, slots=True)
class LabelRequests:
    """What node `node` asked for at `ts` (s since the epoch): 1..MAX_REQUESTS windows."""

    node: str
    ts: float
    requests: tuple[LabelRequest, ...]

    def __post_init__(self) -> None:
        try:
            check_id(self.node, "node id")
        except PayloadError as exc:
            raise _bad(f"label requests: {exc}") from exc
        object.__setattr__(
            self, "ts", need_number(self.ts, "label requests ts", MIN_UNIX_S, MAX_UNIX_S)
        )
        if not 1 <= len(self.requests) <= MAX_REQUESTS:
            raise _bad(f"label requests carry 1..{MAX_REQUESTS} windows, got {len(self.requests)}")

    def to_json(self) -> bytes:
        obj = {
            "v": LABEL_REQUEST_VERSION,
            "node": self.node,
            "ts": self.ts,
            "requests": [r.to_obj() for r in self.requests],
        }
        return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> LabelRequests:
        """Parse and check; PayloadError (with .kind) says what was wrong."""
        obj = loads(data, "label requests", max_bytes=MAX_REQUEST_BYTES, max_depth=3)
        if not isinstance(obj, dict):
            raise PayloadError(
                f"label requests must be a JSON object, got {short(obj)}", "bad_json"
            )
        version = obj.get("v")
        if type(version) is not int or version != LABEL_REQUEST_VERSION:
            raise PayloadError(
                f"label requests version {short(version)}, this build reads "
                f"{LABEL_REQUEST_VERSION}",
                kind="bad_version",
            )
        if set(obj) != _TOP:
            raise _bad(f"label requests need exactly the fields {sorted(_TOP)}, got {sorted(obj)}")
        requests = obj["requests"]
        if not isinstance(requests, list):
            raise _bad(f"label requests' requests must be a list, got {short(requests)}")
        node = obj["node"]
        if not isinstance(node, str):
            raise _bad("label requests' node must be a string")
        return cls(node, obj["ts"], tuple(LabelRequest.from_obj(r) for r in requests))
