"""The running node: MQTT in, micro-batched inference, predictions and status out, model hot-swap.

Threads and what each may do:

    paho network thread   decode a window and Inbox.put it (never blocks); stash a bundle's
                          bytes for the model thread; publish status on (re)connect
    worker                Inbox.get_batch → swap in a vetted model if one is pending (so a swap
                          falls between two batches) → one invoke per batch → the batch's
                          predictions to paho's thread in one hand-over (`publish_many`)
    model thread          vet bundles (signature, compatibility, golden vectors), persist the
                          good ones, hand them to the worker
    status thread         publish the retained status every `status_interval_s`, notice an
                          on-disk rollback

The closed loop (drift verdicts, kept windows, their shipping, prediction history) lives in
`Evidence`; the worker only calls it once per batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from protocol import (
    CLASSES,
    PayloadError,
    Status,
    Window,
    decode_any,
)
from protocol.messages import prediction_json
from protocol.mqtt import connect, make_client, publish_many

from . import __version__
from .batching import BatchPolicy, Inbox
from .config import EdgeConfig
from .dashboard import MachineRow, Snapshot
from .drift import DriftConfig, DriftState
from .errors import EdgeError, ModelError
from .evidence import Evidence, EvidenceConfig
from .models import Expected, ModelStore, VettedModel, _version_of, vet_bundle
from .stats import KindCounter, LatencyWindow, RateMeter

log = logging.getLogger(__name__)

ROLE = "edge"
_STATE_LABELS = tuple(state.label for state in DriftState)
_NOT_PAYLOAD = frozenset({"publish_failed", "inference_failed"})  # error kinds that aren't input


@dataclass(frozen=True, slots=True)
class _Item:
    window: Window
    received_ns: int


class _MachineStats:
    __slots__ = ("confidence", "last_class", "last_seen", "latency", "rate", "windows")

    def __init__(self) -> None:
        self.last_class = "-"
        self.confidence = 0.0
        self.rate = RateMeter(5)
        self.latency = LatencyWindow(512)
        self.last_seen = 0.0
        self.windows = 0


class EdgeService:
    """One pi_edge node. `start()`, then `stop()`; `snapshot()`/`status()` from any thread."""

    def __init__(self, config: EdgeConfig, *, public_key: bytes | None) -> None:
        self.config = config
        self.topics = config.topics
        self.public_key = public_key
        self.policy = BatchPolicy(
            config.batch_max, config.batch_wait_ms / 1000.0, config.batch_wait_above_per_s
        )
        self.expected = Expected(config.classes, config.channels, config.window_length)
        self.store = ModelStore(config.state_dir)
        self.inbox: Inbox[_Item] = Inbox(config.queue_size)
        self._input_shape = (config.window_length, len(config.channels))
        self._stop = threading.Event()
        self._lock = threading.Lock()  # guards the stats and error counters below
        self._errors = KindCounter(config.log_interval_s)
        self._rate = RateMeter(5)
        self._latency = LatencyWindow(2048)
        self._machines: dict[str, _MachineStats] = {}
        self._classified = 0
        self._batches = 0
        self._topics_by_machine: dict[str, str] = {}
        self._started = time.monotonic()
        # model state: _model is owned by the worker; _pending is the hand-over slot
        self._model: VettedModel | None = None
        self._model_installed = 0.0
        self._model_source = ""
        self._pending: VettedModel | None = None
        self._pending_source = ""
        self._target_version: int | None = None
        self._last_model_error: str | None = None
        self._last_model_error_at: float | None = None
        self._bundles: deque[tuple[bytes, str]] = deque(maxlen=1)
        self._bundle_cond = threading.Condition()
        self._disk_stamp: int | None = None
        self._model_ready = threading.Event()
        self._swapped = threading.Condition()
        self.broker_state = "not started"
        self.evidence = Evidence(
            EvidenceConfig(
                state_dir=config.state_dir,
                broker=config.broker,
                node=config.node,
                topics=self.topics,
                drift=DriftConfig(confidence_floor=config.low_confidence),
                buffer_max_rows=config.buffer_max_rows,
                flagged_per_machine_s=config.keep_flagged_per_s,
            )
        )
        self._client: Any = None
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> EdgeService:
        """Load the startup model, connect in the background and start the threads."""
        self._load_startup_model()
        will = Status.offline(self.config.node, ROLE, __version__).to_json()
        client = make_client(
            self.config.node, will_topic=self.topics.status(self.config.node), will_payload=will
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client
        for name, target in (
            ("edge-worker", self._worker),
            ("edge-models", self._model_loop),
            ("edge-status", self._status_loop),
        ):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        self.broker_state = "connecting"
        self.evidence.start()
        try:
            connect(client, self.config.broker)
        except ValueError as exc:
            raise EdgeError(f"broker address: {exc}") from exc
        client.loop_start()
        log.info(
            "pi_edge %s node %s connecting to %s", __version__, self.config.node, self.config.broker
        )
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Publish a retained offline status, disconnect, join the threads."""
        self._stop.set()
        self.inbox.wake()
        with self._bundle_cond:
            self._bundle_cond.notify_all()
        client = self._client
        if client is not None:
            if self.broker_state == "connected":
                info = client.publish(
                    self.topics.status(self.config.node),
                    Status.offline(self.config.node, ROLE, __version__).to_json(),
                    qos=1,
                    retain=True,
                )
                try:
                    info.wait_for_publish(timeout=2.0)
                except (RuntimeError, ValueError):
                    log.warning("could not publish the offline status before disconnecting")
            client.disconnect()
            client.loop_stop()
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()
        self.evidence.stop()

    def __enter__(self) -> EdgeService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ models
    @property
    def model_version(self) -> int | None:
        model = self._model
        return None if model is None else model.version

    def wait_for_model(self, version: int | None = None, timeout: float = 10.0) -> bool:
        """Block until a model (of `version`, if given) is serving; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._swapped:
            while True:
                v = self.model_version
                if v is not None and (version is None or v == version):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._swapped.wait(left)

    def _vet(self, data: bytes) -> VettedModel:
        return vet_bundle(
            data,
            public_key=self.public_key,
            allow_unsigned=self.config.insecure_dev,
            expected=self.expected,
            threads=self.config.threads,
            policy=self.policy,
        )

    def _load_startup_model(self) -> None:
        """Last good from the state dir, else --model, else wait for the retained bundle."""
        for name, data in self.store.candidates():
            try:
                vetted = self._vet(data)
            except ModelError as exc:
                self._refused(exc, f"state dir {name}")
                continue
            self._install(vetted, f"state dir ({name})")
            self._disk_stamp = self.store.current_stamp()
            return
        if self.config.model is not None:
            try:
                data = self.config.model.read_bytes()
            except OSError as exc:
                raise EdgeError(f"cannot read --model {self.config.model}: {exc}") from exc
            try:
                vetted = self._vet(data)
            except ModelError as exc:
                self._refused(exc, f"--model {self.config.model}")
            else:
                self._persist(vetted)
                self._install(vetted, f"--model {self.config.model}")
                return
        log.info(
            "no usable model on disk; waiting for the retained bundle on %s",
            self.topics.model_current,
        )

    def _install(self, vetted: VettedModel, source: str) -> None:
        """Make `vetted` the serving model. Called by the worker between batches (or at start)."""
        old = self._model
        self._model = vetted
        self.evidence.model_changed(vetted.bundle.manifest)
        self._model_installed = time.monotonic()
        self._model_source = source
        with self._swapped:
            self._swapped.notify_all()
        self._model_ready.set()
        log.info(
            "serving model v%d from %s%s (runtime %s)",
            vetted.version,
            source,
            "" if old is None else f", replacing v{old.version}",
            vetted.classifier.runtime,
        )

    def _persist(self, vetted: VettedModel) -> None:
        try:
            self.store.save(vetted.bundle)
            self._disk_stamp = self.store.current_stamp()
        except (OSError, EdgeError) as exc:
            log.error(
                "model v%d is serving but could not be saved as last good: %s", vetted.version, exc
            )

    def _refused(self, exc: ModelError, source: str) -> None:
        reason = f"{source}: {exc.kind}: {exc}"
        now = time.monotonic()
        with self._lock:
            self._last_model_error = reason
            self._last_model_error_at = time.time()
            self._errors.count(f"bundle_{exc.kind}", now)
        log.error(
            "refused model bundle from %s (%s): %s; still serving %s",
            source,
            exc.kind,
            exc,
            "nothing" if self.model_version is None else f"v{self.model_version}",
        )

    def submit_bundle(self, data: bytes, source: str = "mqtt") -> None:
        """Queue a bundle for vetting (latest wins); never blocks."""
        with self._bundle_cond:
            self._bundles.append((bytes(data), source))
            self._bundle_cond.notify()

    def _model_loop(self) -> None:
        while not self._stop.is_set():
            with self._bundle_cond:
                while not self._bundles and not self._stop.is_set():
                    self._bundle_cond.wait(0.5)
                if self._stop.is_set():
                    return
                data, source = self._bundles.popleft()
            self._handle_bundle(data, source)

    def _handle_bundle(self, data: bytes, source: str) -> None:
        peek = _version_of(data)
        current = self._target_version if self._target_version is not None else self.model_version
        if peek is not None and peek == current:
            log.debug("bundle v%d from %s is already serving; ignored", peek, source)
            return
        from_disk = source == "rollback"
        if peek is not None and not from_disk and peek in self.store.blocked():
            log.info(
                "bundle v%d from %s ignored: an operator rolled back from it (a newer "
                "version will be accepted)",
                peek,
                source,
            )
            return
        try:
            vetted = self._vet(data)
        except ModelError as exc:
            self._refused(exc, source)
            return
        if not from_disk:
            self._persist(vetted)
        else:
            self._disk_stamp = self.store.current_stamp()
        self._target_version = vetted.version
        with self._lock:
            self._pending = vetted
            self._pending_source = source
        self.inbox.wake()

    # ------------------------------------------------------------------ MQTT callbacks
    def _on_connect(
        self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any = None
    ) -> None:
        if getattr(reason_code, "is_failure", False):
            self.broker_state = f"refused ({reason_code})"
            log.error("broker %s refused the connection: %s", self.config.broker, reason_code)
            return
        self.broker_state = "connected"
        subs = [(self.topics.windows(m, self.config.shared_group), 0) for m in self.config.machines]
        subs.append((self.topics.model_current, 1))
        client.subscribe(subs)
        self._publish_status()
        log.info(
            "connected to %s; subscribed to %s", self.config.broker, ", ".join(t for t, _ in subs)
        )

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any = None
    ) -> None:
        if self._stop.is_set():
            self.broker_state = "disconnected"
            return
        self.broker_state = "reconnecting"
        log.warning(
            "lost the broker %s (%s); reconnecting with backoff, still serving %s",
            self.config.broker,
            reason_code,
            "nothing" if self.model_version is None else f"v{self.model_version}",
        )

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        received_ns = time.time_ns()
        topic = msg.topic
        if topic == self.topics.model_current:
            if msg.payload:
                self.submit_bundle(msg.payload, "mqtt")
            return
        machine = self.topics.machine_of(topic)
        try:
            if machine is None:
                raise PayloadError(f"topic {topic!r} is not a machine window topic", "bad_topic")
            window = decode_any(msg.payload, machine, self._input_shape)
        except PayloadError as exc:
            self._bad_payload(exc, topic)
            return
        self.inbox.put(_Item(window, received_ns))

    def _bad_payload(self, exc: PayloadError, topic: str) -> None:
        with self._lock:
            should_log = self._errors.count(exc.kind, time.monotonic())
            more = self._errors.suppressed(exc.kind)
        if should_log:
            log.warning(
                "dropped a bad window on %s (%s): %s%s",
                topic,
                exc.kind,
                exc,
                f" [{more} more not logged]" if more else "",
            )

    # ------------------------------------------------------------------ inference
    def _worker(self) -> None:
        while not self._stop.is_set():
            if self._model is None and self._pending is None:
                self._model_ready.wait(0.2)
                continue
            batch = self.inbox.get_batch(self.policy, timeout=0.2)
            with self._lock:
                pending, self._pending = self._pending, None
            if pending is not None:
                self._install(pending, self._pending_source)
            if batch:
                self._classify(batch)

    def _classify(self, batch: list[_Item]) -> None:
        model = self._model
        assert model is not None
        start_ns = time.time_ns()
        x = np.stack([item.window.data for item in batch])
        try:
            probs = model.classifier.predict(x)
        except (RuntimeError, ValueError, ModelError) as exc:
            # the interpreter failed on this batch: count it, keep the worker alive
            with self._lock:
                should_log = self._errors.count("inference_failed", time.monotonic(), len(batch))
            if should_log:
                log.error(
                    "inference failed on a batch of %d with model v%d: %s",
                    len(batch),
                    model.version,
                    exc,
                )
            return
        inferred_ns = time.time_ns()
        classes = model.bundle.manifest.classes
        version = model.version
        top = probs.argmax(axis=1)
        windows = [item.window for item in batch]
        verdicts = self.evidence.observe(windows, x, probs)
        self.evidence.keep(windows, verdicts, top)  # durable before anything is published
        n = len(batch)
        received = np.fromiter((item.received_ns for item in batch), np.int64, n)
        sensor = np.fromiter((w.timestamp_ns for w in windows), np.int64, n)
        published_ns = time.time_ns()  # the whole batch goes to paho in one hand-over
        origin = np.where(sensor > 0, sensor, received)
        totals = np.round((published_ns - origin) / 1e6, 3).tolist()
        queued = np.round((start_ns - received) / 1e6, 3).tolist()
        transport = np.round((received - sensor) / 1e6, 3).tolist()
        inference_ms = round((inferred_ns - start_ns) / 1e6, 3)
        publish_ms = round((published_ns - inferred_ns) / 1e6, 3)
        drift_states = [_STATE_LABELS[v] for v in verdicts.states.tolist()]
        outgoing: list[tuple[str, bytes]] = []
        history = []
        per_window = zip(
            windows,
            received.tolist(),
            probs.tolist(),
            top.tolist(),
            drift_states,
            verdicts.flags.tolist(),
            verdicts.ood_score.tolist(),
            totals,
            queued,
            transport,
            strict=True,
        )
        topic_of = self._prediction_topic
        for (
            w,
            received_ns,
            p,
            k,
            drift,
            flag,
            ood_score,
            total,
            queued_ms,
            transport_ms,
        ) in per_window:
            sensor_ns = w.timestamp_ns
            lat = {
                "queue": queued_ms,
                "inference": inference_ms,
                "publish": publish_ms,
                "total": total,
            }
            if sensor_ns > 0:
                lat["transport"] = transport_ms
            label, conf = classes[k], p[k]
            truth = None if w.label is None else CLASSES[w.label]
            ood = flag == 1
            payload = prediction_json(
                w.machine,
                w.seq,
                label,
                conf,
                p,
                version,
                classes,
                truth,
                drift,
                ood,
                round(ood_score, 3),
                {
                    "sensor": sensor_ns,
                    "received": received_ns,
                    "inferred": inferred_ns,
                    "published": published_ns,
                },
                lat,
            )
            outgoing.append((topic_of(w.machine), payload))
            history.append(
                (
                    published_ns / 1e9,
                    w.machine,
                    w.seq,
                    label,
                    conf,
                    truth,
                    version,
                    drift,
                    ood,
                    total,
                )
            )
        failed = 0 if publish_many(self._client, outgoing) else len(outgoing)
        self.evidence.record(history)
        now = time.monotonic()
        with self._lock:
            self._classified += len(batch)
            self._batches += 1
            self._rate.add(len(batch), now)
            for row in history:
                st = self._machines.get(row[1])
                if st is None:
                    st = self._machines[row[1]] = _MachineStats()
                st.last_class, st.confidence, st.last_seen = row[3], row[4], now
                st.windows += 1
                st.rate.add(1, now)
                st.latency.add(row[9])
            self._latency.extend(totals)
            should_log = failed > 0 and self._errors.count("publish_failed", now, failed)
        if should_log:
            log.warning(
                "dropped %d prediction(s): not connected to %s, or the broker is not reading "
                "them (QoS 0); classification goes on and status counts publish_failed",
                failed,
                self.config.broker,
            )

    def _prediction_topic(self, machine: str) -> str:
        """The prediction topic of `machine`, built (and its id checked) once per machine."""
        topic = self._topics_by_machine.get(machine)
        if topic is None:
            if len(self._topics_by_machine) >= 65536:  # a flood of distinct ids: start over
                self._topics_by_machine.clear()
            topic = self._topics_by_machine[machine] = self.topics.prediction(machine)
        return topic

    # ------------------------------------------------------------------ status
    def _status_loop(self) -> None:
        while not self._stop.wait(self.config.status_interval_s):
            stamp = self.store.current_stamp()
            if stamp is not None and stamp != self._disk_stamp:
                self._disk_stamp = stamp
                try:
                    data = self.store.current_path.read_bytes()
                except OSError:
                    data = b""
                if data:
                    log.info("current.bundle changed on disk (rollback?); loading it")
                    self.submit_bundle(data, "rollback")
            if self.broker_state == "connected":
                self._publish_status()

    def _publish_status(self) -> None:
        client = self._client
        if client is None:
            return
        client.publish(
            self.topics.status(self.config.node), self.status().to_json(), qos=1, retain=True
        )

    def status(self) -> Status:
        now = time.monotonic()
        model = self._model
        with self._lock:
            p50, p99 = self._latency.percentiles()
            metrics = {
                "windows_per_s": self._rate.rate(now),
                "classified": float(self._classified),
                "mean_batch": round(self._classified / self._batches, 2) if self._batches else 0.0,
                "queue_depth": float(len(self.inbox)),
                "queue_capacity": float(self.inbox.capacity),
                "drops": float(self.inbox.dropped),
                "uptime_s": round(now - self._started, 1),
                "latency_p50_ms": p50,
                "latency_p99_ms": p99,
            }
            errors = self._errors.as_dict()
            last_error, last_error_at = self._last_model_error, self._last_model_error_at
        detail: dict[str, Any] = {
            "broker": self.broker_state,
            "runtime": model.classifier.runtime if model else None,
            "interpreter_reallocations": model.classifier.reallocations if model else None,
            "model_source": self._model_source or None,
            "model_age_s": None if model is None else round(now - self._model_installed, 1),
            "model_created": None if model is None else model.bundle.manifest.created,
            "last_model_error": last_error,
            "last_model_error_at": last_error_at,
            "machines": sorted(self._machines),
            **self.evidence.snapshot(),
        }
        return Status(
            node=self.config.node,
            role=ROLE,
            state="online",
            software_version=__version__,
            model_version=self.model_version,
            timestamp=time.time(),
            metrics=metrics,
            errors=errors,
            drift=self.evidence.overall(),
            detail=detail,
        )

    def snapshot(self) -> Snapshot:
        now = time.monotonic()
        model = self._model
        drift = self.evidence.machine_states()
        with self._lock:
            rows = []
            for name, st in sorted(self._machines.items()):
                p50, p99 = st.latency.percentiles()
                rows.append(
                    MachineRow(
                        name,
                        st.last_class,
                        st.confidence,
                        st.rate.rate(now),
                        p50,
                        p99,
                        now - st.last_seen,
                        st.windows,
                        drift.get(name, "ok"),
                    )
                )
            bad = {
                k: v
                for k, v in self._errors.as_dict().items()
                if not k.startswith("bundle_") and k not in _NOT_PAYLOAD
            }
            rate = self._rate.rate(now)
            last_error = self._last_model_error
        return Snapshot(
            node=self.config.node,
            model_version=None if model is None else model.version,
            model_age_s=None if model is None else now - self._model_installed,
            broker_state=self.broker_state,
            queue_depth=len(self.inbox),
            queue_capacity=self.inbox.capacity,
            drops=self.inbox.dropped,
            windows_per_s=rate,
            bad_payloads=bad,
            machines=tuple(rows),
            last_model_error=last_error,
            low_confidence=self.config.low_confidence,
            drift=self.evidence.overall(),
            evidence=self.evidence.snapshot(),
        )
