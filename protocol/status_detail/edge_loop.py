"""The parts of an edge node's (pi_edge) status detail about its loop: its fleet (read by the
other members of its group and by the console), its drift verdicts and most recent machines, its
label-free accuracy estimate (the console), and where its labeled windows are on their way to
the trainer (buffer, shipper; the soak bench).

>>> f = FleetDetail("line-1", ("pi-a", "pi-b"), 8, 16, 1234, 3, 16, 6.0)
>>> FleetDetail.from_obj(f.to_json_obj()) == f, f.to_json_obj()["members"]
(True, ['pi-a', 'pi-b'])
>>> DriftDetail.from_obj({"overall": "drift"}).to_json_obj()  # a node without a model yet
{'overall': 'drift'}
>>> try:
...     DriftDetail.from_obj({"overall": "drift", "labeled_seen": 3})
... except PayloadError as exc:
...     print(exc.kind)
bad_field
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .._json import need_map
from ..errors import PayloadError
from ..machine_state import DRIFT_STATES
from ._base import (
    MAX_IDS,
    need_count,
    need_entries,
    need_id,
    need_ids,
    need_object,
    need_real,
    need_text,
    need_time,
    need_timeout,
    one_of,
    opt_fraction,
    opt_version,
)

__all__ = [
    "ESTIMATE_METHODS",
    "MAX_NOTE",
    "BufferDetail",
    "DriftDetail",
    "EstimateDetail",
    "FleetDetail",
    "MachineDrift",
    "RecentMachines",
    "ShipperDetail",
]

ESTIMATE_METHODS = ("atc", "doc", "mean_confidence")
MAX_DRIFT_MACHINES = 1024  # machines `drift.machines` lists (pi_edge lists its worst 32)
MAX_REFUSED_KINDS = 256  # kinds in `shipper.refused` (one per PUBACK reason code at most)
MAX_NOTE = 500  # characters of `buffer.unreadable` (a storage error's message)
_BUFFER_COUNTS = (
    "pending",
    "inflight",
    "labeled",
    "acknowledged",
    "evicted_unlabeled",
    "evicted_labeled",
)


# -- fleet ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FleetDetail:
    """`detail.fleet` of a fleet member: its group, the live members as it sees them (sorted,
    itself included), machines it owns of those it has seen, windows it skipped because another
    member owns them, member-set changes, machines moved in or out, its timeout (s)."""

    KEY: ClassVar[str] = "fleet"
    ROLE: ClassVar[str] = "edge"

    group: str
    members: tuple[str, ...]
    owned: int
    seen: int
    skipped: int
    generation: int
    moved: int
    timeout_s: float

    def __post_init__(self) -> None:
        need_id(self.group, "fleet group")
        object.__setattr__(self, "members", need_ids(self.members, "fleet members"))
        for name in ("owned", "seen", "skipped", "generation", "moved"):
            need_count(getattr(self, name), f"fleet {name}")
        if self.owned > self.seen:
            raise PayloadError(
                f"fleet owned {self.owned} is more than the {self.seen} machines seen",
                kind="bad_field",
            )
        need_timeout(self.timeout_s, "fleet timeout_s")

    def to_json_obj(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "members": list(self.members),
            "owned": self.owned,
            "seen": self.seen,
            "skipped": self.skipped,
            "generation": self.generation,
            "moved": self.moved,
            "timeout_s": self.timeout_s,
        }

    @classmethod
    def from_obj(cls, obj: object) -> FleetDetail:
        o = need_object(
            obj,
            "fleet",
            ("group", "members", "owned", "seen", "skipped", "generation", "moved", "timeout_s"),
        )
        return cls(
            o["group"],
            need_ids(o["members"], "fleet members"),
            o["owned"],
            o["seen"],
            o["skipped"],
            o["generation"],
            o["moved"],
            o["timeout_s"],
        )


# -- drift, machines, estimate ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class MachineDrift:
    """One machine's drift verdict and levels (1.0 = its alarm threshold); `stuck_windows`
    (left out when 0) counts its windows with a flat-lined channel."""

    state: str
    input_level: float
    confidence_level: float
    stuck_windows: int | None = None

    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"state": DRIFT_STATES}

    def __post_init__(self) -> None:
        one_of(self.state, "machine drift state", DRIFT_STATES)
        need_real(self.input_level, "machine input_level", 0.0, 1e12)
        need_real(self.confidence_level, "machine confidence_level", 0.0, 1e12)
        if self.stuck_windows is not None and need_count(self.stuck_windows, "stuck_windows") < 1:
            raise PayloadError("stuck_windows is left out when 0", kind="bad_field")

    def to_json_obj(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "state": self.state,
            "input_level": self.input_level,
            "confidence_level": self.confidence_level,
        }
        if self.stuck_windows is not None:
            out["stuck_windows"] = self.stuck_windows
        return out

    @classmethod
    def from_obj(cls, obj: object, what: str = "machine drift") -> MachineDrift:
        o = need_object(obj, what, ("state", "input_level", "confidence_level"), ("stuck_windows",))
        return cls(o["state"], o["input_level"], o["confidence_level"], o.get("stuck_windows"))


_DRIFT_LEVELS = (
    "accuracy_level",
    "accuracy_state",
    "labeled_seen",
    "labeled_wrong",
    "machines",
    "machines_total",
)


@dataclass(frozen=True, slots=True)
class DriftDetail:
    """`detail.drift`: the node's overall drift verdict and, once it has a model (all of them
    or none), its pooled labeled-accuracy level and verdict, labeled windows seen and got wrong,
    the worst machines' verdicts and levels, and how many machines it tracks."""

    KEY: ClassVar[str] = "drift"
    ROLE: ClassVar[str] = "edge"
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "overall": DRIFT_STATES,
        "accuracy_state": DRIFT_STATES,
    }

    overall: str
    accuracy_level: float | None = None
    accuracy_state: str | None = None
    labeled_seen: int | None = None
    labeled_wrong: int | None = None
    machines: dict[str, MachineDrift] | None = None
    machines_total: int | None = None

    def __post_init__(self) -> None:
        one_of(self.overall, "drift overall", DRIFT_STATES)
        levels = [getattr(self, name) for name in _DRIFT_LEVELS]
        if all(v is None for v in levels):
            return
        if any(v is None for v in levels):
            raise PayloadError(
                f"drift has all of {list(_DRIFT_LEVELS)} or none of them", kind="bad_field"
            )
        need_real(self.accuracy_level, "drift accuracy_level", 0.0, 1e12)
        one_of(self.accuracy_state, "drift accuracy_state", DRIFT_STATES)
        seen = need_count(self.labeled_seen, "drift labeled_seen")
        if need_count(self.labeled_wrong, "drift labeled_wrong") > seen:
            raise PayloadError("drift labeled_wrong is more than labeled_seen", kind="bad_field")
        machines = self.machines
        if not isinstance(machines, dict) or len(machines) > MAX_DRIFT_MACHINES:
            raise PayloadError(
                f"drift machines must map at most {MAX_DRIFT_MACHINES} ids", kind="bad_field"
            )
        for machine, drift in machines.items():
            need_id(machine, "a key of drift machines")
            if not isinstance(drift, MachineDrift):
                raise PayloadError("drift machines must hold MachineDrift", kind="bad_field")
        if need_count(self.machines_total, "drift machines_total") < len(machines):
            raise PayloadError(
                "drift machines_total is fewer than the machines listed", kind="bad_field"
            )

    def to_json_obj(self) -> dict[str, Any]:
        if self.machines is None:
            return {"overall": self.overall}
        return {
            "overall": self.overall,
            "accuracy_level": self.accuracy_level,
            "accuracy_state": self.accuracy_state,
            "labeled_seen": self.labeled_seen,
            "labeled_wrong": self.labeled_wrong,
            "machines": {m: d.to_json_obj() for m, d in self.machines.items()},
            "machines_total": self.machines_total,
        }

    @classmethod
    def from_obj(cls, obj: object) -> DriftDetail:
        o = need_object(obj, "drift", ("overall",), _DRIFT_LEVELS)
        machines = o.get("machines")
        return cls(
            o["overall"],
            o.get("accuracy_level"),
            o.get("accuracy_state"),
            o.get("labeled_seen"),
            o.get("labeled_wrong"),
            None
            if machines is None
            else need_entries(
                machines, "drift machines", MachineDrift.from_obj, MAX_DRIFT_MACHINES
            ),
            o.get("machines_total"),
        )


