"""Staged rollout, the pure policy: when a version the canaries run may go to every node.

With `--canary-groups`, each new version the trainer publishes goes first to the canary groups'
retained topics (`{prefix}/model/groups/{group}`); the nodes of those groups (status
`detail.rollout_group`) install it and watch its health (pi_edge/model/health_watch.py). A `Rollout`
follows one version through the phases

    canary ──► promoted      (then published on model/current, for every node)
       └─────► bad           (a canary rolled back from it, or the registry marked it bad)

decided only from observations (`CanaryReport`, one per node, read from its status) and times
given by the caller: no clock, no MQTT. The promotion rule (protocol/README.md, "Staged
rollout"): at least one canary node reported serving the version, it is not bad, and either
every canary node serving it finished its health watch without rolling back (verdict `passed` or
`inconclusive` for that version) or `watch_s` passed since the first canary began serving it
with no rollback.

>>> r = Rollout.start(3, ("canary",), watch_s=60.0, now=0.0)
>>> seen = CanaryReport("pi-1", "canary", serving=3, watched=3, verdict="watching")
>>> r = r.observe([seen], bad=(), now=5.0)
>>> r.phase.value, r.canaries, r.first_serving
('canary', ('pi-1',), 5.0)
>>> done = CanaryReport("pi-1", "canary", serving=3, watched=3, verdict="passed")
>>> r.observe([done], bad=(), now=9.0).phase.value
'promoted'
>>> r.observe([seen], bad=(), now=65.0).reason
'no canary rolled back v3 within 60 s of pi-1 serving it'
>>> back = CanaryReport("pi-1", "canary", serving=2, rolled_back=frozenset({3}))
>>> r.observe([back], bad=(), now=9.0).phase.value
'bad'
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from protocol import PayloadError, Status
from protocol.status_detail import (
    DetailReader,
    ModelHealthDetail,
    RolloutDetail,
    RolloutGroup,
    clip_text,
)

__all__ = ["FINISHED", "CanaryReport", "Phase", "Rollout"]

FINISHED = frozenset({"passed", "inconclusive"})  # a health watch that ended without a rollback


class Phase(enum.Enum):
    CANARY = "canary"  # on the canary groups' topics; model/current still has the one before
    PROMOTED = "promoted"  # published on model/current
    BAD = "bad"  # rolled back by a canary (or marked bad): never promoted

    @property
    def final(self) -> bool:
        return self is not Phase.CANARY


@dataclass(frozen=True, slots=True)
class CanaryReport:
    """What one node's latest status says that the rollout needs.

    `group` is its `detail.rollout_group` (None: not in a group), `serving` its model version
    (None: offline or no model), `watched`/`verdict` its `detail.model_health`, `rolled_back`
    the versions its `detail.rollbacks` lists as rolled back from.
    """

    node: str
    group: str | None
    serving: int | None = None
    watched: int | None = None
    verdict: str | None = None
    rolled_back: frozenset[int] = frozenset()

    @property
    def finished(self) -> bool:
        """The node's health watch of the version it serves ended without a rollback."""
        return (
            self.serving is not None and self.watched == self.serving and (self.verdict in FINISHED)
        )

    @classmethod
    def of_status(
        cls, status: Status, on_bad: Callable[[PayloadError], object] | None = None
    ) -> CanaryReport:
        """Read a node's status through the contract's codecs (protocol.status_detail); never
        raises: a malformed part counts as absent, and `on_bad` is told why.

        >>> from protocol.status_detail import HealthFigures, Rollback
        >>> back = Rollback(3, 2, "accuracy 0.4", 1700000000.0, True).to_json_obj()
        >>> none = HealthFigures(0, None, None, 0, None)
        >>> passed = ModelHealthDetail(None, 4, 3, None, "passed", "ok", None, 60.0, None, none,
        ...                            none).to_json_obj()
        >>> s = Status("pi-1", "edge", "online", "0.1.0", model_version=4, detail={"v": 1,
        ...     "rollout_group": "canary", "rollbacks": [back, {"from": "x"}],
        ...     "model_health": passed})
        >>> bad = []
        >>> r = CanaryReport.of_status(s, bad.append)
        >>> (r.group, r.serving, r.finished, sorted(r.rolled_back), len(bad))
        ('canary', 4, True, [3], 1)
        >>> CanaryReport.of_status(Status("pi-1", "edge", "offline", "0.1.0")).serving is None
        True
        """
        detail = DetailReader(status.detail, status.role, on_bad)
        group = detail.get(RolloutGroup)
        health = detail.get(ModelHealthDetail)
        rollbacks, _ = detail.rollbacks()
        return cls(
            status.node,
            None if group is None else group.group,
            None if status.state == "offline" else status.model_version,
            None if health is None else health.watched,
            None if health is None else health.verdict,
            frozenset(r.from_version for r in rollbacks),
        )


