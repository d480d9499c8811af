"""The console's MQTT shell: subscribe, decode on paho's thread, hand over; publish actions.

Paho's network thread decodes each message with the protocol's own decoders and hands it over
without blocking: statuses and machine states go into a bounded queue (oldest dropped and
counted when the screen falls behind), predictions are coalesced to the newest per machine (at
most `max_machines`), so 100 machines at 10 Hz cost the screen one row update per tick. A
payload that does not decode, or names another node or machine than its topic does (a
status of `pi-2` on `nodes/pi-1/status`: kind `topic_mismatch`), is counted per kind (`bad`)
and logged at most once per kind and minute; every callback is wrapped by `nodekit.guard`,
so nothing kills the thread.

The UI thread calls `drain()` at its refresh tick and publishes actions with `send()`: QoS 1,
not retained; paho queues them while the broker is away.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nodekit.guard import Faults, guard_client
from nodekit.mqtt import ConnectionWatch, Credentials, connect, make_client, start_loop
from protocol import PayloadError, Prediction, Status, Topics
from protocol.machine_state import MachineState

if TYPE_CHECKING:
    from nodekit.mqtt import Client, ConnectFlags, Message, Properties, ReasonCode


__all__ = ["ConsoleLink", "Drained"]

log = logging.getLogger(__name__)

MAX_EVENTS = 10_000  # statuses and states waiting for the screen
_LOG_EVERY_S = 60.0


@dataclass(frozen=True, slots=True)
class Drained:
    """What arrived since the last drain, each with its receive time (s since the epoch)."""

    statuses: list[tuple[Status, float]]
    states: list[tuple[MachineState, float]]
    predictions: list[tuple[Prediction, float]]


class ConsoleLink:
    """One MQTT connection: reads the site, sends the operator's actions. Thread-safe."""

    def __init__(
        self,
        broker: str,
        topics: Topics,
        *,
        client_id: str,
        credentials: Credentials | None = None,
        max_machines: int = 2000,
    ) -> None:
        self.broker = broker
        self.topics = topics
        self.client_id = client_id
        self.credentials = credentials
        self.faults = Faults(log)
        self._max_machines = max_machines
        self._lock = threading.Lock()
        self._events: deque[tuple[str, Any, float]] = deque()
        self._predictions: OrderedDict[str, tuple[Prediction, float]] = OrderedDict()
        self.bad: dict[str, int] = {}  # payload error kind → count
        self.dropped = 0  # events dropped because the screen fell behind
        self.received = 0
        self._logged: dict[str, float] = {}
        self._client: Client | None = None
        self.link: ConnectionWatch | None = None
        self.subscribed = threading.Event()  # the broker granted the subscriptions

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> ConsoleLink:
        client = make_client(self.client_id)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_subscribe = lambda *a: self.subscribed.set()
        guard_client(client, self.faults, "console-mqtt")
        self._client = client
        self.link = connect(client, self.broker, credentials=self.credentials)
        start_loop(client)
        return self

    def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()

    @property
    def state(self) -> str:
        return "not started" if self.link is None else self.link.state

    def bad_counts(self) -> dict[str, int]:
        """Payloads refused so far, per error kind."""
        with self._lock:
            return dict(self.bad)

    # -- the UI thread ----------------------------------------------------------------------
    def drain(self) -> Drained:
        """Everything that arrived since the last call (statuses and states in order)."""
        with self._lock:
            events, self._events = self._events, deque()
            predictions = list(self._predictions.values())
            self._predictions.clear()
        statuses = [(obj, t) for kind, obj, t in events if kind == "status"]
        states = [(obj, t) for kind, obj, t in events if kind == "state"]
        return Drained(statuses, states, predictions)

    def send(self, topic: str, payload: bytes) -> bool:
        """Publish an action at QoS 1 (not retained); False if paho could not even queue it."""
        client = self._client
        if client is None:
            return False
        rc = client.publish(topic, payload, qos=1, retain=False).rc
        if rc not in (0, 4):  # 4: not connected yet, paho sends it on reconnect
            log.warning("could not queue a message on %s (paho rc %s)", topic, rc)
            return False
        log.info("sent %s on %s", payload[:200].decode(errors="replace"), topic)
        return True

    # -- paho's thread ----------------------------------------------------------------------
    def _on_connect(
        self,
        client: Client,
        userdata: Any,
        flags: ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        if getattr(reason_code, "is_failure", False):
            return  # the ConnectionWatch logged why and what to check
        t = self.topics
        client.subscribe(
            [
                (t.statuses(), 1),
                (t.machine_states(), 1),
                (f"{t.prefix}/machines/+/state", 1),  # retained by nodes of before
                (t.predictions(), 0),
            ]
        )
        log.info("console connected to %s", self.broker)

    def _on_message(self, client: Client, userdata: Any, msg: Message) -> None:
        now = time.time()
        topic: str = msg.topic
        self.received += 1
        if not msg.payload:
            return  # a cleared retained message
        t = self.topics
        try:
            if topic.endswith("/prediction"):
                p = Prediction.from_json(msg.payload)
                _same(topic, t.prediction(p.machine), "machine")
                with self._lock:
                    self._predictions.pop(p.machine, None)
                    self._predictions[p.machine] = (p, now)
                    while len(self._predictions) > self._max_machines:
                        self._predictions.popitem(last=False)
                return
            if topic.endswith("/status"):
                status = Status.from_json(msg.payload)
                _same(topic, t.status(status.node), "node")  # no node speaks for another
                item: tuple[str, Any, float] = ("status", status, now)
            elif (source := t.state_source(topic)) is not None:
                state = MachineState.from_json(msg.payload)
                machine, node = source
                if node:  # no node speaks for another, nor of another machine
                    _same(topic, t.machine_state(state.machine, node), "machine")
                    _same(topic, t.machine_state(machine, state.node), "node")
                else:  # the legacy topic: only the payload names the node
                    _same(topic, t.legacy_machine_state(state.machine), "machine")
                item = ("state", state, now)
            else:
                return
        except PayloadError as exc:
            self._bad(topic, exc)
            return
        with self._lock:
            if len(self._events) >= MAX_EVENTS:
                self._events.popleft()
                self.dropped += 1
            self._events.append(item)

    def _bad(self, topic: str, exc: PayloadError) -> None:
        now = time.monotonic()
        with self._lock:
            self.bad[exc.kind] = self.bad.get(exc.kind, 0) + 1
            due = now - self._logged.get(exc.kind, -_LOG_EVERY_S) >= _LOG_EVERY_S
            if due:
                self._logged[exc.kind] = now
        if due:
            log.warning("ignored a bad payload on %s (%s): %s", topic, exc.kind, exc)


def _same(topic: str, expected: str, what: str) -> None:
    """Refuse a message whose payload names another node or machine than its topic.

    >>> try:
    ...     _same("p/nodes/pi-1/status", "p/nodes/pi-2/status", "node")
    ... except PayloadError as exc:
    ...     print(exc.kind)
    topic_mismatch
    """
    if topic != expected:
        raise PayloadError(
            f"a message on {topic[:200]!r} names another {what} "
            f"(its topic would be {expected[:200]!r})",
            kind="topic_mismatch",
        )
