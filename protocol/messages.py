"""Prediction and status messages: typed dataclasses with a versioned JSON form.

>>> p = Prediction("m01", 5, "normal", 0.97, (0.97, 0.01, 0.01, 0.01), 3)
>>> Prediction.from_json(p.to_json()) == p
True
"""

from __future__ import annotations

import functools
import json
from dataclasses import MISSING, asdict, dataclass, field
from typing import Any

from ._json import loads, need_int, need_map, need_number, need_str, short
from .errors import PayloadError
from .schema import CLASSES
from .topics import check_id

MESSAGE_VERSION = 1
MAX_MESSAGE_BYTES = 64 * 1024  # a node's status is ~4 KiB; a worst-case decode stays ~7 ms
STATES = ("online", "offline", "degraded")
MAX_MODEL_VERSION = (1 << 32) - 1  # the drift batch carries it as uint32
MAX_SEQ = (1 << 64) - 1
MAX_UNIX_S = float(1 << 32)  # year 2106: a status time beyond is a broken clock or a forgery
MAX_REASON_CHARS = 200


def _load(data: bytes | str, what: str) -> dict[str, Any]:
    obj = loads(data, what, max_bytes=MAX_MESSAGE_BYTES)
    if not isinstance(obj, dict):
        raise PayloadError(f"{what} must be a JSON object, got {short(obj)}", kind="bad_json")
    version = obj.get("v")
    if type(version) is not int or version != MESSAGE_VERSION:
        raise PayloadError(
            f"{what} version {short(version)}, this build reads {MESSAGE_VERSION}",
            kind="bad_version",
        )
    return obj


def _fields(cls: type, obj: dict[str, Any], what: str) -> dict[str, Any]:
    """The init arguments in `obj`: no unknown field, every field without a default present."""
    declared = cls.__dataclass_fields__  # type: ignore[attr-defined]
    unknown = set(obj) - set(declared) - {"v"}
    if unknown:
        raise PayloadError(
            f"{what} has unknown field(s) {short(sorted(unknown)[:5])}; allowed are "
            f"{sorted(declared)}",
            kind="bad_field",
        )
    missing = [
        name
        for name, f in declared.items()
        if name not in obj and f.default is MISSING and f.default_factory is MISSING
    ]
    if missing:
        raise PayloadError(f"{what} is missing field(s) {missing}", kind="bad_field")
    return {k: v for k, v in obj.items() if k != "v"}


def _finite(value: object, what: str) -> float:
    return need_number(value, what)


def _count(value: object, what: str) -> int:
    return need_int(value, what, 0, (1 << 63) - 1)


def _int64(value: object, what: str) -> int:
    return need_int(value, what, -(1 << 63), (1 << 63) - 1)


