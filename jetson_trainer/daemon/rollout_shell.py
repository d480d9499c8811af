"""Staged rollout, the daemon's shell: publish to the canary groups, promote to model/current.

`StagedRollout` holds what `versions/rollout.py` decides from (the nodes' latest `CanaryReport`s,
fed by the intake thread from their statuses) and the models involved: the version on model/current
(`promoted`) and the newest offered (`offered`). The policy thread calls `offer` for each new
version the daemon publishes and `step` on every tick; the intake thread calls `on_status` and, on
each (re)connect, `announce`. One lock guards it all.

Without canary groups `offer` publishes straight to model/current, as before staged rollout.
A trainer restarted in the middle of a rollout offers its champion to the canaries again: the
canaries serve it already, so it is promoted as soon as their statuses show the watch passed
(or the canary watch ends).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Collection
from typing import Any

from protocol import PayloadError, Status, Topics
from protocol.status_detail import MAX_ENDED, EndedRollout, RolloutDetail, clip_text

from ..versions.rollout import CanaryReport, Phase, Rollout
from .champion import publish_champion
from .retrain import Champion

__all__ = ["StagedRollout"]

log = logging.getLogger(__name__)
MAX_NODES = 1024  # reports kept (a flood of node ids forgets the stalest)
ENDED_KEPT = MAX_ENDED  # finished rollouts shown in the status (5)


class StagedRollout:
    """Canary publishing and promotion for the daemon; thread-safe."""

    def __init__(
        self, client: Any, topics: Topics, groups: tuple[str, ...], watch_s: float
    ) -> None:
        self._client = client
        self._topics = topics
        self.groups = tuple(groups)
        self.watch_s = watch_s
        self._lock = threading.Lock()
        self._reports: dict[str, CanaryReport] = {}
        self._rollout: Rollout | None = None
        self._offered: Champion | None = None  # newest version published (to canaries)
        self._promoted: Champion | None = None  # the one on model/current (as far as we know)
        self._ended: deque[EndedRollout] = deque(maxlen=ENDED_KEPT)
        self._bad_details = 0  # malformed status-detail parts of the nodes (under _lock)

    @property
    def enabled(self) -> bool:
        return bool(self.groups)

    @property
    def bad_details(self) -> int:
        """Status-detail parts of the nodes refused so far (malformed, or an unknown `v`)."""
        with self._lock:
            return self._bad_details

    @property
    def promoted(self) -> Champion | None:
        with self._lock:
            return self._promoted

    # -- intake thread ------------------------------------------------------------------
    def on_status(self, status: Status) -> None:
        """Keep an edge node's latest report (offline included: it serves nothing)."""
        if status.role != "edge" or not self.enabled:
            return
        bad: list[PayloadError] = []
        report = CanaryReport.of_status(status, bad.append)
        if bad:
            log.debug("node %s: status detail part(s) ignored: %s", status.node, bad[0])
        with self._lock:
            self._bad_details += len(bad)
            self._reports.pop(status.node, None)
            self._reports[status.node] = report
            while len(self._reports) > MAX_NODES:
                del self._reports[next(iter(self._reports))]

    def announce(self, champion: Champion | None) -> bool:
        """(Re)connected: publish again what is out (retained), or offer `champion` if it was
        never offered. Returns whether `champion` was newly offered."""
        with self._lock:
            offered, promoted = self._offered, self._promoted
            bad = self._rollout is not None and self._rollout.phase is Phase.BAD
        if champion is not None and (offered is None or offered.version != champion.version):
            self.offer(champion)
            return True
        if promoted is not None:
            publish_champion(self._client, self._topics, promoted)
        if offered is not None and self.enabled and not bad:  # a bad one is never sent again
            self._publish_groups(offered)
        return False

    # -- policy thread ------------------------------------------------------------------
    def offer(self, champion: Champion, bad: Collection[int] = frozenset()) -> None:
        """Publish a new version: to the canary groups (a rollout starts), else model/current.

        The rollout it replaces is first judged once more on the latest reports and `bad`
        (the registry's bad versions), so that one a canary just rolled back ends as bad.
        """
        if not self.enabled:
            publish_champion(self._client, self._topics, champion)
            with self._lock:
                self._offered = self._promoted = champion
            return
        self.step(bad)
        self._publish_groups(champion)
        now = time.monotonic()
        with self._lock:
            old = self._rollout
            if old is not None and old.phase is Phase.BAD:
                self._end(old, "bad", old.reason)
            elif old is not None and not old.phase.final:
                self._end(old, "superseded", f"v{champion.version} was offered before it ended")
            self._offered = champion
            before = self._promoted
            if self._promoted is not None and self._promoted.version == champion.version:
                self._rollout = Rollout(
                    champion.version,
                    self.groups,
                    self.watch_s,
                    now,
                    Phase.PROMOTED,
                    now,
                    reason="already on model/current",
                )
            else:
                self._rollout = Rollout.start(
                    champion.version, self.groups, watch_s=self.watch_s, now=now
                )
        log.info(
            "staged rollout: v%d offered to canary group(s) %s; model/current keeps %s until "
            "the canaries pass (at most %g s after one serves it)",
            champion.version,
            ", ".join(self.groups),
            "nothing" if before is None else f"v{before.version}",
            self.watch_s,
        )

    def step(self, bad: Collection[int], now: float | None = None) -> Champion | None:
        """Follow the rollout; publish the version on model/current when it passes. Returns
        the version promoted by this step, if any."""
        now = time.monotonic() if now is None else now
        with self._lock:
            old = self._rollout
            if old is None or old.phase.final:
                return None
            new = old.observe(list(self._reports.values()), bad=bad, now=now)
            self._rollout = new
            offered = self._offered
        if new.phase is Phase.CANARY:
            return None
        if new.phase is Phase.BAD:
            log.warning("staged rollout: v%d stays off model/current: %s", new.version, new.reason)
            return None
        if offered is None or offered.version != new.version:  # cannot happen: offer sets both
            return None
        took = now - old.started
        publish_champion(self._client, self._topics, offered)
        with self._lock:
            self._promoted = offered
        log.info(
            "staged rollout: v%d promoted to model/current %.1f s after it went to the canaries "
            "(%s)",
            new.version,
            took,
            new.reason,
        )
        return offered

    # -- status -------------------------------------------------------------------------
    def detail(self) -> dict[str, Any] | None:
        """The trainer status's `detail.rollout` as JSON (None without canary groups)."""
        if not self.enabled:
            return None
        now, wall = time.monotonic(), time.time()
        with self._lock:
            rollout = self._rollout
            promoted = None if self._promoted is None else self._promoted.version  # model/current
            ended = tuple(self._ended)  # earlier rollouts that did not end promoted in place
            canaries = tuple(  # online canary nodes (rollout_group in --canary-groups)
                sorted(n for n, r in self._reports.items() if r.group in self.groups and r.serving)
            )
        if rollout is None:
            detail = RolloutDetail(None, "idle", self.groups)
        else:
            detail = rollout.detail(now, wall)
        return dataclasses.replace(
            detail, current_version=promoted, canary_nodes=canaries, ended=ended
        ).to_json_obj()

    # -- helpers ------------------------------------------------------------------------
    def _publish_groups(self, champion: Champion) -> None:
        kind = champion.manifest.type_name  # each machine type's groups have their own topics
        topics = [self._topics.model_group_of(kind, g) for g in self.groups]
        for topic in topics:
            self._client.publish(topic, champion.bundle, qos=1, retain=True)
        log.info(
            "publishing model v%d retained on %s (%d bytes)",
            champion.version,
            ", ".join(topics),
            len(champion.bundle),
        )

    def _end(self, rollout: Rollout, phase: str, reason: str) -> None:
        """Keep a rollout that ended other than by promotion for the status (under lock)."""
        self._ended.append(EndedRollout(rollout.version, phase, clip_text(reason)))
