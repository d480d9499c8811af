"""`python -m jetson_trainer serve`: the trainer daemon that closes the loop.

`TrainerDaemon` composes the intake (`daemon/intake.py`: persistent session, batches stored before
they are acknowledged), the champion (`daemon/champion.py`: newest verified bundle on disk, else an
initial model trained from --data, published retained) and the policy loop here: it watches the Pis'
status and the stored labels through `TrainPolicy`, and fine-tunes, gates, signs and publishes a
challenger when the policy says so.

Threads: paho's network thread only enqueues; the intake thread stores and acknowledges; the
policy thread runs `run_forever`; the main thread may render `snapshot()`. Each thread's state
is one class with its own lock (`Intake.counts()`, `LoopState.view()`).

No thread dies quietly: paho's callbacks are wrapped by `nodekit.guard` and each loop has the
last-resort handler at its outermost frame (faults counted, in status as `fault:<where>:<Type>`).
If a watched thread dies anyway, `watchdog()` (called by `serve`'s main thread) publishes a
retained status "degraded" naming it, and `serve` stops and exits 1 for its service manager.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from nodekit.errors import BrokerRefusedError
from nodekit.guard import Faults, ThreadWatch, publish_retained
from nodekit.lifecycle import DEGRADED, Loop, Watchdog
from nodekit.proc import ProcSampler
from protocol import EdgeloopError, Status, Topics, __version__
from protocol.status_detail import (
    DETAIL_VERSION,
    GateDetail,
    RolloutDetail,
    TrainerPhase,
    TrainerStage,
    clip_text,
    finite_or_none,
)

from ..config import ServeConfig
from ..errors import TrainerError
from .champion import OriginalData, load_champion, load_original, public_key_of, train_initial
from .class_table import ClassTable
from .dashboard import TrainerSnapshot
from .finetune_policy import Observation, TrainPolicy
from .growth import ClassGrowth
from .intake import Intake
from .reference import champion_handles, renew_reference
from .registry_shell import ModelHistory
from .retrain import Attempt, Champion, accuracy, retrain
from .rollout_shell import StagedRollout
from .store import WindowStore

__all__ = ["DaemonState", "LoopState", "ServeConfig", "TrainerDaemon"]

log = logging.getLogger(__name__)
ROLE = "trainer"
MAX_LATE_LABELS = 500  # labels that arrived during a fine-tune, added to the gate's holdout
RECENT_WINDOWS = 1000  # newest shipped windows (labeled or not) for a new detector reference


def few_labels(y: np.ndarray, per_class: int, cap: int, n_classes: int = 4) -> np.ndarray:
    """Indices (into the labels since the trigger, oldest first) a fine-tune trains on: the
    first `per_class` of every class when each class has that many, else the newest `cap`.

    >>> y = np.array([0, 0, 0, 1, 2, 1, 3, 2, 3, 0])
    >>> few_labels(y, 2, 48).tolist()
    [0, 1, 3, 4, 5, 6, 7, 8]
    >>> few_labels(y, 3, 4).tolist()
    [6, 7, 8, 9]
    """
    if per_class:
        picks = [np.flatnonzero(y == c)[:per_class] for c in range(n_classes)]
        if all(len(p) == per_class for p in picks):
            return np.sort(np.concatenate(picks))
    return np.arange(max(0, len(y) - cap), len(y))


STATUS_EVERY_S = 2.0
STARTING, IDLE = TrainerStage("starting"), TrainerStage("idle")


@dataclass(frozen=True, slots=True)
class DaemonState:
    """One consistent reading of the daemon for status, dashboard and benches."""

    phase: str
    policy: str
    champion: int | None
    connected: bool
    batches: int
    duplicates: int
    bad_batches: int
    store_errors: int
    intake_crashes: int
    skipped_bundles: tuple[str, ...]
    last_attempt: Attempt | None
    pis: dict[str, dict[str, Any]]
    started: float
    acks: int = 0  # batch acknowledgements published to the Pis
    publish_refused: int = 0  # publishes the broker refused (PUBACK ≥ 0x80: the ACL)
    windows: int = 0  # new windows stored from batches
    statuses_refused: int = 0  # statuses not from their node's own topic, or a changed role
    statuses_dropped: int = 0  # statuses dropped unread from a full status queue (a flood)
    bad_statuses: int = 0  # statuses that did not parse
    batches_refused: int = 0  # drift batches naming another node than their topic's
    legacy_batches: int = 0  # drift batches on the legacy shared topic (sender unchecked)
    stage: TrainerStage = IDLE  # what `phase` says, for programs (status `detail.stage`)


@dataclass(frozen=True, slots=True)
class LoopView:
    """A copy of `LoopState`'s fields taken under its lock."""

    stage: TrainerStage
    policy: str
    champion: Champion | None
    champion_since: int
    last_attempt: Attempt | None
    skipped_bundles: tuple[str, ...]

    @property
    def phase(self) -> str:
        """The stage as text for people (status `detail.phase`)."""
        return self.stage.text()