@dataclass(frozen=True, slots=True)
class Prediction:
    """What pi_edge concluded about one window.

    `timestamps_ns` holds sensor, received, inferred and published times (ns since epoch);
    `latency_ms` the derived spans; `truth` the window's ground-truth class if it carried one.
    Every field is checked on construction, so `from_json` refuses any value out of range.
    """

    machine: str
    seq: int
    label: str
    confidence: float
    probabilities: tuple[float, ...]
    model_version: int
    classes: tuple[str, ...] = CLASSES
    truth: str | None = None
    drift: str = "ok"
    ood: bool = False
    ood_score: float = 0.0
    timestamps_ns: dict[str, int] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    machine_type: str | None = None  # None (left out of the JSON): the built-in type

    def __post_init__(self) -> None:
        check_id(self.machine)
        need_int(self.seq, "prediction seq", 0, MAX_SEQ)
        if self.machine_type is not None:
            check_id(self.machine_type, "machine type")
        if not isinstance(self.classes, list | tuple) or not 1 <= len(self.classes) <= 256:
            raise PayloadError(
                f"prediction classes must list 1..256 names, got {short(self.classes)}",
                kind="bad_field",
            )
        classes = tuple(need_str(c, "a prediction class name", 64) for c in self.classes)
        if not isinstance(self.label, str) or self.label not in classes:
            raise PayloadError(
                f"prediction label {short(self.label)} not in {short(classes)}", "bad_label"
            )
        if self.truth is not None and (
            not isinstance(self.truth, str) or self.truth not in classes
        ):
            raise PayloadError(
                f"prediction truth {short(self.truth)} not in {short(classes)}", "bad_label"
            )
        if not isinstance(self.probabilities, list | tuple) or len(self.probabilities) != len(
            classes
        ):
            count = len(self.probabilities) if isinstance(self.probabilities, list | tuple) else 0
            raise PayloadError(
                f"prediction has {count} probabilities for {len(classes)} classes",
                kind="bad_shape",
            )
        probabilities = tuple(
            need_number(p, "a prediction probability", 0.0, 1.0) for p in self.probabilities
        )
        object.__setattr__(
            self, "confidence", need_number(self.confidence, "prediction confidence", 0.0, 1.0)
        )
        need_int(self.model_version, "prediction model_version", 0, MAX_MODEL_VERSION)
        need_str(self.drift, "prediction drift", 32)
        if type(self.ood) is not bool:
            raise PayloadError(
                f"prediction ood must be true or false, got {short(self.ood)}", "bad_field"
            )
        object.__setattr__(
            self, "ood_score", need_number(self.ood_score, "prediction ood_score", 0.0)
        )
        stamps = need_map(self.timestamps_ns, "prediction timestamps_ns", _int64, 16)
        latency = need_map(self.latency_ms, "prediction latency_ms", _finite, 16)
        object.__setattr__(self, "probabilities", probabilities)
        object.__setattr__(self, "classes", classes)
        object.__setattr__(self, "timestamps_ns", stamps)
        object.__setattr__(self, "latency_ms", latency)

    def to_json(self) -> bytes:
        return prediction_json(
            self.machine,
            self.seq,
            self.label,
            self.confidence,
            self.probabilities,
            self.model_version,
            self.classes,
            self.truth,
            self.drift,
            self.ood,
            self.ood_score,
            self.timestamps_ns,
            self.latency_ms,
            self.machine_type,
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> Prediction:
        """Parse and check a prediction; PayloadError (with .kind) says what was wrong."""
        return cls(**_fields(cls, _load(data, "prediction"), "prediction"))


@dataclass(frozen=True, slots=True)
class Status:
    """A node's retained status: online/offline/degraded, versions, rates, errors, drift state.

    `metrics` holds numbers (rates, queue depth, uptime); `errors` per-kind counts;
    `detail` anything role-specific that dashboards show (JSON-serialisable). `state` is
    "degraded" when a node found one of its threads dead and is about to exit so that its
    service manager restarts it; `reason` then says what happened (it is left out of the JSON
    when None, so statuses without it read the same as before).

    >>> s = Status("pi-1", "edge", "degraded", "0.1.0", reason="worker thread died")
    >>> Status.from_json(s.to_json()).reason
    'worker thread died'
    >>> b'"reason"' in Status("pi-1", "edge", "online", "0.1.0").to_json()
    False
    """

    node: str
    role: str
    state: str
    software_version: str
    model_version: int | None = None
    timestamp: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    drift: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None

    def __post_init__(self) -> None:
        check_id(self.node, "node id")
        check_id(self.role, "status role")
        if self.state not in STATES:
            raise PayloadError(
                f"status state {short(self.state)} must be one of {', '.join(STATES)}",
                kind="bad_field",
            )
        need_str(self.software_version, "status software_version", 64)
        if self.model_version is not None:
            need_int(self.model_version, "status model_version", 0, MAX_MODEL_VERSION)
        object.__setattr__(
            self, "timestamp", need_number(self.timestamp, "status timestamp", 0.0, MAX_UNIX_S)
        )
        need_map(self.metrics, "status metrics", _finite, 1024, max_key=128)
        need_map(self.errors, "status errors", _count, 1024, max_key=128)
        if self.drift is not None:
            need_str(self.drift, "status drift", 32)
        if not isinstance(self.detail, dict):
            raise PayloadError(
                f"status detail must be an object, got {short(self.detail)}", kind="bad_field"
            )
        if self.reason is not None:
            need_str(self.reason, "status reason", MAX_REASON_CHARS)

    def to_json(self) -> bytes:
        obj = {"v": MESSAGE_VERSION, **asdict(self)}
        if self.reason is None:
            del obj["reason"]
        return json.dumps(obj, separators=(",", ":"), default=str).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> Status:
        """Parse and check a status; PayloadError (with .kind) says what was wrong."""
        return cls(**_fields(cls, _load(data, "status"), "status"))

    @classmethod
    def offline(cls, node: str, role: str, software_version: str) -> Status:
        """The Last Will: what the broker publishes when this node vanishes."""
        return cls(node=node, role=role, state="offline", software_version=software_version)


def prediction_json(
    machine: str,
    seq: int,
    label: str,
    confidence: float,
    probabilities: tuple[float, ...] | list[float],
    model_version: int,
    classes: tuple[str, ...],
    truth: str | None,
    drift: str,
    ood: bool,
    ood_score: float,
    timestamps_ns: dict[str, int],
    latency_ms: dict[str, float],
    machine_type: str | None = None,
) -> bytes:
    """The prediction JSON, without building (and validating) a Prediction first; a machine
    of another type than the built-in one also names its `machine_type` (last).

    The classifier's hot path calls this once per window with values it produced itself (finite
    floats); `Prediction.to_json` uses it too, so there is one layout. A template with the C
    string encoder `json` itself uses costs a third of `json.dumps` on a dict.

    >>> import json
    >>> json.loads(prediction_json("m1", 2, "normal", 0.5, [0.5, 0.5], 3, ("normal", "x"),
    ...     None, "ok", False, 0.0, {"sensor": 1}, {"total": 0.25}))["latency_ms"]
    {'total': 0.25}
    """
    return (
        f'{{"v":{MESSAGE_VERSION},"machine":{_str(machine)},"seq":{seq:d},'
        f'"label":{_str(label)},"confidence":{float(confidence)!r},'
        f'"probabilities":[{",".join([repr(float(p)) for p in probabilities])}],'
        f'"model_version":{model_version:d},'
        f'"classes":{_str_list(tuple(classes))},'
        f'"truth":{"null" if truth is None else _str(truth)},"drift":{_str(drift)},'
        f'"ood":{"true" if ood else "false"},"ood_score":{float(ood_score)!r},'
        f'"timestamps_ns":{_obj(timestamps_ns)},"latency_ms":{_obj(latency_ms)}'
        + ("" if machine_type is None else f',"machine_type":{_str(machine_type)}')
        + "}"
    ).encode()


_str = json.encoder.encode_basestring_ascii


@functools.lru_cache(maxsize=64)
def _str_list(items: tuple[str, ...]) -> str:
    """A JSON array of strings; cached, since a model's class list repeats in every message."""
    return "[" + ",".join([_str(c) for c in items]) + "]"


def _obj(d: dict[str, int] | dict[str, float]) -> str:
    return "{" + ",".join([f"{_str(k)}:{v!r}" for k, v in d.items()]) + "}"
