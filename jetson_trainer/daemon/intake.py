"""The daemon's intake: a persistent MQTT session that stores drift batches before acking them.

The session has a fixed client id and no clean start, with QoS 1 subscriptions to every
node's `…/drift/batches/{node}` (and the legacy shared `…/drift/batches`) and the nodes'
statuses. paho's network thread only enqueues, batches and
statuses on two separate queues, each with its own thread, so that a flood of statuses never
delays a batch. The intake thread decodes and stores each batch, retrying a failing store with
backoff meanwhile. Once
the store committed a batch (all duplicates counts), it tells the Pi that sent it — a
`protocol.batch_ack.BatchAck` at QoS 1 on `…/drift/acks/<node>`, on which the Pi deletes the
batch's windows — and only then acknowledges the batch to the broker. So a batch is never lost
between the Pi, the broker and the disk, even when the broker crashes before saving its queues.
A malformed batch is acknowledged to the broker but not to the Pi (whose windows then stay
where they are).

A batch counts only from its node's own topic: the payload's node must be the topic's (the
broker's ACL lets a node write only its own batch topic), else it is refused unacknowledged to
the Pi and counted (`batches_refused`). A batch on the legacy shared topic (a node of before
per-node batch topics, on an open broker) is taken by its payload's node and counted
(`legacy_batches`): its sender cannot be checked, which the log says once.

The status thread notes what the Pis report. A status is taken only from its node's own topic
(the payload's node must be the topic's) with the role that node was first heard with
(`daemon/senders.py`); only an `edge` status reaches the model registry and the staged rollout.
Refused statuses are counted (`statuses_refused`) and logged once per reason. Its queue is
bounded: when full, the oldest waiting status is dropped (acknowledged, counted
`statuses_dropped`) — a status is advice, and the node's next one says the same.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from nodekit.errors import StorageError
from nodekit.guard import Faults, guard_client, paho_thread_alive
from nodekit.lifecycle import Loop, Worker
from nodekit.mqtt import ConnectionWatch, Credentials, connect, make_client, start_loop
from protocol import PayloadError, Status, Topics, decode_batch
from protocol.batch_ack import BatchAck
from protocol.machine_type import DEFAULT_TYPE, MachineType

from .class_table import ClassTable
from .senders import StatusSenders
from .store import WindowStore

if TYPE_CHECKING:
    from nodekit.guard import ThreadWatch
    from nodekit.mqtt import Client, ConnectFlags, DisconnectFlags, Message, Properties, ReasonCode


__all__ = ["INBOX_MAX", "SESSION_EXPIRY_S", "Intake", "IntakeCounts"]

log = logging.getLogger(__name__)
SESSION_EXPIRY_S = 7 * 24 * 3600
MAX_PIS = 1024  # edge nodes whose last status is kept (the least recently heard go first)
INBOX_MAX = 1000  # the broker's in-flight window bounds it in practice: batches wait for acks
STATUS_INBOX_MAX = 1000  # statuses waiting; beyond, the oldest is dropped (and acknowledged)
_STOP = "\x00stop"
_CONNECTED = "\x00connected"


@dataclass(frozen=True, slots=True)
class IntakeCounts:
    """One consistent reading of the intake's counters and the Pis' last reports."""

    connected: bool = False
    batches: int = 0
    windows: int = 0  # windows stored (new, not duplicates)
    duplicates: int = 0
    bad_batches: int = 0
    store_errors: int = 0
    crashes: int = 0
    acks: int = 0  # batch acknowledgements published to the Pis
    publish_refused: int = 0  # PUBACKs with a failure reason code (the ACL said no)
    other_type: int = 0  # batches of another machine type: left for that type's trainer
    batches_refused: int = 0  # the payload's node is not the batch topic's: not stored
    legacy_batches: int = 0  # taken from the legacy shared topic (sender unchecked)
    statuses: int = 0  # statuses taken (any role)
    bad_statuses: int = 0  # statuses that did not parse
    statuses_refused: int = 0  # not from their node's own topic, or a role the node did not have
    statuses_dropped: int = 0  # dropped unread: the status queue was full (a flood)
    pis: dict[str, dict[str, Any]] = field(default_factory=dict)


class Intake(Worker):
    """Owns the MQTT session and the intake thread; `counts()` is safe from any thread."""

    def __init__(
        self,
        *,
        broker: str,
        client_id: str,
        topics: Topics,
        store: WindowStore,
        store_dir: Path,
        offline_status: bytes,
        stop: threading.Event,
        on_connected: Callable[[], None],
        faults: Faults | None = None,
        credentials: Credentials | None = None,
        on_status: Callable[[Status], None] | None = None,
        machine_type: MachineType = DEFAULT_TYPE,
        classes: ClassTable | None = None,
    ) -> None:
        super().__init__("trainer-intake")
        self.machine_type = machine_type  # batches of another type are that type's trainer's
        # what the store's labels index: the type's classes and the names batches added
        self.classes = classes if classes is not None else ClassTable(None, machine_type)
        self.broker = broker
        self._on_status = on_status  # called on the intake thread with each edge node's status
        self.credentials = credentials
        self.link: ConnectionWatch | None = None  # set by start(): connected, refused and why
        self.faults = faults or Faults(log)
        self.topics = topics
        self.store = store
        self._store_dir = store_dir
        self._stop = stop  # the daemon's: its stop ends this thread too
        self._on_connected_work = on_connected
        self._lock = threading.Lock()  # guards _counts (replaced whole, never mutated) and _pis
        self._counts = IntakeCounts()
        self._pis: dict[str, dict[str, Any]] = {}
        self._inbox: queue.Queue[tuple[str, int, int, bytes]] = queue.Queue(INBOX_MAX)
        self._statuses: queue.Queue[tuple[str, int, int, bytes]] = queue.Queue(STATUS_INBOX_MAX)
        self._senders = StatusSenders(topics.prefix, own_id=client_id)
        self._refusals_seen: set[str] = set()  # status refusal reasons logged once each
        self._batch_notes: set[str] = set()  # batch refusals logged once each (intake thread)
        self._status_loop = Loop("trainer-status-intake", self._run_statuses, self._wake_statuses)
        self.client = make_client(
            client_id,
            will_topic=topics.status(client_id),
            will_payload=offline_status,
            manual_ack=True,
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self._refusals_logged: set[int] = set()
        guard_client(self.client, self.faults, "trainer-mqtt")

    # -- lifecycle (stop and watch: nodekit.lifecycle.Worker) ------------------------------
    def start(self) -> Self:
        """Start the intake and status threads, then open the persistent session (paho
        reconnects)."""
        super().start()
        self._status_loop.start()
        self.link = connect(
            self.client,
            self.broker,
            credentials=self.credentials,
            clean_start=False,
            session_expiry_s=SESSION_EXPIRY_S,
        )
        start_loop(self.client)
        self._watch_client("trainer-mqtt", lambda: paho_thread_alive(self.client))
        return self

    def watch(self, watch: ThreadWatch) -> None:
        """Both threads (intake and status) and paho's."""
        super().watch(watch)
        self._status_loop.watch(watch)

    def stop(self, timeout: float = 5.0) -> None:
        super().stop(timeout)
        self._status_loop.stop(timeout)

    def _wake(self) -> None:
        """On stop (unacknowledged batches come again next session)."""
        with contextlib.suppress(queue.Full):  # then it sees the stop event after its item
            self._inbox.put((_STOP, 0, 0, b""), timeout=1)

    def _wake_statuses(self) -> None:
        with contextlib.suppress(queue.Full):
            self._statuses.put((_STOP, 0, 0, b""), timeout=1)

    def close(self, last_will: tuple[str, bytes] | None = None) -> None:
        """Publish `(topic, payload)` retained if given, then disconnect."""
        if last_will is not None:
            info = self.client.publish(last_will[0], last_will[1], qos=1, retain=True)
            if self.client.is_connected():
                info.wait_for_publish(2)
        self.client.disconnect()
        self.client.loop_stop()

    def counts(self) -> IntakeCounts:
        """A consistent copy of the counters (the intake and paho threads write them)."""
        with self._lock:
            pis = {node: dict(seen) for node, seen in self._pis.items()}
            return dataclasses.replace(self._counts, pis=pis)

    def _bump(self, **added: int) -> None:
        with self._lock:
            c = self._counts
            self._counts = dataclasses.replace(
                c, **{name: getattr(c, name) + n for name, n in added.items()}
            )

    def _set_connected(self, connected: bool) -> None:
        with self._lock:
            self._counts = dataclasses.replace(self._counts, connected=connected)

    # -- paho callbacks: enqueue only ----------------------------------------------------
    def _on_connect(
        self,
        client: Client,
        userdata: Any,
        flags: ConnectFlags,
        reason: ReasonCode,
        props: Properties | None = None,
    ) -> None:
        if getattr(reason, "is_failure", False):  # self.link logged why and what to check
            return
        self._set_connected(True)
        client.subscribe(
            [
                (self.topics.all_drift_batches(), 1),
                (self.topics.legacy_drift_batches, 1),  # nodes of before per-node topics
                (self.topics.statuses(), 1),
            ]
        )
        self._enqueue((_CONNECTED, 0, 0, b""))

    def _on_disconnect(
        self,
        client: Client,
        userdata: Any,
        flags: DisconnectFlags,
        reason: ReasonCode,
        props: Properties | None = None,
    ) -> None:
        self._set_connected(False)
        log.warning("disconnected from %s (%s); paho reconnects", self.broker, reason)

    def _on_message(self, client: Client, userdata: Any, msg: Message) -> None:
        item = (msg.topic, msg.mid, msg.qos, msg.payload)
        if self.topics.node_of_drift_batches(msg.topic) is not None:
            self._enqueue(item)
        else:
            self._enqueue_status(item)

    def _enqueue_status(self, item: tuple[str, int, int, bytes]) -> None:
        """Never blocks paho: when the status queue is full the oldest status is dropped."""
        while True:
            try:
                self._statuses.put_nowait(item)
                return
            except queue.Full:
                pass
            if self._stop.is_set():  # stopping: the status thread reads no more
                return
            try:
                _, mid, qos, _ = self._statuses.get_nowait()
            except queue.Empty:
                continue
            self._bump(statuses_dropped=1)
            if qos > 0:
                self.client.ack(mid, qos)

    def _on_publish(
        self,
        client: Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode | int = 0,
        props: Properties | None = None,
    ) -> None:
        code = reason if isinstance(reason, int) else int(reason.value)
        if code < 0x80:
            return
        self._bump(publish_refused=1)
        if code not in self._refusals_logged:  # once per reason code; the status counts them
            self._refusals_logged.add(code)
            log.error(
                "the broker refused a publish by the trainer (PUBACK 0x%02X %s): check that "
                "the trainer logs in as the trainer role and that the ACL grants it `write` on "
                "{prefix}/drift/acks/+ (batch acknowledgements; without them the Pis keep "
                "resending), model/current and nodes/+/status (protocol/README.md, roles and ACL)",
                code,
                reason,
            )

    def _enqueue(self, item: tuple[str, int, int, bytes]) -> None:
        # blocks paho only when 1000 items wait, which the broker's in-flight limit prevents;
        # dropping instead would lose a batch that is never acknowledged
        while not self._stop.is_set():
            try:
                self._inbox.put(item, timeout=1)
                return
            except queue.Full:
                log.warning("intake queue full (%d); waiting for the store", INBOX_MAX)

    # -- intake thread ---------------------------------------------------------------------
    def _run(self) -> None:
        guard = self.faults.loop("trainer-intake", self._stop)  # the outermost frame
        while not self._stop.is_set():
            item = self._inbox.get()
            handled = False
            with guard:  # an unexpected error is logged once per kind and counted
                if not self._step(item):
                    return
                handled = True
            if not handled:
                self._failed(item)

    def _failed(self, item: tuple[str, int, int, bytes]) -> None:
        """An item raised unexpectedly: a drift batch stays unacknowledged (the broker sends it
        again next session, nothing is lost)."""
        self._bump(crashes=1)

    def _run_statuses(self) -> None:
        """The status thread: each status is checked, noted and acknowledged, whatever happens
        (a status that raised would fail again, and is only advice)."""
        guard = self.faults.loop("trainer-status-intake", self._stop)  # the outermost frame
        while not self._stop.is_set():
            topic, mid, qos, payload = self._statuses.get()
            if topic == _STOP:
                return
            handled = False
            with guard:
                self._note_status(topic, payload)
                handled = True
            if not handled:
                self._bump(crashes=1)
            if qos > 0:
                self.client.ack(mid, qos)

    def _step(self, item: tuple[str, int, int, bytes]) -> bool:
        """Handle one inbox item; False when the thread should end."""
        topic, mid, qos, payload = item
        if topic == _STOP:
            return False
        if topic == _CONNECTED:
            self._on_connected_work()
            return True
        if not self.store_with_retry(payload, topic):
            return False  # stopping: unacknowledged, the broker resends it next session
        if qos > 0:  # only now: the batch is committed and the Pi told (or it was worthless)
            self.client.ack(mid, qos)
        return True

    def store_with_retry(self, payload: bytes, topic: str, first_delay_s: float = 0.5) -> bool:
        """Store a drift batch that came on `topic`, retrying with backoff (≤ 30 s) while the
        store fails.

        The batch stays unacknowledged meanwhile, so nothing is lost and the broker stops
        sending more once its in-flight window is full. False only if the daemon stops first.
        """
        delay = first_delay_s
        while True:
            try:
                self._store_batch(payload, topic)
                return True
            except StorageError as exc:  # rolled back (a corrupt store was moved aside)
                self._bump(store_errors=1)
                log.error(
                    "could not store a drift batch (%s); it stays unacknowledged and is retried "
                    "in %.1f s; check free space and permissions of %s",
                    exc,
                    delay,
                    self._store_dir,
                )
            if self._stop.wait(delay):
                return False
            delay = min(delay * 2, 30.0)

    def _store_batch(self, payload: bytes, topic: str) -> None:
        """Decode, check the sender, store (StorageError: nothing committed, nothing
        acknowledged), then publish the Pi's acknowledgement. A malformed batch is dropped
        unacknowledged: its windows stay in the Pi's buffer (a newer Pi's batch version waits
        there for the trainer's upgrade); so is one whose node is not its topic's."""
        try:
            batch = decode_batch(payload)
        except PayloadError as exc:
            self._bump(bad_batches=1)
            log.warning("dropped a malformed drift batch (%s): %s", exc.kind, exc)
            return
        sender = self.topics.node_of_drift_batches(topic)
        if sender == "":  # the legacy shared topic: the payload's word only
            self._bump(legacy_batches=1)
            if "legacy" not in self._batch_notes:
                self._batch_notes.add("legacy")
                log.warning(
                    "node %s ships drift batches on the legacy shared topic %s, where the "
                    "sender cannot be checked; upgrade it to ship on %s",
                    batch.node,
                    topic,
                    self.topics.drift_batches(batch.node),
                )
        elif sender != batch.node:
            self._bump(batches_refused=1)
            if "sender" not in self._batch_notes:  # once; the status counts the rest
                self._batch_notes.add("sender")
                log.warning(
                    "refused a drift batch naming node %r on %s's topic %s: a node ships only "
                    "its own batches (counted in batches_refused)",
                    batch.node,
                    sender,
                    topic,
                )
            return
        if batch.machine_type != self.machine_type.name:  # not acknowledged: the Pi keeps it
            self._bump(other_type=1)  # until the trainer of its type stores it
            log.debug("batch of machine type %s left for its trainer", batch.machine_type)
            return
        stored, _ = self.classes.translate(batch)  # labels as the store's class table's
        added, duplicates = (
            (0, 0)
            if stored is None
            else self.store.add_batch(stored, n_classes=len(self.classes.classes))
        )
        self._bump(batches=1, windows=added, duplicates=duplicates)
        log.debug("stored batch from %s: %d new, %d duplicate", batch.node, added, duplicates)
        refused = len(batch.records) - added - duplicates
        ack = BatchAck(batch.batch_id, added, duplicates, max(0, refused))
        self.client.publish(self.topics.drift_acks(batch.node), ack.to_json(), qos=1)
        self._bump(acks=1)

    def _note_status(self, topic: str, payload: bytes) -> None:
        try:
            status = Status.from_json(payload)
        except PayloadError:
            if payload:  # an empty payload clears a retained status: nothing to say
                self._bump(bad_statuses=1)
            return
        why = self._senders.check(topic, status)
        if why is not None:
            self._bump(statuses_refused=1)
            if why not in self._refusals_seen:  # once per reason; the status counts them
                self._refusals_seen.add(why)
                log.warning(
                    "refused a status on %s naming node %s, role %s (%s); further ones are "
                    "only counted (status error status_refused). A node's status must come on "
                    "its own topic, with the role it was first heard with",
                    topic[:200],
                    status.node,
                    status.role,
                    why,
                )
            return
        self._bump(statuses=1)
        if status.role == "edge":
            seen = {"state": status.state, "drift": status.drift, "model": status.model_version}
            with self._lock:
                self._pis.pop(status.node, None)  # re-inserted last: the dict is by recency
                self._pis[status.node] = seen
                while len(self._pis) > MAX_PIS:  # a flood of node ids: forget the stalest
                    del self._pis[next(iter(self._pis))]
            if self._on_status is not None:  # the model registry: deployments, rollbacks
                self._on_status(status)
