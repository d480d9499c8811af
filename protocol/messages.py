"""Prediction and status messages: typed dataclasses with a versioned JSON form.

>>> p = Prediction("m01", 5, "normal", 0.97, (0.97, 0.01, 0.01, 0.01), 3)
>>> Prediction.from_json(p.to_json()) == p
True
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import PayloadError
from .schema import CLASSES
from .topics import check_id

MESSAGE_VERSION = 1
MAX_MESSAGE_BYTES = 256 * 1024


def _load(data: bytes | str, what: str) -> dict[str, Any]:
    if len(data) > MAX_MESSAGE_BYTES:
        raise PayloadError(f"{what} is {len(data)} bytes, limit {MAX_MESSAGE_BYTES}", "too_large")
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise PayloadError(f"{what} is not valid JSON: {exc}", kind="bad_json") from exc
    if not isinstance(obj, dict):
        raise PayloadError(f"{what} must be a JSON object", kind="bad_json")
    if obj.get("v") != MESSAGE_VERSION:
        raise PayloadError(
            f"{what} version {obj.get('v')!r}, this build reads {MESSAGE_VERSION}",
            kind="bad_version",
        )
    return obj


def _fields(cls: type, obj: dict[str, Any], what: str) -> dict[str, Any]:
    names = set(cls.__dataclass_fields__)  # type: ignore[attr-defined]
    unknown = set(obj) - names - {"v"}
    if unknown:
        raise PayloadError(f"{what} has unknown field(s) {sorted(unknown)}", kind="bad_field")
    return {k: v for k, v in obj.items() if k != "v"}


@dataclass(frozen=True, slots=True)
class Prediction:
    """What pi_edge concluded about one window.

    `timestamps_ns` holds sensor, received, inferred and published times (ns since epoch);
    `latency_ms` the derived spans; `truth` the window's ground-truth class if it carried one.
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

    def __post_init__(self) -> None:
        check_id(self.machine)
        if self.label not in self.classes:
            raise PayloadError(
                f"prediction label {self.label!r} not in {self.classes}", "bad_label"
            )
        if len(self.probabilities) != len(self.classes):
            raise PayloadError(
                f"prediction has {len(self.probabilities)} probabilities for "
                f"{len(self.classes)} classes",
                kind="bad_shape",
            )
        object.__setattr__(self, "probabilities", tuple(float(p) for p in self.probabilities))
        object.__setattr__(self, "classes", tuple(self.classes))

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
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> Prediction:
        kwargs = _fields(cls, _load(data, "prediction"), "prediction")
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise PayloadError(f"prediction is missing a field: {exc}", kind="bad_field") from exc


@dataclass(frozen=True, slots=True)
class Status:
    """A node's retained status: online/offline, versions, rates, errors, drift state.

    `metrics` holds numbers (rates, queue depth, uptime); `errors` per-kind counts;
    `detail` anything role-specific that dashboards show (JSON-serialisable).
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

    def __post_init__(self) -> None:
        check_id(self.node, "node id")
        if self.state not in ("online", "offline"):
            raise PayloadError(
                f"status state {self.state!r} must be 'online' or 'offline'", kind="bad_field"
            )

    def to_json(self) -> bytes:
        obj = {"v": MESSAGE_VERSION, **asdict(self)}
        return json.dumps(obj, separators=(",", ":"), default=str).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> Status:
        kwargs = _fields(cls, _load(data, "status"), "status")
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise PayloadError(f"status is missing a field: {exc}", kind="bad_field") from exc

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
) -> bytes:
    """The prediction JSON, without building (and validating) a Prediction first.

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
        f'"timestamps_ns":{_obj(timestamps_ns)},"latency_ms":{_obj(latency_ms)}}}'
    ).encode()


_str = json.encoder.encode_basestring_ascii


@functools.lru_cache(maxsize=64)
def _str_list(items: tuple[str, ...]) -> str:
    """A JSON array of strings; cached, since a model's class list repeats in every message."""
    return "[" + ",".join([_str(c) for c in items]) + "]"


def _obj(d: dict[str, int] | dict[str, float]) -> str:
    return "{" + ",".join([f"{_str(k)}:{v!r}" for k, v in d.items()]) + "}"