@dataclass(frozen=True, slots=True)
class Rollout:
    """One version's way through the canary groups (immutable; `observe` returns the next).

    Times (`started`, `since`, `first_serving`) are on the caller's monotonic clock.
    """

    version: int
    groups: tuple[str, ...]
    watch_s: float
    started: float
    phase: Phase = Phase.CANARY
    since: float = 0.0  # when the phase began
    first_serving: float | None = None  # when a canary was first seen serving the version
    canaries: tuple[str, ...] = ()  # canary nodes seen serving it
    passed: tuple[str, ...] = ()  # of those serving it now, the ones whose watch ended well
    reason: str = "waiting for a canary node to serve it"

    def __post_init__(self) -> None:
        if self.version < 1:
            raise ValueError(f"rollout of version {self.version}: versions start at 1")
        if not self.groups:
            raise ValueError("a rollout needs at least one canary group (--canary-groups)")
        if not (math.isfinite(self.watch_s) and self.watch_s > 0):
            raise ValueError(f"canary watch {self.watch_s} s must be a number > 0")

    @classmethod
    def start(cls, version: int, groups: tuple[str, ...], *, watch_s: float, now: float) -> Rollout:
        """`version` was just published to the canary groups at `now`."""
        return cls(version, tuple(groups), watch_s, now, since=now)

    def observe(
        self, reports: Iterable[CanaryReport], *, bad: Collection[int], now: float
    ) -> Rollout:
        """The state after the nodes' latest `reports` and the registry's `bad` versions
        (a mapping version → the nodes that rolled back from it names them in the reason).

        A final phase never changes again (a new version starts a new rollout).
        """
        if self.phase.final:
            return self
        canary = [r for r in reports if r.group in self.groups]
        v = self.version
        rolled = sorted(r.node for r in canary if v in r.rolled_back)
        if rolled or v in bad:
            marked = tuple(bad.get(v, ())) if isinstance(bad, Mapping) else ()
            if rolled:
                why = f"canary {', '.join(rolled)} rolled back from v{v}"
            elif marked:  # the registry saw the rollback before the rollout's reports did
                why = f"{', '.join(marked)} rolled back from v{v} (model registry)"
            else:
                why = f"v{v} is marked bad in the model registry"

            return self._to(Phase.BAD, now, why + "; never promoted")
        serving = [r for r in canary if r.serving == v]
        canaries = tuple(sorted(set(self.canaries) | {r.node for r in serving}))
        first = self.first_serving
        if first is None and serving:
            first = now
        passed = tuple(sorted(r.node for r in serving if r.finished))
        state = dataclasses.replace(self, canaries=canaries, first_serving=first, passed=passed)
        if first is None:
            return dataclasses.replace(state, reason="waiting for a canary node to serve it")
        if serving and len(passed) == len(serving):
            return state._to(
                Phase.PROMOTED,
                now,
                f"every canary serving v{v} ({', '.join(passed)}) finished its health watch "
                "without a rollback",
            )
        if now - first >= self.watch_s:
            return state._to(
                Phase.PROMOTED,
                now,
                f"no canary rolled back v{v} within {self.watch_s:g} s of "
                f"{canaries[0] if len(canaries) == 1 else 'a canary'} serving it",
            )
        worse = sorted(r.node for r in serving if r.watched == v and r.verdict == "worse")
        waiting = (
            f"{', '.join(worse)} found v{v} worse; waiting for the rollback"
            if worse
            else f"{len(passed)} of {len(serving)} canaries serving v{v} finished their watch"
        )
        return dataclasses.replace(state, reason=waiting)

    def promote_by(self) -> float | None:
        """When the canary watch ends (caller's clock), if a canary serves the version."""
        if self.phase.final or self.first_serving is None:
            return None
        return self.first_serving + self.watch_s

    def detail(self, now: float, wall: float) -> RolloutDetail:
        """The trainer status's `detail.rollout`: times as Unix seconds (`wall` is `now`); the
        shell fills in the version on model/current, the online canaries and the ended ones.

        >>> r = Rollout.start(5, ("canary",), watch_s=30.0, now=100.0)
        >>> d = r.detail(now=110.0, wall=1_000.0)
        >>> d.version, d.phase, d.since, d.promote_by
        (5, 'canary', 990.0, None)
        """
        by = self.promote_by()

        def unix(t: float) -> float:
            return max(0.0, round(wall - (now - t), 3))

        return RolloutDetail(
            version=self.version,
            phase=self.phase.value,
            groups=self.groups,
            canaries=self.canaries,
            passed=self.passed,
            since=unix(self.since),
            first_serving=None if self.first_serving is None else unix(self.first_serving),
            promote_by=None if by is None else unix(by),
            watch_s=self.watch_s,
            reason=clip_text(self.reason),
        )

    def to_dict(self, now: float, wall: float) -> dict[str, Any]:
        """`detail(now, wall)` as JSON."""
        return self.detail(now, wall).to_json_obj()

    def _to(self, phase: Phase, now: float, reason: str) -> Rollout:
        return dataclasses.replace(self, phase=phase, since=now, reason=reason)
