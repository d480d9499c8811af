"""Ships kept windows from the durable buffer to `…/drift/batches/{node}`, end-to-end acknowledged.

It owns its MQTT connection (client id `<node>-batches`), so QoS 1 batches never queue behind
the predictions on the node's main connection. Its own thread takes a batch from the buffer and
publishes it at QoS 1; the rows are deleted only when the TRAINER acknowledges that batch id on
`…/drift/acks/<node>` (protocol.batch_ack), which it does after its store committed the batch.
The broker's PUBACK only says the broker took a copy: Mosquitto saves its queues every
`autosave_interval`, so a broker killed in between forgets batches it had acknowledged.

A batch the trainer has not acknowledged within `ack_timeout_s` is sent again, each time after
twice the wait (up to `max_resend_wait_s`); a copy the broker had no subscriber for (PUBACK 0x10:
the trainer's session is gone, e.g. a broker crash before its autosave) is sent again after
`refused_backoff_s`, doubling with each of its copies nobody took; and at most `max_inflight`
batches of each machine type are on their way (loop/delivery.py), so a trainer that is away finds
few copies queued for it, and the other types' batches still go (a batch carries one type's
windows, named in it: protocol.drift_batch version 2 for another type than the built-in one, each
type's buffer taken from in turn); the trainer drops duplicates by window id and acknowledges a
batch of duplicates too. After a reconnect, the batches the broker had taken are sent again once
`reconnect_grace_s` passed without their acknowledgement (the broker may have crashed). The
connection is a persistent session (`session_expiry_s`), so acknowledgements published while it was
away are delivered.

A PUBACK with a failure reason code (MQTT 5: 0x87 Not authorized when the ACL does not let this
user publish batches) releases the batch back to pending, is counted (`refused`), logged once per
reason with what to check, and pauses shipping (`refused_backoff_s`, doubling up to
`max_resend_wait_s`). paho callbacks only enqueue (and decode an ack of ≤ 512 bytes): no disk I/O
on the network thread.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

from nodekit.guard import Faults, guard_client, paho_thread_alive
from nodekit.lifecycle import Worker
from nodekit.mqtt import ConnectionWatch, Credentials, connect, make_client, start_loop
from protocol.batch_ack import BatchAck
from protocol.drift_batch import DriftBatch, encode_batch
from protocol.errors import PayloadError
from protocol.machine_type import DEFAULT_TYPE_NAME
from protocol.status_detail import ShipperDetail

from .buffer import DurableBuffer
from .delivery import Deliveries, Flight, ResendPolicy

if TYPE_CHECKING:
    from nodekit.mqtt import Client, ConnectFlags, Message, Properties, ReasonCode


log = logging.getLogger(__name__)

NO_MATCHING_SUBSCRIBERS = 0x10  # a success code: the broker took it, and has nobody to give it
EVENTS_MAX = 4096  # acknowledgements beyond this wait are dropped (their batches are resent)
SILENT_TRAINER_LOG_S = 600.0  # how often "the trainer acknowledges nothing" is repeated
_Event = tuple[str, int, int, "BatchAck | None"]  # kind, MQTT message id, reason code, ack

# MQTT 5 PUBACK failure reason codes: (counter kind, name, what to check)
_ACL_ADVICE = (
    "the broker's ACL does not let this node's MQTT user publish drift batches: check that the "
    "node logs in as the edge role (--mqtt-user or EDGELOOP_MQTT_USER) and that the ACL grants "
    "`edge write {prefix}/drift/batches/{node}` (protocol/README.md, roles and ACL)"
)
_REFUSALS: dict[int, tuple[str, str, str]] = {
    0x80: ("unspecified", "Unspecified error", "see the broker's log"),
    0x83: ("implementation", "Implementation specific error", "see the broker's log"),
    0x87: ("not_authorized", "Not authorized", _ACL_ADVICE),
    0x90: ("topic_invalid", "Topic Name invalid", "check --prefix and --node"),
    0x97: (
        "quota_exceeded",
        "Quota exceeded",
        "the broker's queue limits are reached (max_queued_messages/bytes); is the trainer up?",
    ),
    0x99: ("payload_format", "Payload format invalid", "see the broker's log"),
}


def refusal(code: int) -> tuple[str, str, str]:
    """(counter kind, name, advice) for a PUBACK failure reason code.

    >>> refusal(0x87)[:2]
    ('not_authorized', 'Not authorized')
    >>> refusal(0x9A)[:2]
    ('reason_0x9A', 'reason 0x9A')
    """
    return _REFUSALS.get(code, (f"reason_0x{code:02X}", f"reason 0x{code:02X}", "see the log"))


@dataclass(frozen=True, slots=True)
class ShipperConfig:
    """Batch size and the delivery policy; see the module docstring for each wait."""

    batch_size: int = 64
    max_inflight: int = 4  # batches sent and not yet acknowledged by the trainer
    ack_timeout_s: float = 30.0  # first wait for the trainer's acknowledgement
    max_resend_wait_s: float = 600.0  # each resend waits twice as long, up to this
    reconnect_grace_s: float = 3.0  # after a reconnect: time for queued acknowledgements
    refused_backoff_s: float = 5.0  # first pause after a refused publish (doubles)
    session_expiry_s: int = 3600  # the broker keeps acknowledgements for us this long
    poll_s: float = 1.0  # timers only (resend, backoff): every event wakes the loop at once

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_inflight < 1:
            raise ValueError(
                f"shipper batch_size ({self.batch_size}) and max_inflight "
                f"({self.max_inflight}) must be ≥ 1"
            )
        for name in ("ack_timeout_s", "reconnect_grace_s", "refused_backoff_s", "poll_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"shipper {name} must be > 0, got {getattr(self, name)}")
        if self.max_resend_wait_s < max(self.ack_timeout_s, self.refused_backoff_s):
            raise ValueError(
                f"shipper max_resend_wait_s ({self.max_resend_wait_s}) must be ≥ ack_timeout_s "
                f"and refused_backoff_s"
            )
        if self.session_expiry_s < 0:
            raise ValueError(f"shipper session_expiry_s must be ≥ 0, got {self.session_expiry_s}")


class BatchShipper(Worker):
    """Buffer → trainer at-least-once (exactly once in the trainer's store), over its own
    connection to `broker`; `stats()` for the node's status."""

    def __init__(
        self,
        buffer: DurableBuffer,
        broker: str,
        topic: str,
        node: str,
        model_version: Callable[[], int | None],
        config: ShipperConfig | None = None,
        faults: Faults | None = None,
        credentials: Credentials | None = None,
        *,
        ack_topic: str,
        type_version: Callable[[str], int | None] | None = None,
        typed_buffers: Mapping[str, DurableBuffer] | None = None,
        type_classes: Callable[[str], tuple[str, ...] | None] | None = None,
    ) -> None:
        super().__init__("edge-shipper")
        self.buffer = buffer  # the built-in type's
        # each machine type's buffer (the built-in type's included); taken from in turn
        self.buffers = dict(typed_buffers or {DEFAULT_TYPE_NAME: buffer})
        self.buffers.setdefault(DEFAULT_TYPE_NAME, buffer)
        self._turn = 0  # which type's buffer goes first in the next `_send`
        self.broker = broker
        self.credentials = credentials
        self.link: ConnectionWatch | None = None  # set by start(): refused? why?
        self.faults = faults or Faults(log)
        self.topic = topic
        self.ack_topic = ack_topic
        self.node = node
        self.model_version = model_version  # the built-in type's serving model
        self.type_version = type_version  # another type's (None: the node serves none)
        # the class table a type's kept labels index when it is not the type's declared list
        # (a drift batch of version 3 names it); None: the declared list (version 1 or 2)
        self.type_classes = type_classes
        self.config = config or ShipperConfig()
        self.client: Client = make_client(f"{node}-batches")
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_disconnect = lambda *a: self._put(("disconnected", 0, 0, None))
        guard_client(self.client, self.faults, "edge-shipper-mqtt")
        self._events: queue.SimpleQueue[_Event] = queue.SimpleQueue()
        self._deliveries = Deliveries(
            ResendPolicy(self.config.ack_timeout_s, self.config.max_resend_wait_s),
            self.config.max_inflight,
        )
        self._lock = threading.Lock()  # guards the counters below for `stats()`
        self.batches_sent = 0  # new batches published
        self.batches_delivered = 0  # broker PUBACKs with success
        self.batches_acked = 0  # trainer acknowledgements: their rows were deleted
        self.batches_resent = 0  # copies sent again (no trainer ack in time, or a reconnect)
        self.windows_refused_by_trainer = 0  # acknowledged but refused by the store's checks
        self.acks_unknown = 0  # acks of batches not on their way (late, or an earlier process)
        self.acks_bad = 0  # messages on the ack topic that are no ack
        self.acks_dropped = 0  # acks beyond EVENTS_MAX waiting
        self.subscribe_refused = 0
        self.no_subscriber = 0  # PUBACK 0x10: no trainer session on the broker to queue for
        self.refused: dict[str, int] = {}  # PUBACK failures by kind (refusal())
        self._awaiting = (0, 0, 0.0)  # (batches, windows, oldest age s), for the status thread
        self._hold_until = 0.0
        self._refused_wait = self.config.refused_backoff_s
        self._logged_refusals: set[int] = set()
        self._logged_bad_ack = False
        self._logged_no_subscriber = False
        self._last_silence_log = -SILENT_TRAINER_LOG_S
        self._connected_once = False

    def start(self) -> Self:
        """Connect in the background (paho reconnects by itself) and start shipping."""
        self.link = connect(
            self.client,
            self.broker,
            # its own login when the broker binds client ids to logins (secure profile)
            credentials=None if self.credentials is None else self.credentials.for_("batches"),
            clean_start=False,
            session_expiry_s=self.config.session_expiry_s,
        )
        start_loop(self.client)
        self._watch_client("edge-shipper-mqtt", lambda: paho_thread_alive(self.client))
        return super().start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop shipping; batches still on their way go back to pending in the buffer."""
        super().stop(timeout)
        self.client.disconnect()
        self.client.loop_stop()
        if not self.alive:
            for flight in self._deliveries.flights():
                self.buffers[flight.machine_type].release(flight.token)

    def _wake(self) -> None:
        self._put(("wake", 0, 0, None))

    def wake(self) -> None:
        """New rows are in the buffer: ship them now instead of at the next poll."""
        self._put(("wake", 0, 0, None))

    @property
    def inflight(self) -> int:
        """Batches on their way: sent and not yet acknowledged by the trainer."""
        return self._awaiting[0]

    def stats(self) -> dict[str, Any]:
        """Counters for the node's status (`detail.shipper`, as JSON); safe from any thread."""
        return self.detail().to_json_obj()

    def detail(self) -> ShipperDetail:
        """`detail.shipper` of the status (protocol.status_detail); safe from any thread."""
        batches, windows, oldest = self._awaiting
        with self._lock:
            return ShipperDetail(
                batches_sent=self.batches_sent,
                batches_delivered=self.batches_delivered,
                batches_acked=self.batches_acked,
                batches_resent=self.batches_resent,
                awaiting_ack=batches,
                awaiting_ack_windows=windows,
                oldest_unacked_s=round(oldest, 1),
                refused=dict(self.refused),
                windows_refused_by_trainer=self.windows_refused_by_trainer,
                acks_unknown=self.acks_unknown,
                acks_bad=self.acks_bad + self.acks_dropped,
                subscribe_refused=self.subscribe_refused,
                no_subscriber=self.no_subscriber,
            )

    # -- paho callbacks: enqueue only ----------------------------------------------------
    def _put(self, event: _Event) -> None:
        # few: one PUBACK per batch sent (≤ max_inflight at a time) and one per (re)connect
        self._events.put(event)

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
        client.subscribe(self.ack_topic, qos=1)
        self._put(("connected", 0, 0, None))

    def _on_subscribe(
        self, client: Client, userdata: Any, mid: int, reasons: Any, props: Properties | None = None
    ) -> None:
        for rc in reasons or ():
            code = int(getattr(rc, "value", rc))
            if code >= 0x80:
                with self._lock:
                    self.subscribe_refused += 1
                log.error(
                    "the broker refused the subscription to %s (SUBACK 0x%02X): the trainer's "
                    "acknowledgements cannot arrive, so kept windows stay in the buffer and are "
                    "resent; check that the ACL grants `edge read {prefix}/drift/acks/+` "
                    "(protocol/README.md, roles and ACL)",
                    self.ack_topic,
                    code,
                )

    def _on_message(self, client: Client, userdata: Any, msg: Message) -> None:
        try:
            ack = BatchAck.from_json(msg.payload)
        except PayloadError as exc:
            with self._lock:
                self.acks_bad += 1
            if not self._logged_bad_ack:  # a stray publisher: once is enough
                self._logged_bad_ack = True
                log.warning("ignored a message on %s that is no batch ack: %s", msg.topic, exc)
            return
        if self._events.qsize() >= EVENTS_MAX:  # a flood: the batch is resent and acked again
            with self._lock:
                self.acks_dropped += 1
            return
        self._events.put(("ack", 0, 0, ack))

    def _on_publish(
        self,
        client: Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode | int = 0,
        props: Properties | None = None,
    ) -> None:
        self._put(("puback", mid, _code(reason), None))

    # -- shipper thread ----------------------------------------------------------------
    def _run(self) -> None:
        # the shipper must outlive a bad moment (disk full, lost socket): the guard counts it,
        # and backs off from poll_s up to 5 s while it persists
        guard = self.faults.loop("edge-shipper", self._stop, min_s=self.config.poll_s, max_s=5.0)
        while not self._stop.is_set():
            with guard:
                try:
                    event = self._events.get(timeout=self.config.poll_s)
                except queue.Empty:
                    event = ("tick", 0, 0, None)
                now = time.monotonic()
                self._handle(event, now)
                self._resend_due(now)
                self._send(now)
                self._note_awaiting(now)

    def _handle(self, event: _Event, now: float) -> None:
        kind, mid, code, ack = event
        if kind == "puback" and code < 0x80:
            flight = self._deliveries.puback(mid, ok=True)
            if flight is not None:
                with self._lock:
                    self.batches_delivered += 1
                    if code == NO_MATCHING_SUBSCRIBERS:
                        self.no_subscriber += 1
                self._refused_wait = self.config.refused_backoff_s
                if code == NO_MATCHING_SUBSCRIBERS:  # the broker dropped this copy: try again
                    # soon (the trainer may be starting), each flight backing off on its own
                    wait = self.config.refused_backoff_s * 2.0 ** min(flight.resends, 16)
                    wait = min(wait, self.config.max_resend_wait_s)
                    self._deliveries.sooner(flight.batch_id, now + wait)
                if code == NO_MATCHING_SUBSCRIBERS and not self._logged_no_subscriber:
                    self._logged_no_subscriber = True
                    log.warning(
                        "the broker has no subscriber for %s (PUBACK 0x10): the trainer has not "
                        "connected yet, or its session expired; the windows stay in the buffer "
                        "and are sent again until the trainer acknowledges them",
                        self.topic,
                    )
        elif kind == "puback":
            flight = self._deliveries.puback(mid, ok=False)
            if flight is not None:
                self.buffers[flight.machine_type].release(flight.token)
                self._refused(code, flight, now)
        elif kind == "ack" and ack is not None:
            self._acked(ack)
        elif kind == "connected":
            if self._connected_once:
                self._deliveries.reconnected(now, self.config.reconnect_grace_s)
            self._connected_once = True

    def _acked(self, ack: BatchAck) -> None:
        flight = self._deliveries.acked(ack.batch_id)
        if flight is None:
            with self._lock:
                self.acks_unknown += 1
            return
        self.buffers[flight.machine_type].acknowledge(flight.token)
        with self._lock:
            self.batches_acked += 1
            self.windows_refused_by_trainer += ack.refused
        if ack.refused:
            log.warning(
                "the trainer refused %d window(s) of batch %s (they failed its store's checks; "
                "see the trainer's log); they are not sent again",
                ack.refused,
                ack.batch_id.hex(),
            )

    def _refused(self, code: int, flight: Flight, now: float) -> None:
        kind, name, advice = refusal(code)
        with self._lock:
            self.refused[kind] = self.refused.get(kind, 0) + 1
        wait = self._refused_wait
        self._hold_until = max(self._hold_until, now + wait)
        self._refused_wait = min(wait * 2, self.config.max_resend_wait_s)
        if code not in self._logged_refusals:  # once per reason; the status counts the rest
            self._logged_refusals.add(code)
            log.error(
                "the broker refused drift batch %s on %s (PUBACK 0x%02X %s): %s. Its %d "
                "window(s) stay in the buffer; shipping pauses %.0f s (doubling while refused)",
                flight.batch_id.hex(),
                self.topic,
                code,
                name,
                advice,
                flight.windows,
                wait,
            )

    def _resend_due(self, now: float) -> None:
        if now < self._hold_until or not self.client.is_connected():
            return
        for flight in self._deliveries.due(now):
            info = self.client.publish(self.topic, flight.payload, qos=1)
            if info.rc != 0:
                return
            resent = self._deliveries.resent(flight.batch_id, info.mid, now)
            with self._lock:
                self.batches_resent += 1
            log.info(
                "drift batch %s (%d windows) not acknowledged by the trainer %.0f s after it "
                "was first sent; sent again (copy %d, next in %.0f s)",
                flight.batch_id.hex(),
                flight.windows,
                now - flight.first_sent,
                resent.resends + 1,
                resent.due - now,
            )
        self._warn_if_silent(now)

    def _warn_if_silent(self, now: float) -> None:
        oldest = self._deliveries.oldest_age(now)
        if oldest < 2 * self.config.ack_timeout_s:
            return
        if now - self._last_silence_log < SILENT_TRAINER_LOG_S:
            return
        self._last_silence_log = now
        log.warning(
            "%d drift batch(es) (%d windows) wait for the trainer's acknowledgement, the oldest "
            "for %.0f s; they stay in the buffer and are resent with backoff. Is the trainer "
            "running, and new enough to acknowledge batches on %s (upgrade it before the Pis)?",
            len(self._deliveries),
            self._deliveries.windows(),
            oldest,
            self.ack_topic,
        )

    def _send(self, now: float) -> None:
        kinds = list(self.buffers)
        self._turn = (self._turn + 1) % len(kinds)  # each type's buffer first in turn
        for kind in kinds[self._turn :] + kinds[: self._turn]:
            self._send_of(kind, now)

    def _send_of(self, kind: str, now: float) -> None:
        """Send batches of `kind`'s kept windows while it has fewer than `max_inflight` on
        their way (a type whose trainer is away holds up no other)."""
        buffer = self.buffers[kind]
        while now >= self._hold_until and self.client.is_connected():
            if kind in self._deliveries.full_types():
                return
            token, records = buffer.take_batch(self.config.batch_size)
            if not records:
                return
            batch_id = os.urandom(16)
            version = (
                self.model_version()
                if kind == DEFAULT_TYPE_NAME or self.type_version is None
                else self.type_version(kind)
            )
            table = None if self.type_classes is None else self.type_classes(kind)
            batch = DriftBatch(batch_id, self.node, version or 0, tuple(records), kind, table)
            payload = encode_batch(batch)
            info = self.client.publish(self.topic, payload, qos=1)
            if info.rc != 0:
                buffer.release(token)
                return
            self._deliveries.send(
                token=token,
                batch_id=batch_id,
                payload=payload,
                windows=len(records),
                mid=info.mid,
                now=now,
                machine_type=kind,
            )
            with self._lock:
                self.batches_sent += 1

    def _note_awaiting(self, now: float) -> None:
        d = self._deliveries
        self._awaiting = (len(d), d.windows(), d.oldest_age(now))


def _code(reason: Any) -> int:
    """paho's ReasonCode (MQTT 5) or an int as an int."""
    try:
        return int(getattr(reason, "value", reason))
    except (TypeError, ValueError):
        return 0x80
