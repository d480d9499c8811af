r"""A machine's debounced state (retained) and its changes (events): what an operator watches
instead of ten predictions a second.

pi_edge publishes, per machine, JSON version 1 (protocol/README.md, "Machine state and
events"):

    {prefix}/machines/{m}/state   QoS 1, retained: the current debounced state
    {prefix}/machines/{m}/event   QoS 1, not retained: fault_start, fault_end or fault_change

The state is "normal" when the debounced class is the machine type's healthy class (`normal`;
"normal" for the built-in type), "anomaly" when it is `ANOMALY` (the verdict of an anomaly model,
which knows only the healthy class: protocol.manifest task "anomaly"), "fault" for any other
class, and "unknown" (class and confidence null) before a class has held for the node's number
of consecutive windows. A machine of another type than the built-in one also carries `type` and
`normal`; the built-in type's messages leave them out (byte for byte as before machine types).

>>> s = MachineState("m01", "pi-1", "fault", "bearing_fault", 0.97, 1700000000.5, "ok", 3,
...                  1700000001.0)
>>> s.to_json()
b'{"v":1,"machine":"m01","node":"pi-1","state":"fault","class":"bearing_fault","confidence":0.97,"since":1700000000.5,"drift":"ok","model_version":3,"ts":1700000001.0}'
>>> MachineState.from_json(s.to_json()) == s
True
>>> e = MachineEvent("m01", "pi-1", "fault_end", "normal", "bearing_fault", 0.95, 1700000100.0,
...                  99.5, 3)
>>> MachineEvent.from_json(e.to_json()) == e
True
>>> for bad in (b'{"v":2}', s.to_json().replace(b'"fault"', b'"normal"'),
...             e.to_json().replace(b"99.5", b"-1"), b"[]"):
...     try:
...         MachineState.from_json(bad) if b"state" in bad else MachineEvent.from_json(bad)
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

from ._json import loads, need_int, need_number, need_str, short
from .errors import PayloadError
from .schema import CLASSES
from .topics import check_id

__all__ = [
    "ANOMALY",
    "DRIFT_STATES",
    "EVENTS",
    "MACHINE_STATES",
    "MAX_STATE_BYTES",
    "NORMAL",
    "STATE_VERSION",
    "MachineEvent",
    "MachineState",
    "state_of",
]

STATE_VERSION = 1
MAX_STATE_BYTES = 1024  # a state or event is ~250 bytes
NORMAL = CLASSES[0]  # the built-in type's healthy class
ANOMALY = "anomaly"  # the class an anomaly model's node gives a window it finds anomalous
MACHINE_STATES = ("normal", "fault", "anomaly", "unknown")
DRIFT_STATES = ("ok", "suspect", "drift")
EVENTS = ("fault_start", "fault_end", "fault_change", "anomaly_start", "anomaly_end")
MAX_MODEL_VERSION = (1 << 32) - 1  # as in a prediction
MAX_UNIX_S = float(1 << 32)  # year 2106
MAX_CLASS_CHARS = 64
_STATE_FIELDS = (
    "v",
    "machine",
    "node",
    "state",
    "class",
    "confidence",
    "since",
    "drift",
    "model_version",
    "ts",
)
_EVENT_FIELDS = (
    "v",
    "machine",
    "node",
    "event",
    "class",
    "previous_class",
    "confidence",
    "ts",
    "duration_s",
    "model_version",
)


def _bad(msg: str) -> PayloadError:
    return PayloadError(msg, kind="bad_field")


def state_of(cls: str, normal: str = NORMAL) -> str:
    """The machine state a debounced class means.

    >>> state_of("normal"), state_of("bearing_fault"), state_of("anomaly"), state_of("ok", "ok")
    ('normal', 'fault', 'anomaly', 'normal')
    """
    if cls == normal:
        return "normal"
    return "anomaly" if cls == ANOMALY else "fault"


def event_of(previous: str | None, cls: str, normal: str = NORMAL) -> str | None:
    """The event a change of debounced class is (None: no change).

    >>> event_of(None, "bearing_fault"), event_of("anomaly", "normal"), event_of("a", "b", "n")
    ('fault_start', 'anomaly_end', 'fault_change')
    """
    if previous == cls:
        return None
    now, before = state_of(cls, normal), None if previous is None else state_of(previous, normal)
    if now == "normal":
        if before in (None, "normal"):
            return None
        return "anomaly_end" if before == "anomaly" else "fault_end"
    if before in (None, "normal"):
        return "anomaly_start" if now == "anomaly" else "fault_start"
    return "fault_change"


def _kind(data: dict[str, Any]) -> tuple[str | None, str]:
    """(type, normal) of a decoded message: absent = the built-in type."""
    kind = data.pop("type", None)
    normal = data.pop("normal", NORMAL)
    if kind is not None:
        check_id(kind, "machine type")
    return kind, _class(normal, "normal class")


def _one_of(value: object, what: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise _bad(f"{what} must be one of {list(allowed)}, got {short(value)}")
    return value


def _class(value: object, what: str) -> str:
    return need_str(value, what, MAX_CLASS_CHARS)


def _time(value: object, what: str) -> float:
    return need_number(value, what, 0.0, MAX_UNIX_S)


def _object(data: bytes | str, what: str, fields: tuple[str, ...]) -> dict[str, Any]:
    obj = loads(data, what, max_bytes=MAX_STATE_BYTES, max_depth=1)
    if not isinstance(obj, dict):
        raise PayloadError(f"{what} must be a JSON object, got {short(obj)}", kind="bad_json")
    version = obj.get("v")
    if type(version) is not int or version != STATE_VERSION:
        raise PayloadError(
            f"{what} version {short(version)}, this build reads {STATE_VERSION}; upgrade the "
            "subscriber to match pi_edge",
            kind="bad_version",
        )
    if set(obj) - {"type", "normal"} != set(fields) or ("type" in obj) != ("normal" in obj):
        raise _bad(
            f"{what} has fields {short(sorted(obj))}, expected exactly {list(fields)} (and "
            "'type' with 'normal' for a machine of another type than the built-in one)"
        )
    return obj


def _dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


@dataclass(frozen=True, slots=True)
class MachineState:
    """The retained debounced state of `machine` as seen by `node`.

    `cls` (JSON "class") is the debounced class and `confidence` the mean confidence of the
    windows that confirmed it (both None when `state` is "unknown"); `since` is when that class
    began (s since the epoch, the first window of the run), `ts` when this was published;
    `drift` the node's drift verdict for the machine at that moment.
    """

    machine: str
    node: str
    state: str
    cls: str | None
    confidence: float | None
    since: float
    drift: str
    model_version: int
    ts: float
    machine_type: str | None = None  # None: the built-in type
    normal: str = NORMAL  # the type's healthy class

    def __post_init__(self) -> None:
        check_id(self.machine)
        check_id(self.node, "node id")
        _check_type(self.machine_type, self.normal)
        _one_of(self.state, "machine state", MACHINE_STATES)
        if self.state == "unknown":
            if self.cls is not None or self.confidence is not None:
                raise _bad("an unknown machine state has class and confidence null")
        else:
            cls = _class(self.cls, "machine state class")
            if state_of(cls, self.normal) != self.state:
                raise _bad(
                    f"machine state {self.state!r} with class {short(cls)}: the state is "
                    f"'normal' exactly when the class is {self.normal!r}, 'anomaly' when it is "
                    f"{ANOMALY!r}, else 'fault'"
                )
            object.__setattr__(
                self, "confidence", need_number(self.confidence, "state confidence", 0.0, 1.0)
            )
        object.__setattr__(self, "since", _time(self.since, "state since"))
        object.__setattr__(self, "ts", _time(self.ts, "state ts"))
        _one_of(self.drift, "state drift", DRIFT_STATES)
        need_int(self.model_version, "state model_version", 0, MAX_MODEL_VERSION)

    def to_json(self) -> bytes:
        obj = {
            "v": STATE_VERSION,
            "machine": self.machine,
            "node": self.node,
            "state": self.state,
            "class": self.cls,
            "confidence": self.confidence,
            "since": self.since,
            "drift": self.drift,
            "model_version": self.model_version,
            "ts": self.ts,
        }
        return _dumps(_with_type(obj, self.machine_type, self.normal))

    @classmethod
    def from_json(cls, data: bytes | str) -> MachineState:
        """Parse and check a state; PayloadError (with .kind) says what was wrong."""
        o = _object(data, "machine state", _STATE_FIELDS)
        kind, normal = _kind(o)
        return cls(
            o["machine"],
            o["node"],
            o["state"],
            o["class"],
            o["confidence"],
            o["since"],
            o["drift"],
            o["model_version"],
            o["ts"],
            kind,
            normal,
        )


@dataclass(frozen=True, slots=True)
class MachineEvent:
    """One change of `machine`'s debounced class.

    `event`: "fault_start" (from normal, or from no class yet, to a fault class), "fault_end"
    (from a fault class to normal), "fault_change" (from one fault class — or an anomaly — to
    another), "anomaly_start" (from normal, or none yet, to `ANOMALY`), "anomaly_end" (back to
    normal); `event_of` says which a change is.
    `previous_class` is None only for a machine's first class; `duration_s` is how long the
    previous class lasted (None for the first). `confidence` is the new class's, as in the state.
    """

    machine: str
    node: str
    event: str
    cls: str
    previous_class: str | None
    confidence: float
    ts: float
    duration_s: float | None
    model_version: int
    machine_type: str | None = None  # None: the built-in type
    normal: str = NORMAL  # the type's healthy class

    def __post_init__(self) -> None:
        check_id(self.machine)
        check_id(self.node, "node id")
        _check_type(self.machine_type, self.normal)
        event = _one_of(self.event, "machine event", EVENTS)
        cls = _class(self.cls, "event class")
        prev = self.previous_class
        if prev is not None:
            prev = _class(prev, "event previous_class")
        if event_of(prev, cls, self.normal) != event:
            raise _bad(
                f"event {event!r} does not fit a change from {short(prev)} to {short(cls)}; "
                f"{self.normal!r} is the normal class"
            )
        if (prev is None) != (self.duration_s is None):
            raise _bad("event duration_s is null exactly when previous_class is null")
        if self.duration_s is not None:
            duration = need_number(self.duration_s, "event duration_s", 0.0, MAX_UNIX_S)
            object.__setattr__(self, "duration_s", duration)
        object.__setattr__(
            self, "confidence", need_number(self.confidence, "event confidence", 0.0, 1.0)
        )
        object.__setattr__(self, "ts", _time(self.ts, "event ts"))
        need_int(self.model_version, "event model_version", 0, MAX_MODEL_VERSION)

    def to_json(self) -> bytes:
        obj = {
            "v": STATE_VERSION,
            "machine": self.machine,
            "node": self.node,
            "event": self.event,
            "class": self.cls,
            "previous_class": self.previous_class,
            "confidence": self.confidence,
            "ts": self.ts,
            "duration_s": self.duration_s,
            "model_version": self.model_version,
        }
        return _dumps(_with_type(obj, self.machine_type, self.normal))

    @classmethod
    def from_json(cls, data: bytes | str) -> MachineEvent:
        """Parse and check an event; PayloadError (with .kind) says what was wrong."""
        o = _object(data, "machine event", _EVENT_FIELDS)
        kind, normal = _kind(o)
        return cls(
            o["machine"],
            o["node"],
            o["event"],
            o["class"],
            o["previous_class"],
            o["confidence"],
            o["ts"],
            o["duration_s"],
            o["model_version"],
            kind,
            normal,
        )


def _check_type(machine_type: str | None, normal: str) -> None:
    if machine_type is None:
        if normal != NORMAL:
            raise _bad(f"the built-in type's normal class is {NORMAL!r}, not {short(normal)}")
        return
    check_id(machine_type, "machine type")
    _class(normal, "normal class")


def _with_type(obj: dict[str, Any], machine_type: str | None, normal: str) -> dict[str, Any]:
    if machine_type is not None:
        obj["type"], obj["normal"] = machine_type, normal
    return obj
