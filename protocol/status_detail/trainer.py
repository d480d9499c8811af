"""The parts of the trainer's status detail that the console (and the benches) act on.

`phase` is text for people; `stage` says the same for programs: what the daemon is doing, from
a small vocabulary, with the figures of a fine-tune. The trainer writes the text from the stage
(`TrainerStage.text`), so the two cannot disagree; a reader decides on the stage, never on the
text.

>>> s = TrainerStage("fine_tuning", version=3, labels=480)
>>> s.text(), s.to_json_obj()
('fine-tuning v3 on 480 labels', {'name': 'fine_tuning', 'version': 3, 'labels': 480})
>>> TrainerStage.from_obj({"name": "idle", "version": None, "labels": None}).text()
'idle'
>>> try:
...     TrainerStage.from_obj({"name": "gating", "version": None, "labels": None})
... except PayloadError as exc:
...     print(exc.kind, exc)
bad_field stage name must be one of ['starting', 'training', 'idle', 'fine_tuning'], got 'gating'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import PayloadError
from ._base import (
    MAX_IDS,
    need_bool,
    need_count,
    need_ids,
    need_list,
    need_object,
    need_text,
    need_time,
    need_timeout,
    need_version,
    one_of,
    opt_fraction,
    opt_time,
    opt_version,
)

__all__ = [
    "ENDED_PHASES",
    "MAX_ENDED",
    "ROLLOUT_PHASES",
    "STAGES",
    "EndedRollout",
    "GateDetail",
    "RolloutDetail",
    "TrainerPhase",
    "TrainerStage",
]

# What the daemon (jetson_trainer/daemon/serve.py) does: it starts, may train its first model,
# then waits (idle) and fine-tunes a champion now and then (the gate, conversion and signing
# run inside the fine-tune step and leave it as idle).
STAGES = ("starting", "training", "idle", "fine_tuning")
_STAGE_TEXT = {"starting": "starting", "training": "training initial model", "idle": "idle"}
ROLLOUT_PHASES = ("idle", "canary", "promoted", "bad")
ENDED_PHASES = ("bad", "superseded")
MAX_ENDED = 5  # earlier rollouts `rollout.ended` keeps
MAX_GROUPS = MAX_IDS  # canary groups


@dataclass(frozen=True, slots=True)
class TrainerPhase:
    """`detail.phase`: what the trainer does, as text for a person (`TrainerStage.text`)."""

    KEY: ClassVar[str] = "phase"
    ROLE: ClassVar[str] = "trainer"

    text: str

    def __post_init__(self) -> None:
        need_text(self.text, "phase")

    def to_json_obj(self) -> str:
        return self.text

    @classmethod
    def from_obj(cls, obj: object) -> TrainerPhase:
        return cls(need_text(obj, "phase"))


@dataclass(frozen=True, slots=True)
class TrainerStage:
    """`detail.stage`: what the trainer does (`name`, one of `STAGES`); while fine-tuning, the
    champion `version` it fine-tunes and the `labels` it trains on (both None otherwise)."""

    KEY: ClassVar[str] = "stage"
    ROLE: ClassVar[str] = "trainer"
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"name": STAGES}

    name: str
    version: int | None = None
    labels: int | None = None

    def __post_init__(self) -> None:
        one_of(self.name, "stage name", STAGES)
        if self.name == "fine_tuning":
            need_version(self.version, "stage version")
            need_count(self.labels, "stage labels")
        elif self.version is not None or self.labels is not None:
            raise PayloadError(
                f"stage {self.name!r} has version and labels null (only fine_tuning has them)",
                kind="bad_field",
            )

    @property
    def fine_tune(self) -> bool:
        """Whether the trainer is making a model: its first one, or a fine-tuned challenger."""
        return self.name in ("training", "fine_tuning")

    def text(self) -> str:
        """The stage as `detail.phase` says it."""
        if self.name == "fine_tuning":
            return f"fine-tuning v{self.version} on {self.labels} labels"
        return _STAGE_TEXT[self.name]

    def to_json_obj(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "labels": self.labels}

    @classmethod
    def from_obj(cls, obj: object) -> TrainerStage:
        o = need_object(obj, "stage", ("name", "version", "labels"))
        return cls(o["name"], o["version"], o["labels"])


@dataclass(frozen=True, slots=True)
class GateDetail:
    """`detail.last_gate`: the gate's last decision on a fine-tuned challenger — accepted or
    not and why, the labels the fine-tune used, how long it took (s), the held-out drift
    windows it was judged on, and both models' accuracy on drift and on the original holdout
    (None where there was nothing to score on)."""

    KEY: ClassVar[str] = "last_gate"
    ROLE: ClassVar[str] = "trainer"

    accepted: bool
    reason: str
    labels_used: int
    seconds: float
    holdout: int
    champion_drift: float | None
    challenger_drift: float | None
    champion_original: float | None
    challenger_original: float | None

    def __post_init__(self) -> None:
        need_bool(self.accepted, "last_gate accepted")
        need_text(self.reason, "last_gate reason")
        need_count(self.labels_used, "last_gate labels_used")
        need_time(self.seconds, "last_gate seconds")
        need_count(self.holdout, "last_gate holdout")
        for name in _SCORES:
            opt_fraction(getattr(self, name), f"last_gate {name}")

    def to_json_obj(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "reason": self.reason,
            "labels_used": self.labels_used,
            "seconds": self.seconds,
            "holdout": self.holdout,
            **{name: getattr(self, name) for name in _SCORES},
        }

    @classmethod
    def from_obj(cls, obj: object) -> GateDetail:
        o = need_object(obj, "last_gate", _GATE_FIELDS)
        return cls(*(o[name] for name in _GATE_FIELDS))


_SCORES = ("champion_drift", "challenger_drift", "champion_original", "challenger_original")
_GATE_FIELDS = ("accepted", "reason", "labels_used", "seconds", "holdout", *_SCORES)


@dataclass(frozen=True, slots=True)
class EndedRollout:
    """A rollout that ended other than promoted: its version, `bad` or `superseded`, why."""

    version: int
    phase: str
    reason: str

    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"phase": ENDED_PHASES}

    def __post_init__(self) -> None:
        need_version(self.version, "ended rollout version")
        one_of(self.phase, "ended rollout phase", ENDED_PHASES)
        need_text(self.reason, "ended rollout reason")

    def to_json_obj(self) -> dict[str, Any]:
        return {"version": self.version, "phase": self.phase, "reason": self.reason}

    @classmethod
    def from_obj(cls, obj: object) -> EndedRollout:
        o = need_object(obj, "ended rollout", ("version", "phase", "reason"))
        return cls(o["version"], o["phase"], o["reason"])


_PROGRESS = ("canaries", "passed", "since", "first_serving", "promote_by", "watch_s", "reason")


@dataclass(frozen=True, slots=True)
class RolloutDetail:
    """`detail.rollout` of a trainer with `--canary-groups`: the newest version offered to the
    canary groups and its phase (`idle` before any); for a version, the canary nodes seen
    serving it and those that passed their watch, since when the phase holds, when a canary
    first served it, when the canary watch ends, the watch length and why (Unix s; these seven
    are left out when idle); the version on model/current, the online canary nodes, and up to
    `MAX_ENDED` earlier rollouts that were not promoted."""

    KEY: ClassVar[str] = "rollout"
    ROLE: ClassVar[str] = "trainer"
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"phase": ROLLOUT_PHASES}

    version: int | None
    phase: str
    groups: tuple[str, ...]
    canaries: tuple[str, ...] | None = None
    passed: tuple[str, ...] | None = None
    since: float | None = None
    first_serving: float | None = None
    promote_by: float | None = None
    watch_s: float | None = None
    reason: str | None = None
    current_version: int | None = None
    canary_nodes: tuple[str, ...] = ()
    ended: tuple[EndedRollout, ...] = ()

    def __post_init__(self) -> None:
        opt_version(self.version, "rollout version")
        one_of(self.phase, "rollout phase", ROLLOUT_PHASES)
        if (self.version is None) != (self.phase == "idle"):
            raise PayloadError(
                "rollout version is null exactly when its phase is idle", "bad_field"
            )
        object.__setattr__(self, "groups", need_ids(self.groups, "rollout groups", MAX_GROUPS))
        if self.version is None:
            if any(getattr(self, name) is not None for name in _PROGRESS):
                raise PayloadError(f"an idle rollout has no {list(_PROGRESS)}", "bad_field")
        else:
            for name in ("canaries", "passed"):
                object.__setattr__(self, name, need_ids(getattr(self, name), f"rollout {name}"))
            need_time(self.since, "rollout since")
            opt_time(self.first_serving, "rollout first_serving")
            opt_time(self.promote_by, "rollout promote_by")
            need_timeout(self.watch_s, "rollout watch_s")
            need_text(self.reason, "rollout reason")
        opt_version(self.current_version, "rollout current_version")
        object.__setattr__(self, "canary_nodes", need_ids(self.canary_nodes, "canary_nodes"))
        ended = self.ended
        if len(ended) > MAX_ENDED or not all(isinstance(e, EndedRollout) for e in ended):
            raise PayloadError(f"rollout ended must hold at most {MAX_ENDED}", kind="bad_field")

    def to_json_obj(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": self.version,
            "phase": self.phase,
            "groups": list(self.groups),
        }
        if self.version is not None:
            out["canaries"] = list(self.canaries or ())
            out["passed"] = list(self.passed or ())
            out["since"] = self.since
            out["first_serving"] = self.first_serving
            out["promote_by"] = self.promote_by
            out["watch_s"] = self.watch_s
            out["reason"] = self.reason
        out["current_version"] = self.current_version
        out["canary_nodes"] = list(self.canary_nodes)
        out["ended"] = [e.to_json_obj() for e in self.ended]
        return out

    @classmethod
    def from_obj(cls, obj: object) -> RolloutDetail:
        head, tail = ("version", "phase", "groups"), ("current_version", "canary_nodes", "ended")
        idle = isinstance(obj, dict) and obj.get("version") is None
        o = need_object(obj, "rollout", head + tail if idle else head + _PROGRESS + tail)
        progress: dict[str, Any] = {}
        if not idle:
            progress = {name: o[name] for name in _PROGRESS}
            progress["canaries"] = need_ids(o["canaries"], "rollout canaries")
            progress["passed"] = need_ids(o["passed"], "rollout passed")
        ended = need_list(o["ended"], "rollout ended", MAX_ENDED)
        return cls(
            o["version"],
            o["phase"],
            need_ids(o["groups"], "rollout groups", MAX_GROUPS),
            current_version=o["current_version"],
            canary_nodes=need_ids(o["canary_nodes"], "rollout canary_nodes", MAX_IDS),
            ended=tuple(EndedRollout.from_obj(e) for e in ended),
            **progress,
        )