@dataclass(slots=True)
class _Loop:
    stage: TrainerStage = STARTING
    policy: str = ""
    champion: Champion | None = None
    champion_since: int = 0  # store position when the champion was published
    last_attempt: Attempt | None = None
    skipped_bundles: tuple[str, ...] = ()


class LoopState:
    """What the policy thread decides; the intake thread and the dashboard read it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._s = _Loop()

    def view(self) -> LoopView:
        """All fields at one instant."""
        with self._lock:
            s = self._s
            return LoopView(
                s.stage, s.policy, s.champion, s.champion_since, s.last_attempt, s.skipped_bundles
            )

    def update(self, **changes: Any) -> None:
        """Set some fields (names of `LoopView`) atomically."""
        with self._lock:
            for name, value in changes.items():
                setattr(self._s, name, value)

    @property
    def champion(self) -> Champion | None:
        with self._lock:
            return self._s.champion


class TrainerDaemon:
    """Intake + champion + policy loop; `start()`, then `run_forever()` on a thread, `stop()`."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.kind = config.machine()  # this daemon's lineage: one machine type
        self.topics = Topics(config.prefix)
        self.store = WindowStore(config.store / "windows.sqlite")
        self.policy = TrainPolicy(config.policy)
        # the classes its store's labels index: the type's, and names an open type was given
        self.classes = ClassTable.beside(config.store, self.kind, self._champion_classes)
        self.growth = ClassGrowth(self.kind)  # a cold start's class growth (daemon/growth.py)
        self.loop = LoopState()
        self._retrain = config.retrain
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._proc = ProcSampler()  # status metrics cpu_percent and rss_mb
        self._original: OriginalData | None = None
        self.faults = Faults(log)
        # intake + paho thread + policy thread, and how the daemon ends when one dies
        self._dog = Watchdog("the trainer daemon", self._degraded, log=log)
        self.history = ModelHistory(config.store)  # model registry: versions, deployments, bad
        self._policy = Loop("trainer-policy", self.run_forever)  # start_policy() starts it
        self.intake = Intake(
            broker=config.broker,
            client_id=config.client_id,
            topics=self.topics,
            store=self.store,
            store_dir=config.store,
            offline_status=self._offline(),
            stop=self._stop,
            on_connected=self._on_connected,
            faults=self.faults,
            credentials=config.credentials(),  # reads the password file: ConfigError now
            on_status=self._on_status,
            machine_type=self.kind,
            classes=self.classes,
        )
        self.client = self.intake.client
        self.rollout = StagedRollout(  # --canary-groups: canaries first, then model/current
            self.client, self.topics, config.canary_groups, config.canary_watch_s
        )

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> TrainerDaemon:
        """Load data and champion (training one if needed), then open the session."""
        public_key = public_key_of(self.config.private_key)
        self._original = load_original(self.config.data, self.kind)
        site = self.config.prefix  # the Pis refuse a bundle made for another prefix
        bad = self.history.bad_versions()  # rolled back by a node: never offered again
        kind = self.kind.name
        loaded = load_champion(self.config.models_dir, public_key, site, bad, kind)
        skipped = loaded.skipped
        champion = loaded.champion
        if champion is None and self._original is not None:
            self.loop.update(stage=TrainerStage("training"))
            train_initial(
                self.config.models_dir,
                self._original,
                self.config.private_key,
                epochs=self.config.initial_epochs,
                site=site,
                kind=self.kind,
            )
            loaded = load_champion(self.config.models_dir, public_key, site, bad, kind)
            champion, skipped = loaded.champion, skipped + loaded.skipped
        elif champion is None:
            log.error("no model in %s and no --data to train one; waiting", self.config.models_dir)
        champion = self.history.adopt(
            champion, self.config.models_dir, self.config.private_key, site
        )
        self.loop.update(stage=IDLE, champion=champion, skipped_bundles=skipped)
        self.intake.start().watch(self.watch)
        return self

    def start_policy(self) -> TrainerDaemon:
        """Start the policy thread (`run_forever`): fine-tune, gate, publish as labels come."""
        self._policy.start().watch(self.watch)
        return self

    def stop(self) -> None:
        """Stop the intake, mark the trainer offline (retained) and close the store.

        A degraded trainer leaves its degraded status retained, so that an operator sees why.
        """
        self.intake.stop()
        self._policy.stop(timeout=5)
        last = self.status().to_json() if self.dead_threads else self._offline()
        publish_retained(self.client, self.topics.status(self.config.client_id), last)
        self.intake.close()
        self.store.close()

    @property
    def watch(self) -> ThreadWatch:
        """The threads the daemon cannot go on without."""
        return self._dog.threads

    @property
    def failed(self) -> threading.Event:
        return self._dog.failed

    @property
    def dead_threads(self) -> tuple[str, ...]:
        return self._dog.dead

    def watchdog(self) -> bool:
        """Whether a thread the daemon needs has died; the first time, go degraded.

        Degraded: an error log says the daemon must be restarted, a retained status with state
        "degraded" names the dead threads, and `failed` is set (`serve` then exits 1).
        """
        return self._dog.check(stopping=self._stop.is_set())

    def _degraded(self, dead: tuple[str, ...]) -> None:
        publish_retained(
            self.client, self.topics.status(self.config.client_id), self.status().to_json()
        )

    def connection_failure(self) -> BrokerRefusedError | None:
        """The broker's refusal once it keeps refusing the trainer's login (or TLS), else None."""
        link = self.intake.link
        return link.failure() if link is not None else None

    def run_forever(self) -> None:
        """The policy loop; returns when stop() is called from another thread or signal."""
        next_status = 0.0
        guard = self.faults.loop("trainer-policy", self._stop)  # the outermost frame
        while not self._stop.is_set():
            with guard:
                try:
                    self.tick()
                except (EdgeloopError, ValueError, RuntimeError, OSError, sqlite3.Error) as exc:
                    # one failed fine-tune (Keras, converter, disk) must not end the daemon's loop
                    log.exception("fine-tune failed: %s; the champion keeps serving", exc)
                    self.loop.update(stage=IDLE)
                    self.policy.attempted(accepted=False)
                if time.monotonic() >= next_status and not self.failed.is_set():
                    self._publish_status()
                    next_status = time.monotonic() + STATUS_EVERY_S
            self._stop.wait(self.config.tick_s)

    @property
    def champion(self) -> Champion | None:
        """The model the Pis should run now."""
        return self.loop.champion

    def _champion_classes(self) -> tuple[str, ...]:
        """The classes the champion knows (the class table's bound on names it waits for)."""
        champion = self.loop.champion
        return () if champion is None else tuple(champion.manifest.classes)

    @property
    def state(self) -> DaemonState:
        """Intake counters and loop state read consistently, each under its own lock."""
        loop = self.loop.view()
        counts = self.intake.counts()
        return DaemonState(
            phase=loop.phase,
            stage=loop.stage,
            policy=loop.policy,
            champion=loop.champion.version if loop.champion else None,
            connected=counts.connected,
            batches=counts.batches,
            duplicates=counts.duplicates,
            bad_batches=counts.bad_batches,
            store_errors=counts.store_errors,
            intake_crashes=counts.crashes,
            skipped_bundles=loop.skipped_bundles,
            last_attempt=loop.last_attempt,
            pis=counts.pis,
            started=self._started,
            acks=counts.acks,
            publish_refused=counts.publish_refused,
            windows=counts.windows,
            statuses_refused=counts.statuses_refused,
            statuses_dropped=counts.statuses_dropped,
            bad_statuses=counts.bad_statuses,
            batches_refused=counts.batches_refused,
            legacy_batches=counts.legacy_batches,
        )

    # -- intake thread ------------------------------------------------------------------
    def _on_connected(self) -> None:
        """(Re)connected: announce the trainer and the champion, both retained."""
        self._publish_status()
        champion = self.loop.champion
        if champion is not None:
            self.rollout.announce(champion)  # model/current, or the canary groups first
            self.history.published(champion)

    def _on_status(self, status: Status) -> None:
        """An edge node's status: the model registry and the staged rollout note it."""
        self.history.on_status(status)
        self.rollout.on_status(status)

    # -- policy loop ---------------------------------------------------------------------
    def observation(self) -> Observation:
        """What the policy sees: store position, new labels, champion accuracy, Pi drift."""
        view = self.loop.view()
        champion = view.champion
        check_labels = self.config.check_labels
        recent_accuracy = None
        if champion is not None:
            x, y, _ = self.store.recent_labeled(check_labels, after=view.champion_since)
            if len(y) >= check_labels:
                recent_accuracy = accuracy(champion.model, champion.norm, x, y)
        pi_drift = any(
            p["state"] == "online"
            and p["drift"] == "drift"
            and champion is not None
            and p["model"] == champion.version
            for p in self.intake.counts().pis.values()
        )
        after = self.policy.labels_after if self.policy.collecting else 0
        per_class = (
            self.store.labeled_by_class(after, self._n_classes(champion))
            if self.policy.collecting and self.config.labels_per_class
            else None
        )
        return Observation(
            self.store.latest_labeled_seqno(),
            self.store.labeled_after(after),
            recent_accuracy,
            pi_drift,
            per_class,
        )

    def _n_classes(self, champion: Champion | None) -> int:
        """The classes labels index: the champion's (a model's list may have grown), else the
        machine type's."""
        return len(champion.manifest.classes if champion is not None else self.kind.classes)

    def tick(self) -> None:
        """One policy step: maybe fine-tune, gate, record, and publish an accepted challenger."""
        if self.rollout.enabled:  # promote the canaries' version once they passed (or end
            self.rollout.step(self.history.bad_nodes())  # it as bad, before the fallback)
        if self.history.changed.is_set():  # a node rolled back a version
            self.history.changed.clear()
            self._leave_bad_champion()
        champion = self.loop.champion
        if champion is None:
            self.loop.update(policy="no champion model")
            return
        self.growth.kind = self.classes.kind  # with the classes labels added (an open type)
        if ClassGrowth.needed(champion, self.growth.kind):  # a cold start: labels grow it
            self._grow(champion)
            return
        decision = self.policy.update(self.observation())
        self.loop.update(policy=decision)
        if decision != "train":
            return
        # every label a fine-tune may use (--labels) and up to MAX_LATE_LABELS more for the gate
        x_all, y_all, last = self.store.recent_labeled(
            self.config.labels_needed + MAX_LATE_LABELS, after=self.policy.labels_after
        )
        use = few_labels(
            y_all,
            self.config.labels_per_class,
            self.config.labels_needed,
            self._n_classes(champion),
        )
        x, y = x_all[use], y_all[use]
        spare = np.setdiff1d(np.arange(len(y_all)), use)  # not trained on: the gate judges on them
        self.loop.update(stage=TrainerStage("fine_tuning", champion.version, len(y)))
        empty = (x[:0], y[:0])
        original = self._original
        version = self.history.next_version(self.config.models_dir, champion)
        try:
            attempt = retrain(
                champion,
                x,
                y,
                replay=original.replay if original else empty,
                original_holdout=original.holdout if original else empty,
                out_dir=self.config.models_dir,
                private_key=self.config.private_key,
                config=self._retrain,
                late_labels=lambda: self._late_labels(last),
                site=self.config.prefix,
                version=version,
                recent=self.store.recent_windows(
                    RECENT_WINDOWS, after=self.policy.labels_after, drifting=True
                ),
                held_out=(x_all[spare], y_all[spare]),
            )
        finally:
            self.loop.update(stage=IDLE)
        self.loop.update(last_attempt=attempt)
        d = attempt.decision
        self._record(version, champion, attempt, y, last)
        self.store.record_model(
            version,
            champion.version,
            accepted=d.accepted,
            reason=d.reason,
            labels_used=attempt.labels_used,
            scores=(
                d.champion.drift,
                d.challenger.drift,
                d.champion.original,
                d.challenger.original,
            ),
        )
        self.policy.attempted(accepted=d.accepted)
        if attempt.challenger is None and champion_handles(d):
            renewed = self._renew_reference(champion, d.reason, attempt.labels_used)
            attempt = dataclasses.replace(attempt, challenger=renewed)
        if attempt.challenger is not None and champion.version in self.history.bad_versions():
            why = f"its parent v{champion.version} was rolled back while it trained"
            self.history.discard(attempt.challenger, why)  # marked bad, never published
            attempt = dataclasses.replace(attempt, challenger=None)
        if attempt.challenger is not None:
            self.loop.update(champion=attempt.challenger, champion_since=last)
            self.policy.model_changed()
            self.rollout.offer(attempt.challenger, self.history.bad_nodes())
            self.history.published(attempt.challenger)

    def _grow(self, champion: Champion) -> None:
        """The champion knows fewer classes than the type declares (an anomaly model, or one
        grown from it): labels of a class it lacks grow its class list (daemon/growth.py), and
        the grown model is published like an accepted challenger."""
        self.loop.update(policy="cold start: growing the classes as labels of new ones come")
        version = self.history.next_version(self.config.models_dir, champion)
        got = self.growth.attempt(
            champion,
            self.store,
            self._original,
            models_dir=self.config.models_dir,
            private_key=self.config.private_key,
            site=self.config.prefix,
            version=version,
        )
        if got is None or got.growth is None:
            return
        log.info("%s: %s", got.reason, "published" if got.challenger else "refused")
        self.store.record_model(
            version,
            champion.version,
            accepted=got.challenger is not None,
            reason=got.reason,
            labels_used=got.labels,
            scores=None,
        )
        if got.challenger is not None:
            since = self.store.latest_labeled_seqno()
            self.loop.update(champion=got.challenger, champion_since=since)
            self.policy.model_changed()
            self.rollout.offer(got.challenger, self.history.bad_nodes())
            self.history.published(got.challenger)

    def _renew_reference(self, champion: Champion, why: str, labels: int) -> Champion | None:
        """The champion handles the drift (the gate said so): re-issue its network as a new
        version whose detector statistics include what the Pis see now (daemon/reference.py), so
        their drift alarm ends instead of staying on for good."""
        # the drift episode so far: windows stored since RECENT_WINDOWS before this trigger (a
        # ramp renews several times on its way; each renewal covers the path since the last)
        after = max(0, self.policy.labels_after - RECENT_WINDOWS)
        x_now, y_now = self.store.recent_windows(2 * RECENT_WINDOWS, after=after, drifting=True)
        if not len(y_now):
            return None
        original = self._original
        empty = (x_now[:0], y_now[:0])
        version = self.history.next_version(self.config.models_dir, champion)
        reason = f"reference renewed: the champion handles the drift ({why})"
        try:
            path, manifest = renew_reference(
                champion,
                x_now,
                y_now,
                replay=original.replay if original else empty,
                original_holdout=original.holdout if original else empty,
                out_dir=self.config.models_dir,
                private_key=self.config.private_key,
                version=version,
                reason=reason,
                labels_used=labels,
                site=self.config.prefix,
            )
        except (OSError, ValueError, TrainerError) as exc:
            log.error("could not renew v%d's detector reference: %s", champion.version, exc)
            return None
        self.store.record_model(
            version,
            champion.version,
            accepted=True,
            reason=reason,
            labels_used=labels,
            scores=None,
        )
        return Champion(version, path.read_bytes(), champion.model, manifest, champion.keras, path)

    def _record(
        self, version: int, champion: Champion, attempt: Attempt, y: np.ndarray, last: int
    ) -> None:
        """Put the fine-tune attempt in the model registry (history.record_attempt)."""
        original = self._original
        self.history.record_attempt(
            version,
            champion,
            attempt,
            y,
            source=f"trainer store, labeled windows seqno {self.policy.labels_after + 1}..{last}",
            senders=self.store.label_senders(self.policy.labels_after, last),
            data={
                "new_labels": len(y),
                "replay": min(self._retrain.replay_size, len(original.replay[1]))
                if original
                else 0,
                "original_holdout": len(original.holdout[1]) if original else 0,
            },
        )

    def _leave_bad_champion(self) -> None:
        """The champion was rolled back by a node: offer the last good version instead."""
        champion = self.loop.champion
        if champion is None or champion.version not in self.history.bad_versions():
            return
        new = self.history.fallback(
            champion, self.config.models_dir, self.config.private_key, self.config.prefix
        )
        self.loop.update(champion=new, champion_since=self.store.latest_labeled_seqno())
        self.policy.model_changed()
        if new is not None:
            # with canary groups the canaries get it back first; the bad rollout ends as bad
            self.rollout.offer(new, self.history.bad_nodes())
            self.history.published(new)

    def _late_labels(self, after: int) -> tuple[np.ndarray, np.ndarray]:
        """Labels that arrived while the fine-tune trained (after store seqno `after`), for
        the gate beside the spare ones."""
        x, y, _ = self.store.recent_labeled(MAX_LATE_LABELS, after=after)
        return x, y

    # -- what the world sees -------------------------------------------------------------
    def snapshot(self) -> TrainerSnapshot:
        """The dashboard's view: one consistent state plus the store's counts and history."""
        s = self.state
        counts = self.store.counts()
        gate = _gate(s)
        return TrainerSnapshot(
            phase=s.phase,
            policy=s.policy,
            champion=s.champion,
            connected=s.connected,
            stored=counts.windows,
            labeled=counts.labeled,
            by_machine=counts.by_machine,
            by_class=counts.by_class,
            by_reason=counts.by_reason,
            batches=s.batches,
            duplicates=s.duplicates,
            bad_batches=s.bad_batches,
            pis=s.pis,
            last_gate=None if gate is None else gate.to_json_obj(),
            history=self.store.model_history(8),
            classes=(
                self.loop.champion.manifest.classes if self.loop.champion else self.kind.classes
            ),
        )

    def status(self) -> Status:
        """The trainer's retained status: counts, error kinds, phase, skipped bundles."""
        s = self.state
        counts = self.store.counts()
        errors = {
            "bad_batch": s.bad_batches,
            "batch_sender_refused": s.batches_refused,
            "legacy_batch_topic": s.legacy_batches,
            "store_failed": s.store_errors,
            "intake_crashed": s.intake_crashes,
            "publish_refused": s.publish_refused,
            "bad_bundle": len(s.skipped_bundles),
            "store_rejected": counts.rejected,
            "class_refused": self.classes.refused,  # labels of a class the type may not add
            "store_foreign": counts.foreign,
            "store_bad_rows": counts.bad_rows,
            "store_moved_aside": len(counts.moved_aside),
            "bad_rollback_entry": self.history.bad_entries(),
            "rollback_refused": self.history.refused_rollbacks(),
            "status_refused": s.statuses_refused,
            "status_dropped": s.statuses_dropped,
            "bad_status": s.bad_statuses,
            "bad_status_detail": self.rollout.bad_details,
            **{f"fault:{kind}": n for kind, n in self.faults.counts().items()},
        }
        detail: dict[str, Any] = {  # the typed parts: protocol.status_detail
            "v": DETAIL_VERSION,
            TrainerPhase.KEY: TrainerPhase(s.stage.text()).to_json_obj(),
            TrainerStage.KEY: s.stage.to_json_obj(),  # the console acts on this, not the text
            "policy": s.policy,
        }
        gate = _gate(s)
        if gate is not None:  # the console's timeline shows both scores of each decision
            detail[GateDetail.KEY] = gate.to_json_obj()
        if s.skipped_bundles:
            detail["skipped_bundles"] = list(s.skipped_bundles)
        if counts.moved_aside:  # kept training data an operator should look at
            detail["store_moved_aside"] = list(counts.moved_aside[-5:])
        if self.dead_threads:
            detail["dead_threads"] = list(self.dead_threads)
        bad_models = sorted(self.history.bad_versions())
        if bad_models:  # rolled back by a node, never offered again (`models` lists why)
            detail["bad_models"] = bad_models[-32:]
        rollout = self.rollout.detail()
        if rollout is not None:  # --canary-groups: the staged rollout's state
            detail[RolloutDetail.KEY] = rollout
        return Status(
            node=self.config.client_id,
            role=ROLE,
            state=DEGRADED if self.dead_threads else "online",
            software_version=_version(),
            model_version=s.champion,
            timestamp=time.time(),
            metrics={
                "stored_windows": counts.windows,
                "stored_labeled": counts.labeled,
                "batches": s.batches,
                "duplicates": s.duplicates,
                "batch_acks": s.acks,
                "uptime_s": round(time.monotonic() - s.started, 1),
                **self._proc.metrics(),
            },
            errors={k: v for k, v in errors.items() if v},
            detail=detail,
        )

    def _publish_status(self) -> None:
        topic = self.topics.status(self.config.client_id)
        self.client.publish(topic, self.status().to_json(), qos=1, retain=True)

    def _offline(self) -> bytes:
        return Status.offline(self.config.client_id, ROLE, _version()).to_json()


def _gate(s: DaemonState) -> GateDetail | None:
    """The last gate decision with both models' scores (status detail `last_gate`), or None.

    A score on no data (no original holdout without --data) is NaN here and None (null) in the
    status, which a strict JSON reader could not read otherwise."""
    if s.last_attempt is None:
        return None
    last = s.last_attempt
    d = last.decision
    return GateDetail(
        accepted=d.accepted,
        reason=clip_text(d.reason),
        labels_used=last.labels_used,
        seconds=last.seconds,
        holdout=last.holdout,
        champion_drift=finite_or_none(d.champion.drift),
        challenger_drift=finite_or_none(d.challenger.drift),
        champion_original=finite_or_none(d.champion.original),
        challenger_original=finite_or_none(d.challenger.original),
    )


def _version() -> str:
    return str(__version__)