@dataclass(frozen=True, slots=True)
class RecentMachines:
    """`detail.machines` of an edge node: the machines it classified most recently (at most
    `status_machines`, oldest first); the console moves each one's row to this node.

    >>> RecentMachines.from_obj(["m01", "m02"]).ids
    ('m01', 'm02')
    """

    KEY: ClassVar[str] = "machines"
    ROLE: ClassVar[str] = "edge"

    ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "ids", need_ids(self.ids, "machines", MAX_IDS))

    def to_json_obj(self) -> list[str]:
        return list(self.ids)

    @classmethod
    def from_obj(cls, obj: object) -> RecentMachines:
        return cls(need_ids(obj, "machines", MAX_IDS))


@dataclass(frozen=True, slots=True)
class EstimateDetail:
    """`detail.estimate`: the label-free accuracy estimate of the serving model over its
    recent `windows` (None before any), the accuracy on the `labeled` ones among them (None
    without), the method it used (`ESTIMATE_METHODS`) and the model version it is for."""

    KEY: ClassVar[str] = "estimate"
    ROLE: ClassVar[str] = "edge"
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"method": ESTIMATE_METHODS}

    accuracy_est: float | None
    windows: int
    labeled_accuracy: float | None
    labeled: int
    method: str
    model_version: int | None

    def __post_init__(self) -> None:
        opt_fraction(self.accuracy_est, "estimate accuracy_est")
        need_count(self.windows, "estimate windows")
        opt_fraction(self.labeled_accuracy, "estimate labeled_accuracy")
        need_count(self.labeled, "estimate labeled")
        one_of(self.method, "estimate method", ESTIMATE_METHODS)
        opt_version(self.model_version, "estimate model_version")

    def to_json_obj(self) -> dict[str, Any]:
        return {
            "accuracy_est": self.accuracy_est,
            "windows": self.windows,
            "labeled_accuracy": self.labeled_accuracy,
            "labeled": self.labeled,
            "method": self.method,
            "model_version": self.model_version,
        }

    @classmethod
    def from_obj(cls, obj: object) -> EstimateDetail:
        o = need_object(
            obj,
            "estimate",
            ("accuracy_est", "windows", "labeled_accuracy", "labeled", "method", "model_version"),
        )
        return cls(
            o["accuracy_est"],
            o["windows"],
            o["labeled_accuracy"],
            o["labeled"],
            o["method"],
            o["model_version"],
        )


