"""`python -m jetson_trainer serve`: the trainer daemon that closes the loop.

It keeps a persistent MQTT session (fixed client id, no clean start) with a QoS 1 subscription to
`…/drift/batches` and acknowledges each batch by hand only after the store committed it. It
publishes the champion model retained (training an initial one from --data if it has none),
watches the Pis' status and the stored labels through `TrainPolicy`, and fine-tunes, gates,
signs and publishes a challenger when the policy says so.

Threads: paho's network thread only enqueues; an intake thread decodes and stores batches and
then acknowledges them; the main loop evaluates the policy and runs fine-tunes.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from protocol import EdgeloopError, PayloadError, Status, Topics, decode_batch, decode_bundle
from protocol.mqtt import connect, make_client

from .dashboard import TrainerSnapshot
from .errors import TrainerError
from .policy import Observation, PolicyConfig, TrainPolicy
from .retrain import Attempt, Champion, RetrainConfig, accuracy, retrain
from .store import WindowStore

log = logging.getLogger(__name__)
ROLE = "trainer"
SESSION_EXPIRY_S = 7 * 24 * 3600
MAX_LATE_LABELS = 500  # labels that arrived during a fine-tune, added to the gate's holdout


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """Daemon settings; every field has a CLI flag (see `python -m jetson_trainer serve -h`)."""

    broker: str
    store: Path
    private_key: Path
    data: Path | None = None
    models: Path | None = None
    prefix: str = "edgeloop/v1"
    client_id: str = "edgeloop-trainer"
    initial_epochs: int = 40
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    tick_s: float = 1.0

    def __post_init__(self) -> None:
        if self.tick_s <= 0 or self.initial_epochs < 1:
            raise ValueError("serve needs tick_s > 0 and initial_epochs ≥ 1")

    @property
    def models_dir(self) -> Path:
        return self.models or self.store / "models"


@dataclass(slots=True)
class DaemonState:
    """What the dashboard shows; written by the daemon threads, read as a snapshot."""

    phase: str = "starting"
    policy: str = ""
    champion: int | None = None
    connected: bool = False
    batches: int = 0
    duplicates: int = 0
    bad_batches: int = 0
    store_errors: int = 0
    last_attempt: Attempt | None = None
    pis: dict[str, dict[str, Any]] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)


class TrainerDaemon:
    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.topics = Topics(config.prefix)
        self.state = DaemonState()
        self.store = WindowStore(config.store / "windows.sqlite")
        self.policy = TrainPolicy(config.policy)
        self.champion: Champion | None = None
        self._inbox: queue.SimpleQueue[tuple[str, int, int, bytes]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._public_key: bytes | None = None
        self._champion_since = 0  # store position when the champion was published
        self._replay: tuple[np.ndarray, np.ndarray] | None = None
        self._original: tuple[np.ndarray, np.ndarray] | None = None
        self.client = make_client(
            config.client_id,
            will_topic=self.topics.status(config.client_id),
            will_payload=Status.offline(config.client_id, ROLE, _version()).to_json(),
            manual_ack=True,
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self._intake = threading.Thread(
            target=self._intake_loop, name="trainer-intake", daemon=True
        )

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> TrainerDaemon:
        from .keys import load_private_key

        key = load_private_key(self.config.private_key)
        from cryptography.hazmat.primitives import serialization

        self._public_key = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self._load_data()
        self.champion = self._load_champion() or self._train_initial()
        self.state.champion = self.champion.version if self.champion else None
        self._intake.start()
        connect(
            self.client, self.config.broker, clean_start=False, session_expiry_s=SESSION_EXPIRY_S
        )
        self.client.loop_start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._inbox.put(("stop", 0, 0, b""))
        self._intake.join(timeout=5)
        offline = Status.offline(self.config.client_id, ROLE, _version()).to_json()
        info = self.client.publish(
            self.topics.status(self.config.client_id), offline, qos=1, retain=True
        )
        if self.client.is_connected():
            info.wait_for_publish(2)
        self.client.disconnect()
        self.client.loop_stop()
        self.store.close()

    def run_forever(self) -> None:
        """The policy loop; returns when stop() is called from another thread or signal."""
        next_status = 0.0
        while not self._stop.is_set():
            try:
                self.tick()
            except (EdgeloopError, ValueError, RuntimeError, OSError, sqlite3.Error) as exc:
                # one failed fine-tune (Keras, converter, disk) must not end the daemon's loop
                log.exception("fine-tune failed: %s; the champion keeps serving", exc)
                self.state.phase = "idle"
                self.policy.attempted(accepted=False)
            if time.monotonic() >= next_status:
                self._publish_status()
                next_status = time.monotonic() + 2.0
            self._stop.wait(self.config.tick_s)

    # -- data and models -----------------------------------------------------------------
    def _load_data(self) -> None:
        data = self.config.data
        if data is None:
            log.warning("no --data: fine-tunes run without replay and gate on drift data only")
            return
        x = np.load(data / "train_data.npy")
        y = np.load(data / "train_labels.npy")
        self._replay = (x, y)
        if (data / "infer_data.npy").exists():
            self._original = (np.load(data / "infer_data.npy"), np.load(data / "infer_labels.npy"))
        else:
            cut = int(len(y) * 0.8)
            self._replay, self._original = (x[:cut], y[:cut]), (x[cut:], y[cut:])

    def _load_champion(self) -> Champion | None:
        """The newest bundle under the models dir whose signature verifies."""
        import keras

        candidates = sorted(self.config.models_dir.glob("v*/model.bundle"), reverse=True)
        for path in candidates:
            try:
                bundle = decode_bundle(path.read_bytes(), self._public_key)
                model = keras.models.load_model(path.parent / "model.keras")
            except (OSError, ValueError, PayloadError, TrainerError) as exc:
                log.warning("skipping %s: %s", path, exc)
                continue
            log.info("champion: v%d from %s", bundle.manifest.version, path)
            return Champion(
                bundle.manifest.version, bundle.raw, bundle.model, bundle.manifest, model, path
            )
        return None

    def _train_initial(self) -> Champion | None:
        if self._replay is None or self.config.data is None:
            log.error("no model in %s and no --data to train one; waiting", self.config.models_dir)
            return None
        from .pipeline import run_train

        self.state.phase = "training initial model"
        x, y = (
            np.load(self.config.data / "train_data.npy"),
            np.load(self.config.data / "train_labels.npy"),
        )
        run_train(
            x,
            y,
            self.config.models_dir / "v0001",
            epochs=self.config.initial_epochs,
            private_key=self.config.private_key,
            figures=False,
            verbose=0,
            time_repeats=10,
            quantizations=("int8",),
        )
        self.state.phase = "idle"
        return self._load_champion()

    def _publish_champion(self) -> None:
        if self.champion is None:
            return
        self.client.publish(self.topics.model_current, self.champion.bundle, qos=1, retain=True)
        log.info(
            "publishing model v%d retained on %s (%d bytes)",
            self.champion.version,
            self.topics.model_current,
            len(self.champion.bundle),
        )

    # -- paho callbacks: enqueue only ----------------------------------------------------
    def _on_connect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any = None
    ) -> None:
        if getattr(reason, "is_failure", False):
            log.error("broker refused the trainer: %s", reason)
            return
        self.state.connected = True
        client.subscribe([(self.topics.drift_batches, 1), (self.topics.statuses(), 1)])
        self._inbox.put(("connected", 0, 0, b""))

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any = None
    ) -> None:
        self.state.connected = False
        log.warning("disconnected from %s (%s); paho reconnects", self.config.broker, reason)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        self._inbox.put((msg.topic, msg.mid, msg.qos, msg.payload))

    # -- intake thread ---------------------------------------------------------------------
    def _intake_loop(self) -> None:
        while not self._stop.is_set():
            topic, mid, qos, payload = self._inbox.get()
            if topic == "stop":
                return
            if topic == "connected":
                self._publish_status()
                self._publish_champion()
                continue
            if topic == self.topics.drift_batches:
                if not self._store_with_retry(payload):
                    return  # stopping: unacknowledged, the broker resends it next session
            else:
                self._note_status(payload)
            if qos > 0:
                self.client.ack(mid, qos)  # only now: the batch is committed (or worthless)

    def _store_with_retry(self, payload: bytes, first_delay_s: float = 0.5) -> bool:
        """Store a drift batch, retrying with backoff (≤ 30 s) while the store fails.

        The batch stays unacknowledged meanwhile, so nothing is lost and the broker stops
        sending more once its in-flight window is full. False only if the daemon stops first.
        """
        delay = first_delay_s
        while True:
            try:
                self._store_batch(payload)
                return True
            except sqlite3.Error as exc:
                self.state.store_errors += 1
                log.error(
                    "could not store a drift batch (%s); it stays unacknowledged and is retried "
                    "in %.1f s; check free space and permissions of %s",
                    exc,
                    delay,
                    self.config.store,
                )
            if self._stop.wait(delay):
                return False
            delay = min(delay * 2, 30.0)

    def _store_batch(self, payload: bytes) -> None:
        try:
            batch = decode_batch(payload)
        except PayloadError as exc:
            self.state.bad_batches += 1
            log.warning("dropped a malformed drift batch (%s): %s", exc.kind, exc)
            return
        added, duplicates = self.store.add_batch(batch)
        self.state.batches += 1
        self.state.duplicates += duplicates
        log.debug("stored batch from %s: %d new, %d duplicate", batch.node, added, duplicates)

    def _note_status(self, payload: bytes) -> None:
        try:
            status = Status.from_json(payload)
        except PayloadError:
            return
        if status.role == "edge":
            self.state.pis[status.node] = {
                "state": status.state,
                "drift": status.drift,
                "model": status.model_version,
            }

    # -- policy loop ---------------------------------------------------------------------
    def observation(self) -> Observation:
        champion = self.champion
        recent_accuracy = None
        if champion is not None:
            x, y, _ = self.store.recent_labeled(
                self.config.policy.check_labels, after=self._champion_since
            )
            if len(y) >= self.config.policy.check_labels:
                recent_accuracy = accuracy(champion.model, champion.norm, x, y)
        pi_drift = any(
            p["state"] == "online"
            and p["drift"] == "drift"
            and champion is not None
            and p["model"] == champion.version
            for p in list(self.state.pis.values())  # the intake thread adds nodes
        )
        after = self.policy.labels_after if self.policy.collecting else 0
        return Observation(
            self.store.latest_labeled_seqno(),
            self.store.labeled_after(after),
            recent_accuracy,
            pi_drift,
        )

    def tick(self) -> None:
        if self.champion is None:
            self.state.policy = "no champion model"
            return
        decision = self.policy.update(self.observation())
        self.state.policy = decision
        if decision != "train":
            return
        x, y, last = self.store.recent_labeled(
            self.config.policy.labels_needed, after=self.policy.labels_after
        )
        self.state.phase = f"fine-tuning v{self.champion.version} on {len(y)} labels"
        replay = self._replay or (x[:0], y[:0])
        original = self._original or (x[:0], y[:0])
        try:
            attempt = retrain(
                self.champion,
                x,
                y,
                replay=replay,
                original_holdout=original,
                out_dir=self.config.models_dir,
                private_key=self.config.private_key,
                config=self.config.retrain,
                late_labels=lambda: self.store.recent_labeled(MAX_LATE_LABELS, after=last)[:2],
            )
        finally:
            self.state.phase = "idle"
        self.state.last_attempt = attempt
        d = attempt.decision
        self.store.record_model(
            self.champion.version + 1,
            self.champion.version,
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
        if attempt.challenger is not None:
            self.champion = attempt.challenger
            self.state.champion = self.champion.version
            self._champion_since = last
            self.policy.model_changed()
            self._publish_champion()

    def snapshot(self) -> TrainerSnapshot:
        counts = self.store.counts()
        last = self.state.last_attempt
        gate = None
        if last is not None:
            d = last.decision
            gate = {
                "accepted": d.accepted,
                "reason": d.reason,
                "labels_used": last.labels_used,
                "seconds": last.seconds,
                "holdout": last.holdout,
                "champion_drift": d.champion.drift,
                "challenger_drift": d.challenger.drift,
                "champion_original": d.champion.original,
                "challenger_original": d.challenger.original,
            }
        return TrainerSnapshot(
            phase=self.state.phase,
            policy=self.state.policy,
            champion=self.state.champion,
            connected=self.state.connected,
            stored=counts.windows,
            labeled=counts.labeled,
            by_machine=counts.by_machine,
            by_class=counts.by_class,
            by_reason=counts.by_reason,
            batches=self.state.batches,
            duplicates=self.state.duplicates,
            bad_batches=self.state.bad_batches,
            pis=dict(self.state.pis),
            last_gate=gate,
            history=self.store.model_history(8),
        )

    def _publish_status(self) -> None:
        counts = self.store.counts()
        status = Status(
            node=self.config.client_id,
            role=ROLE,
            state="online",
            software_version=_version(),
            model_version=self.state.champion,
            timestamp=time.time(),
            metrics={
                "stored_windows": counts.windows,
                "stored_labeled": counts.labeled,
                "batches": self.state.batches,
                "duplicates": self.state.duplicates,
                "uptime_s": round(time.monotonic() - self.state.started, 1),
            },
            errors={
                k: v
                for k, v in (
                    ("bad_batch", self.state.bad_batches),
                    ("store_failed", self.state.store_errors),
                )
                if v
            },
            detail={"phase": self.state.phase, "policy": self.state.policy},
        )
        self.client.publish(
            self.topics.status(self.config.client_id), status.to_json(), qos=1, retain=True
        )


def _version() -> str:
    from . import __version__

    return str(__version__)
