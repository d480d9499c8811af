"""The parts of an edge node's (pi_edge) status detail about its models, which the trainer acts
on: the rollbacks it did (the model registry marks their versions bad), the health watch of a
newly swapped-in model and the node's rollout group (the staged rollout promotes on them).

>>> r = Rollback(3, 2, "accuracy 0.41 < 0.90", 1700000000.5, True)
>>> r.to_json_obj()
{'from': 3, 'to': 2, 'reason': 'accuracy 0.41 < 0.90', 'ts': 1700000000.5, 'auto': True}
>>> Rollback.from_obj(r.to_json_obj()) == r
True
>>> Rollback.from_obj({**r.to_json_obj(), "from": 0})
Traceback (most recent call last):
...
protocol.errors.PayloadError: rollback from must be an integer in 1..2147483647, got 0
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import PayloadError
from ._base import (
    need_bool,
    need_count,
    need_id,
    need_list,
    need_object,
    need_text,
    need_time,
    need_version,
    one_of,
    opt_fraction,
    opt_text,
    opt_time,
    opt_version,
)

__all__ = [
    "HEALTH_SIGNALS",
    "HEALTH_VERDICTS",
    "MAX_ROLLBACKS",
    "HealthFigures",
    "ModelHealthDetail",
    "Rollback",
    "Rollbacks",
    "RolloutGroup",
    "TypeLoop",
    "TypeLoops",
    "TypeModel",
    "TypeModels",
]

MAX_ROLLBACKS = 8  # entries of `rollbacks`, newest last
HEALTH_VERDICTS = ("off", "idle", "watching", "passed", "worse", "inconclusive")
HEALTH_SIGNALS = ("accuracy", "confidence", "ood")


# -- rollbacks ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Rollback:
    """One rollback of a node: from `from_version` (JSON "from") to `to` (None: the node never
    recorded the previous bundle's version), why, when (Unix s), and whether the node decided it
    by itself (`auto`) or an operator asked."""

    from_version: int = field(metadata={"json": "from"})
    to: int | None
    reason: str
    ts: float
    auto: bool

    def __post_init__(self) -> None:
        need_version(self.from_version, "rollback from")
        opt_version(self.to, "rollback to")
        need_text(self.reason, "rollback reason")
        need_time(self.ts, "rollback ts")
        need_bool(self.auto, "rollback auto")

    def to_json_obj(self) -> dict[str, Any]:
        return {
            "from": self.from_version,
            "to": self.to,
            "reason": self.reason,
            "ts": self.ts,
            "auto": self.auto,
        }

    @classmethod
    def from_obj(cls, obj: object) -> Rollback:
        o = need_object(obj, "rollback", ("from", "to", "reason", "ts", "auto"))
        return cls(o["from"], o["to"], o["reason"], o["ts"], o["auto"])


@dataclass(frozen=True, slots=True)
class Rollbacks:
    """`detail.rollbacks`: the node's last `MAX_ROLLBACKS` rollbacks, newest last.

    A reader takes the well-formed entries of a list with some malformed ones
    (`DetailReader.rollbacks`); `from_obj` is the strict form: every entry or nothing.
    """

    KEY: ClassVar[str] = "rollbacks"
    ROLE: ClassVar[str] = "edge"

    entries: tuple[Rollback, ...] = ()

    def __post_init__(self) -> None:
        if len(self.entries) > MAX_ROLLBACKS or not all(
            isinstance(e, Rollback) for e in self.entries
        ):
            raise PayloadError(
                f"rollbacks must be at most {MAX_ROLLBACKS} Rollback entries", kind="bad_field"
            )

    def to_json_obj(self) -> list[dict[str, Any]]:
        return [e.to_json_obj() for e in self.entries]

    @classmethod
    def from_obj(cls, obj: object) -> Rollbacks:
        items = need_list(obj, "rollbacks", MAX_ROLLBACKS)
        return cls(tuple(Rollback.from_obj(e) for e in items))

    @staticmethod
    def lenient(obj: object) -> tuple[tuple[Rollback, ...], list[PayloadError]]:
        """The well-formed entries among the newest `MAX_ROLLBACKS` of a list, and why each
        other one (older ones beyond the limit included) was refused.

        >>> ok, bad = Rollbacks.lenient([{"from": 3, "to": None, "reason": "", "ts": 1.0,
        ...                               "auto": False}, {"from": "x"}, 7])
        >>> [r.from_version for r in ok], [e.kind for e in bad]
        ([3], ['bad_field', 'bad_field'])
        """
        if not isinstance(obj, list):
            why = f"rollbacks must be a list, got {type(obj).__name__}"
            return (), [PayloadError(why, kind="bad_field")]
        older = PayloadError(f"rollbacks keeps the newest {MAX_ROLLBACKS}", kind="bad_field")
        bad = [older] * max(0, len(obj) - MAX_ROLLBACKS)
        good: list[Rollback] = []
        for entry in obj[-MAX_ROLLBACKS:]:
            try:
                good.append(Rollback.from_obj(entry))
            except PayloadError as exc:
                bad.append(exc)
        return tuple(good), bad


# -- model health -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class HealthFigures:
    """A model's figures over some windows: how many, their mean confidence and share flagged
    out of distribution (None without windows), labeled ones and the accuracy on them (None
    without labels)."""

    windows: int
    mean_confidence: float | None
    ood_rate: float | None
    labeled: int
    accuracy: float | None

    def __post_init__(self) -> None:
        need_count(self.windows, "figures windows")
        opt_fraction(self.mean_confidence, "figures mean_confidence")
        opt_fraction(self.ood_rate, "figures ood_rate")
        need_count(self.labeled, "figures labeled")
        opt_fraction(self.accuracy, "figures accuracy")
        empty = self.windows == 0
        if (self.mean_confidence is None) != empty or (self.ood_rate is None) != empty:
            raise PayloadError(
                "figures mean_confidence and ood_rate are null exactly when windows is 0",
                kind="bad_field",
            )
        if (self.accuracy is None) != (self.labeled == 0):
            raise PayloadError(
                "figures accuracy is null exactly when labeled is 0", kind="bad_field"
            )

    def to_json_obj(self) -> dict[str, Any]:
        return {
            "windows": self.windows,
            "mean_confidence": self.mean_confidence,
            "ood_rate": self.ood_rate,
            "labeled": self.labeled,
            "accuracy": self.accuracy,
        }

    @classmethod
    def from_obj(cls, obj: object, what: str = "figures") -> HealthFigures:
        o = need_object(
            obj, what, ("windows", "mean_confidence", "ood_rate", "labeled", "accuracy")
        )
        return cls(o["windows"], o["mean_confidence"], o["ood_rate"], o["labeled"], o["accuracy"])


def _opt_figures(obj: object, what: str) -> HealthFigures | None:
    return None if obj is None else HealthFigures.from_obj(obj, what)


@dataclass(frozen=True, slots=True)
class ModelHealthDetail:
    """`detail.model_health`: the node's watch of a newly swapped-in model.

    `watching` is the version under watch now (None between watches); `watched` and `against`
    the last watch's new and previous versions; `until` when the watch ends (Unix s); `verdict`
    one of `HEALTH_VERDICTS`, `signal` the figure that found a model worse; figures since the
    swap, of the previous model before it (`baseline`) and of the serving model; rollbacks since
    the node started, by who decided.
    """

    KEY: ClassVar[str] = "model_health"
    ROLE: ClassVar[str] = "edge"
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "verdict": HEALTH_VERDICTS,
        "signal": HEALTH_SIGNALS,
    }

    watching: int | None
    watched: int | None
    against: int | None
    until: float | None
    verdict: str
    reason: str | None
    signal: str | None
    watch_s: float
    since_swap: HealthFigures | None
    baseline: HealthFigures | None
    serving: HealthFigures
    auto_rollbacks: int = 0
    operator_rollbacks: int = 0

    def __post_init__(self) -> None:
        opt_version(self.watching, "model_health watching")
        opt_version(self.watched, "model_health watched")
        opt_version(self.against, "model_health against")
        opt_time(self.until, "model_health until")
        one_of(self.verdict, "model_health verdict", HEALTH_VERDICTS)
        opt_text(self.reason, "model_health reason")
        if self.signal is not None:
            one_of(self.signal, "model_health signal", HEALTH_SIGNALS)
        need_time(self.watch_s, "model_health watch_s")
        for name in ("since_swap", "baseline", "serving"):
            value = getattr(self, name)
            if not (isinstance(value, HealthFigures) or (value is None and name != "serving")):
                raise PayloadError(f"model_health {name} must be figures", kind="bad_field")
        need_count(self.auto_rollbacks, "model_health auto_rollbacks")
        need_count(self.operator_rollbacks, "model_health operator_rollbacks")

    def to_json_obj(self) -> dict[str, Any]:
        return {
            "watching": self.watching,
            "watched": self.watched,
            "against": self.against,
            "until": self.until,
            "verdict": self.verdict,
            "reason": self.reason,
            "signal": self.signal,
            "watch_s": self.watch_s,
            "since_swap": None if self.since_swap is None else self.since_swap.to_json_obj(),
            "baseline": None if self.baseline is None else self.baseline.to_json_obj(),
            "serving": self.serving.to_json_obj(),
            "auto_rollbacks": self.auto_rollbacks,
            "operator_rollbacks": self.operator_rollbacks,
        }

    @classmethod
    def from_obj(cls, obj: object) -> ModelHealthDetail:
        o = need_object(obj, "model_health", _HEALTH_FIELDS)
        return cls(
            o["watching"],
            o["watched"],
            o["against"],
            o["until"],
            o["verdict"],
            o["reason"],
            o["signal"],
            o["watch_s"],
            _opt_figures(o["since_swap"], "model_health since_swap"),
            _opt_figures(o["baseline"], "model_health baseline"),
            HealthFigures.from_obj(o["serving"], "model_health serving"),
            o["auto_rollbacks"],
            o["operator_rollbacks"],
        )


_HEALTH_FIELDS = (
    "watching",
    "watched",
    "against",
    "until",
    "verdict",
    "reason",
    "signal",
    "watch_s",
    "since_swap",
    "baseline",
    "serving",
    "auto_rollbacks",
    "operator_rollbacks",
)


# -- rollout group ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RolloutGroup:
    """`detail.rollout_group`: the node's rollout group (`pi_edge run --rollout-group NAME`),
    an id; absent on a node in no group.

    >>> RolloutGroup.from_obj("canary").to_json_obj()
    'canary'
    """

    KEY: ClassVar[str] = "rollout_group"
    ROLE: ClassVar[str] = "edge"

    group: str

    def __post_init__(self) -> None:
        need_id(self.group, "rollout_group")

    def to_json_obj(self) -> str:
        return self.group

    @classmethod
    def from_obj(cls, obj: object) -> RolloutGroup:
        return cls(need_id(obj, "rollout_group"))


# -- machine types ------------------------------------------------------------------------------
MAX_TYPES = 64  # machine types one node serves (protocol.machine_type: a site's most)


@dataclass(frozen=True, slots=True)
class TypeModel:
    """One machine type a node serves: its serving model (None: none yet), that model's number
    of classes (0 without one), windows its models classified since the node started, and
    windows of its machines that came while it had no model (counted, not classified)."""

    type: str
    model_version: int | None
    classes: int
    windows: int
    unclassified: int

    def __post_init__(self) -> None:
        need_id(self.type, "type_model type")
        opt_version(self.model_version, "type_model model_version")
        need_count(self.classes, "type_model classes")
        need_count(self.windows, "type_model windows")
        need_count(self.unclassified, "type_model unclassified")
        if (self.model_version is None) != (self.classes == 0):
            raise PayloadError(
                "type_model classes is 0 exactly when model_version is null", kind="bad_field"
            )

    def to_json_obj(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "model_version": self.model_version,
            "classes": self.classes,
            "windows": self.windows,
            "unclassified": self.unclassified,
        }

    @classmethod
    def from_obj(cls, obj: object) -> TypeModel:
        o = need_object(
            obj, "type_model", ("type", "model_version", "classes", "windows", "unclassified")
        )
        return cls(o["type"], o["model_version"], o["classes"], o["windows"], o["unclassified"])


@dataclass(frozen=True, slots=True)
class TypeLoop:
    """The closed loop of one machine type a node serves: maintenance label events applied
    and refused, windows labeled by them, windows asked to be labeled (label requests), the
    label-free accuracy estimate of its serving model (None before any) and its kept windows
    waiting in the node's buffer for the trainer."""

    type: str
    label_events: int
    labels_refused: int
    windows_labeled: int
    windows_asked: int
    accuracy_est: float | None
    waiting: int

    def __post_init__(self) -> None:
        need_id(self.type, "type_loop type")
        for name in ("label_events", "labels_refused", "windows_labeled", "windows_asked"):
            need_count(getattr(self, name), f"type_loop {name}")
        opt_fraction(self.accuracy_est, "type_loop accuracy_est")
        need_count(self.waiting, "type_loop waiting")

    def to_json_obj(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "label_events": self.label_events,
            "labels_refused": self.labels_refused,
            "windows_labeled": self.windows_labeled,
            "windows_asked": self.windows_asked,
            "accuracy_est": self.accuracy_est,
            "waiting": self.waiting,
        }

    @classmethod
    def from_obj(cls, obj: object) -> TypeLoop:
        fields = (
            "type",
            "label_events",
            "labels_refused",
            "windows_labeled",
            "windows_asked",
            "accuracy_est",
            "waiting",
        )
        o = need_object(obj, "type_loop", fields)
        return cls(*(o[f] for f in fields))


@dataclass(frozen=True, slots=True)
class TypeLoops:
    """`detail.type_loops`: each machine type's closed loop, in the order the node serves
    them; present beside `types` (a detail v 2). The node-wide `labels` and `estimate` are of
    its first type's loop.

    >>> one = TypeLoop("default", 2, 0, 5, 8, 0.9, 3)
    >>> t = TypeLoops((one, TypeLoop("fan", 1, 1, 2, 0, None, 0)))
    >>> TypeLoops.from_obj(t.to_json_obj()) == t
    True
    """

    KEY: ClassVar[str] = "type_loops"
    ROLE: ClassVar[str] = "edge"

    entries: tuple[TypeLoop, ...] = ()

    def __post_init__(self) -> None:
        if len(self.entries) > MAX_TYPES or not all(isinstance(e, TypeLoop) for e in self.entries):
            raise PayloadError(
                f"type_loops must be at most {MAX_TYPES} TypeLoop entries", kind="bad_field"
            )
        names = [e.type for e in self.entries]
        if len(set(names)) != len(names):
            raise PayloadError(
                f"type_loops names a machine type twice: {names[:8]}", kind="bad_field"
            )

    def to_json_obj(self) -> list[dict[str, Any]]:
        return [e.to_json_obj() for e in self.entries]

    @classmethod
    def from_obj(cls, obj: object) -> TypeLoops:
        items = need_list(obj, "type_loops", MAX_TYPES)
        return cls(tuple(TypeLoop.from_obj(e) for e in items))


@dataclass(frozen=True, slots=True)
class TypeModels:
    """`detail.types`: the machine types a node serves and each one's model, in the order the
    node serves them; present only on a node that serves another type than the built-in one
    (or more than one), whose detail is then version 2 (`TYPES_DETAIL_VERSION`): its
    `rollbacks` and `model_health` are of its first type's model only.

    >>> t = TypeModels((TypeModel("default", 3, 4, 120, 0), TypeModel("press", None, 0, 0, 9)))
    >>> TypeModels.from_obj(t.to_json_obj()) == t, t.version_of("press"), t.version_of("fan")
    (True, None, None)
    """

    KEY: ClassVar[str] = "types"
    ROLE: ClassVar[str] = "edge"

    entries: tuple[TypeModel, ...] = ()

    def __post_init__(self) -> None:
        if len(self.entries) > MAX_TYPES or not all(isinstance(e, TypeModel) for e in self.entries):
            raise PayloadError(
                f"types must be at most {MAX_TYPES} TypeModel entries", kind="bad_field"
            )
        names = [e.type for e in self.entries]
        if len(set(names)) != len(names):
            raise PayloadError(f"types names a machine type twice: {names[:8]}", kind="bad_field")

    def version_of(self, machine_type: str) -> int | None:
        """The model version serving `machine_type` (None: none, or the node does not serve it)."""
        return next((e.model_version for e in self.entries if e.type == machine_type), None)

    def to_json_obj(self) -> list[dict[str, Any]]:
        return [e.to_json_obj() for e in self.entries]

    @classmethod
    def from_obj(cls, obj: object) -> TypeModels:
        items = need_list(obj, "types", MAX_TYPES)
        return cls(tuple(TypeModel.from_obj(e) for e in items))