# -- buffer, shipper ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BufferDetail:
    """`detail.buffer`: the durable buffer's rows — waiting, in flight, labeled, acknowledged
    by the trainer, evicted — or, when the buffer could not be read, only `unreadable` (why)."""

    KEY: ClassVar[str] = "buffer"
    ROLE: ClassVar[str] = "edge"

    pending: int | None = None
    inflight: int | None = None
    labeled: int | None = None
    acknowledged: int | None = None
    evicted_unlabeled: int | None = None
    evicted_labeled: int | None = None
    unreadable: str | None = None

    def __post_init__(self) -> None:
        counts = [getattr(self, name) for name in _BUFFER_COUNTS]
        if self.unreadable is not None:
            need_text(self.unreadable, "buffer unreadable", MAX_NOTE)
            if any(c is not None for c in counts):
                raise PayloadError("an unreadable buffer has no counts", kind="bad_field")
            return
        for name, count in zip(_BUFFER_COUNTS, counts, strict=True):
            need_count(count, f"buffer {name}")

    def to_json_obj(self) -> dict[str, Any]:
        if self.unreadable is not None:
            return {"unreadable": self.unreadable}
        return {name: getattr(self, name) for name in _BUFFER_COUNTS}

    @classmethod
    def from_obj(cls, obj: object) -> BufferDetail:
        if isinstance(obj, dict) and "unreadable" in obj:
            return cls(unreadable=need_object(obj, "buffer", ("unreadable",))["unreadable"])
        o = need_object(obj, "buffer", _BUFFER_COUNTS)
        return cls(*(o[name] for name in _BUFFER_COUNTS))


_SHIPPER_COUNTS = (
    "batches_sent",
    "batches_delivered",
    "batches_acked",
    "batches_resent",
    "awaiting_ack",
    "awaiting_ack_windows",
)
_SHIPPER_PROBLEMS = (
    "windows_refused_by_trainer",
    "acks_unknown",
    "acks_bad",
    "subscribe_refused",
    "no_subscriber",
)


def _count_of(value: object, what: str) -> int:
    return need_count(value, what)


@dataclass(frozen=True, slots=True)
class ShipperDetail:
    """`detail.shipper`: drift batches sent, delivered to the broker, acknowledged by the
    trainer, sent again; those awaiting an acknowledgement (batches, windows, age of the oldest
    in s); publishes the broker refused (per reason); windows the trainer refused; stray or bad
    acknowledgements; refused subscriptions; batches no subscriber took."""

    KEY: ClassVar[str] = "shipper"
    ROLE: ClassVar[str] = "edge"

    batches_sent: int
    batches_delivered: int
    batches_acked: int
    batches_resent: int
    awaiting_ack: int
    awaiting_ack_windows: int
    oldest_unacked_s: float
    refused: dict[str, int]
    windows_refused_by_trainer: int
    acks_unknown: int
    acks_bad: int
    subscribe_refused: int
    no_subscriber: int

    def __post_init__(self) -> None:
        for name in (*_SHIPPER_COUNTS, *_SHIPPER_PROBLEMS):
            need_count(getattr(self, name), f"shipper {name}")
        need_time(self.oldest_unacked_s, "shipper oldest_unacked_s")
        _refused(self.refused)

    def to_json_obj(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name) for name in _SHIPPER_COUNTS}
        out["oldest_unacked_s"] = self.oldest_unacked_s
        out["refused"] = dict(self.refused)
        out.update((name, getattr(self, name)) for name in _SHIPPER_PROBLEMS)
        return out

    @classmethod
    def from_obj(cls, obj: object) -> ShipperDetail:
        o = need_object(obj, "shipper", _SHIPPER_FIELDS)
        return cls(**{name: o[name] for name in _SHIPPER_FIELDS})


_SHIPPER_FIELDS = (*_SHIPPER_COUNTS, "oldest_unacked_s", "refused", *_SHIPPER_PROBLEMS)


def _refused(value: object) -> dict[str, int]:
    return need_map(value, "shipper refused", _count_of, MAX_REFUSED_KINDS)
