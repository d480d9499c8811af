"""Prediction and status messages: typed dataclasses with a versioned JSON form.

>>> p = Prediction("m01", 5, "normal", 0.97, (0.97, 0.01, 0.01, 0.01), 3)
>>> Prediction.from_json(p.to_json()) == p
True
"""

from __future__ import annotations

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
        # Built by hand: dataclasses.asdict deep-copies and costs ~10× more on this hot path.
        obj = {
            "v": MESSAGE_VERSION,
            "machine": self.machine,
            "seq": self.seq,
            "label": self.label,
            "confidence": self.confidence,
            "probabilities": self.probabilities,
            "model_version": self.model_version,
            "classes": self.classes,
            "truth": self.truth,
            "drift": self.drift,
            "ood": self.ood,
            "ood_score": self.ood_score,
            "timestamps_ns": self.timestamps_ns,
            "latency_ms": self.latency_ms,
        }
        return json.dumps(obj, separators=(",", ":")).encode()

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
