"""pi_edge as an Eclipse Sparkplug B 3.0 edge node: each machine a device (`--sparkplug GROUP`).

A SCADA host (Ignition, any Sparkplug host application) sees the node `config.node` in group
GROUP, and each machine the node classifies as a device of it. Topics and payloads come from
`protocol.sparkplug`; this module decides what to publish and when:

    NBIRTH   on every (re)connect and on a rebirth request: seq 0, `bdSeq` (Int64, the same
             value as the NDEATH in this session's Will), `Node Control/Rebirth` (Boolean,
             false), `edgeloop version` (String), `model version` (Int64; null before a model)
    DBIRTH   right after NBIRTH for every live machine, and when a machine is first seen or
             comes back after a DDEATH: every device metric (below)
    DDATA    by exception: only the metrics that changed since the host last got them; the
             confidence only when it moved by ≥ CONFIDENCE_DEADBAND (0.05) since last sent
    NDATA    `model version` when the node installs another model
    DDEATH   a machine that sent no window for `sparkplug_silence_s` (default 30 s), or that
             the machine cap (`max_machines`) evicted; it is born again when its windows return
    NDEATH   the MQTT Will (QoS 1, not retained) with this session's `bdSeq`; published
             explicitly before a clean disconnect (`pi_edge` stopping)
    NCMD     read: `Node Control/Rebirth` = true → NBIRTH (seq 0) and every DBIRTH again

Device metrics (names always, no aliases; metric timestamps: when the window was classified, ms):

    state          String   the debounced state: normal, fault, anomaly (an anomaly model's
                            verdict) or unknown (…/machines/{m}/state)
    fault          Boolean  state == fault
    class          String   the debounced class (null while unknown)
    window class   String   the latest window's class
    confidence     Float    the latest window's confidence
    drift          String   the node's drift verdict for the machine: ok, suspect or drift
    model version  Int64    the model that classified the latest window

`seq` counts every message after NBIRTH (0) to 255 and wraps; `bdSeq` is +1 per MQTT CONNECT
(0..255), kept in `<state_dir>/sparkplug.json`, so that a host can tell this session's NDEATH
from the one of an older session.

Threads: the worker calls `observe()` once per batch (a dict update under a lock and an Event;
no protobuf, no MQTT), `forget()` on eviction; the `edge-sparkplug` thread does everything
else on its own MQTT connection (client id `<node>-spb`) and publishes at most one round every
MIN_PERIOD_S (0.1 s), so a flickering class costs at most 10 DDATA/s per machine. The pure
part, `Devices`, decides births, data and deaths from readings and times:

>>> d = Devices(silence_s=30.0)
>>> r = Reading("normal", "normal", "normal", 0.91, "ok", 3, 1_700_000_000_000)
>>> [(kind, dev, [m.name for m in ms]) for kind, dev, ms in d.take({"m01": r}, now=0.0)]
... # doctest: +NORMALIZE_WHITESPACE
[('DBIRTH', 'm01', ['state', 'fault', 'class', 'window class', 'confidence', 'drift',
  'model version'])]
>>> d.take({"m01": r._replace(confidence=0.93)}, now=1.0)  # within the deadband: nothing
[]
>>> [(k, [(m.name, m.value) for m in ms]) for k, _, ms in d.take(
...     {"m01": r._replace(window_class="pump_fault", confidence=0.6)}, now=2.0)]
[('DDATA', [('window class', 'pump_fault'), ('confidence', 0.6)])]
>>> d.silent(now=31.0), [(k, dev) for k, dev, _ in d.silent(now=32.1)]
([], [('DDEATH', 'm01')])
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Self

from nodekit.guard import Faults, guard_client, paho_thread_alive
from nodekit.lifecycle import Worker
from nodekit.mqtt import ConnectionWatch, Credentials, connect, make_client, start_loop
from protocol.errors import PayloadError
from protocol.machine_state import state_of
from protocol.sparkplug import (
    BD_SEQ,
    REBIRTH,
    DataType,
    Metric,
    Seq,
    SparkplugTopics,
    next_bd_seq,
)

from ..errors import EdgeError

if TYPE_CHECKING:
    from nodekit.mqtt import Client, ConnectFlags, DisconnectFlags, Message, Properties, ReasonCode


__all__ = [
    "CONFIDENCE_DEADBAND",
    "DEFAULT_SILENCE_S",
    "MIN_PERIOD_S",
    "STATE_FILE",
    "BdSeqStore",
    "Devices",
    "Reading",
    "SparkplugNode",
    "device_metrics",
]

log = logging.getLogger(__name__)

DEFAULT_SILENCE_S = 30.0
CONFIDENCE_DEADBAND = 0.05
MIN_PERIOD_S = 0.1  # between two publishing rounds of the edge-sparkplug thread
STATE_FILE = "sparkplug.json"
_NDEATH_WAIT_S = 2.0

Out = tuple[str, str, list[Metric]]  # (DBIRTH | DDATA | DDEATH, device, metrics)


class Reading(NamedTuple):
    """The latest of one machine, as the worker saw it (`ts_ms`: when it was classified)."""

    state: str  # normal, fault, anomaly, unknown (debounced)
    cls: str | None  # the debounced class
    window_class: str
    confidence: float
    drift: str
    model_version: int
    ts_ms: int


# (metric name, data type, value of a Reading)
_FIELDS: tuple[tuple[str, DataType, Callable[[Reading], Any]], ...] = (
    ("state", DataType.String, lambda r: r.state),
    ("fault", DataType.Boolean, lambda r: r.state == "fault"),
    ("class", DataType.String, lambda r: r.cls),
    ("window class", DataType.String, lambda r: r.window_class),
    ("confidence", DataType.Float, lambda r: r.confidence),
    ("drift", DataType.String, lambda r: r.drift),
    ("model version", DataType.Int64, lambda r: r.model_version),
)


def device_metrics(reading: Reading) -> list[Metric]:
    """Every device metric of `reading` (a DBIRTH)."""
    return [Metric(name, dt, get(reading), reading.ts_ms) for name, dt, get in _FIELDS]


def _changed(sent: Reading, now: Reading, deadband: float) -> tuple[list[Metric], Reading]:
    """The metrics of `now` that differ from `sent` (confidence: by ≥ `deadband`), and what
    the host then knows."""
    out = []
    for name, dt, get in _FIELDS:
        old, new = get(sent), get(now)
        if name == "confidence":
            if abs(new - old) < deadband:
                continue
        elif new == old:
            continue
        out.append(Metric(name, dt, new, now.ts_ms))
    if any(m.name == "confidence" for m in out):
        return out, now
    return out, now._replace(confidence=sent.confidence)  # the host keeps the old confidence


class _Device:
    __slots__ = ("alive", "known", "seen", "sent")

    def __init__(self, known: Reading, seen: float) -> None:
        self.known = known
        self.sent: Reading | None = None  # what the host has been told (None: not born)
        self.seen = seen  # monotonic time of the latest window
        self.alive = False


class Devices:
    """Which machines the host knows, and what it has been told; pure (times come in).

    `take` merges the latest readings and says what to publish (DBIRTH for a machine new or
    back, DDATA with the changes); `silent` kills machines quiet for `silence_s`; `births`
    gives every live machine's DBIRTH after an NBIRTH; `forget` kills and drops machines.
    """

    def __init__(
        self, silence_s: float = DEFAULT_SILENCE_S, deadband: float = CONFIDENCE_DEADBAND
    ) -> None:
        if silence_s <= 0:
            raise ValueError(f"Sparkplug silence {silence_s} s must be > 0")
        self.silence_s = silence_s
        self.deadband = deadband
        self._devices: dict[str, _Device] = {}

    def take(self, readings: Mapping[str, Reading], now: float) -> list[Out]:
        out: list[Out] = []
        for machine, reading in readings.items():
            dev = self._devices.get(machine)
            if dev is None:
                dev = self._devices[machine] = _Device(reading, now)
            dev.known, dev.seen = reading, now
            if not dev.alive or dev.sent is None:
                dev.alive, dev.sent = True, reading
                out.append(("DBIRTH", machine, device_metrics(reading)))
                continue
            metrics, dev.sent = _changed(dev.sent, reading, self.deadband)
            if metrics:
                out.append(("DDATA", machine, metrics))
        return out

    def silent(self, now: float) -> list[Out]:
        out: list[Out] = []
        for machine, dev in self._devices.items():
            if dev.alive and now - dev.seen > self.silence_s:
                dev.alive, dev.sent = False, None
                out.append(("DDEATH", machine, []))
        return out

    def births(self) -> list[Out]:
        out: list[Out] = []
        for machine, dev in self._devices.items():
            if dev.alive:
                dev.sent = dev.known
                out.append(("DBIRTH", machine, device_metrics(dev.known)))
        return out

    def forget(self, machines: Iterable[str]) -> list[Out]:
        out: list[Out] = []
        for machine in machines:
            dev = self._devices.pop(machine, None)
            if dev is not None and dev.alive:
                out.append(("DDEATH", machine, []))
        return out

    def alive(self) -> list[str]:
        return [m for m, dev in self._devices.items() if dev.alive]

    def __len__(self) -> int:
        return len(self._devices)


def _with_will() -> Any:
    """MQTT 5 DISCONNECT reason 0x04: the broker publishes the Will although we disconnect."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    return ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message")


class BdSeqStore:
    """The last `bdSeq` used, in `<state_dir>/sparkplug.json`, so a restart takes the next.

    >>> import tempfile
    >>> store = BdSeqStore(Path(tempfile.mkdtemp()) / "sparkplug.json")
    >>> store.load(), store.advance(), store.advance(), BdSeqStore(store.path).load()
    (None, 0, 1, 1)
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> int | None:
        """The stored value; None if there is none or it is unreadable (logged: starts at 0)."""
        try:
            data = json.loads(self.path.read_text())
            value = data["bd_seq"]
            if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255:
                return value
            raise ValueError(f"bd_seq {value!r} is not an integer 0..255")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning(
                "cannot read the Sparkplug bdSeq from %s (%s); starting again at 0 (a host "
                "takes the next NBIRTH as a new session)",
                self.path,
                exc,
            )
            return None

    def advance(self) -> int:
        """Take the next bdSeq and store it before it is used."""
        value = next_bd_seq(self.load())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"v": 1, "bd_seq": value}) + "\n")
        os.replace(tmp, self.path)
        return value


class SparkplugNode(Worker):
    """The Sparkplug B edge node of one pi_edge node: its own MQTT connection and thread.

    `start()`, then the worker's `observe()`/`forget()`; `stop()` publishes NDEATH and
    disconnects. `model_version` is read by the thread for NBIRTH and NDATA.
    """

    def __init__(
        self,
        *,
        group: str,
        node: str,
        broker: str,
        state_dir: Path,
        normal: str,
        sw_version: str,
        model_version: Callable[[], int | None],
        faults: Faults,
        count_error: Callable[[str], tuple[bool, int]],
        credentials: Credentials | None = None,
        silence_s: float = DEFAULT_SILENCE_S,
        deadband: float = CONFIDENCE_DEADBAND,
    ) -> None:
        super().__init__("edge-sparkplug")
        self.topics = SparkplugTopics(group, node)
        self.broker = broker
        self.normal = normal
        self.sw_version = sw_version
        self.model_version = model_version
        self.faults = faults
        self.count_error = count_error
        self.credentials = credentials
        self.store = BdSeqStore(state_dir / STATE_FILE)
        self.devices = Devices(silence_s, deadband)
        self.seq = Seq()
        self.link: ConnectionWatch | None = None
        self._lock = threading.Lock()  # the worker's hand-over: _latest, _gone
        self._latest: dict[str, Reading] = {}
        self._gone: set[str] = set()
        self._nudge = threading.Event()
        self._birth = threading.Event()  # connected: NBIRTH + DBIRTHs due
        self._ncmd: bytes | None = None  # the latest NCMD payload (paho thread → ours)
        self._connected = False
        self._born = False  # NBIRTH published in this MQTT session
        self._bd_lock = threading.Lock()
        self.bd_seq = -1  # the bdSeq of the current (or next) session
        self._sent_model: int | None = None
        self._client: Client | None = None
        self.published: dict[str, int] = {}  # message type -> count, for status and tests

    # ------------------------------------------------------------------ worker side (cheap)
    def observe(
        self,
        rows: Iterable[Any],
        current: Callable[[str], str | None],
        normal: str | None = None,
    ) -> None:
        """Take a classified batch (history rows: machine, label, confidence, drift,
        model_version, ts) with `current(machine)` the machine's debounced class; `normal`: the
        healthy class of the batch's machine type (None: the node's, the built-in type's)."""
        normal = self.normal if normal is None else normal
        with self._lock:
            latest = self._latest  # bounded: one entry per machine the node tracks
            for row in rows:
                cls = current(row.machine)
                state = "unknown" if cls is None else state_of(cls, normal)
                latest[row.machine] = Reading(
                    state,
                    cls,
                    row.label,
                    row.confidence,
                    row.drift,
                    row.model_version,
                    int(row.ts * 1000),
                )
        self._nudge.set()

    def forget(self, machines: Iterable[str]) -> None:
        """The node's machine cap evicted `machines`: DDEATH, then they are forgotten."""
        with self._lock:
            for m in machines:
                self._latest.pop(m, None)
                self._gone.add(m)
        self._nudge.set()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Self:
        """Connect (in the background) with NDEATH as the Will, start the thread."""
        self.bd_seq = self.store.advance()
        client = make_client(f"{self.topics.node}-spb")
        client.will_set(self.topics.ndeath, self._ndeath(), qos=1, retain=False)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        guard_client(client, self.faults, "edge-sparkplug-mqtt")
        self._client = client
        super().start()
        try:
            creds = None if self.credentials is None else self.credentials.for_("spb")  # own login
            self.link = connect(client, self.broker, credentials=creds)
        except ValueError as exc:
            raise EdgeError(f"broker address: {exc}") from exc
        start_loop(client)
        self._watch_client("edge-sparkplug-mqtt", lambda: paho_thread_alive(client))
        log.info(
            "Sparkplug B edge node %s/%s (bdSeq %d) connecting to %s",
            self.topics.group,
            self.topics.node,
            self.bd_seq,
            self.broker,
        )
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread, publish NDEATH (a clean stop sends no Will) and disconnect."""
        super().stop(timeout)
        client = self._client
        if client is None:
            return
        if self._connected:
            info = client.publish(self.topics.ndeath, self._ndeath(), qos=1, retain=False)
            try:
                info.wait_for_publish(_NDEATH_WAIT_S)
            except (RuntimeError, ValueError) as exc:  # the connection went meanwhile
                log.debug("NDEATH not confirmed: %s", exc)
            if info.is_published():
                self._count("NDEATH")
            else:  # a clean DISCONNECT discards the Will: ask the broker to send it after all
                log.warning(
                    "the broker did not confirm the Sparkplug NDEATH within %g s; disconnecting "
                    "with MQTT 5 reason 0x04 so that it publishes the NDEATH Will instead",
                    _NDEATH_WAIT_S,
                )
                client.disconnect(reasoncode=_with_will())
                client.loop_stop()
                self._client = None
                return
        client.disconnect()
        client.loop_stop()
        self._client = None

    def _ndeath(self) -> bytes:
        from protocol.sparkplug.payload import encode_payload

        with self._bd_lock:
            bd = self.bd_seq
        return encode_payload(
            [Metric(BD_SEQ, DataType.Int64, bd)], timestamp_ms=time.time_ns() // 1_000_000
        )

    # ------------------------------------------------------------------ paho thread
    def _on_connect(
        self,
        client: Client,
        userdata: Any,
        flags: ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        if getattr(reason_code, "is_failure", False):  # self.link logged why
            return
        client.subscribe([(self.topics.ncmd, 1)])  # before NBIRTH, as Sparkplug requires
        self._connected = True
        self._birth.set()
        self._nudge.set()

    def _on_disconnect(
        self,
        client: Client,
        userdata: Any,
        flags: DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        self._connected = False
        self._born = False
        if self._stop.is_set():
            return
        with self._bd_lock:  # the next CONNECT is a new session: a new bdSeq in its Will
            self.bd_seq = self.store.advance()
        client.will_set(self.topics.ndeath, self._ndeath(), qos=1, retain=False)
        log.warning(
            "Sparkplug connection to %s lost (%s); reconnecting with bdSeq %d",
            self.broker,
            reason_code,
            self.bd_seq,
        )

    def _on_message(self, client: Client, userdata: Any, msg: Message) -> None:
        if msg.topic == self.topics.ncmd:
            self._ncmd = bytes(msg.payload)  # the latest only; the thread decodes it
            self._nudge.set()

    # ------------------------------------------------------------------ edge-sparkplug thread
    def _wake(self) -> None:
        self._nudge.set()

    def _run(self) -> None:
        guard = self.faults.loop("edge-sparkplug", self._stop)  # the outermost frame
        tick = min(1.0, self.devices.silence_s / 4)
        while not self._stop.is_set():
            self._nudge.wait(tick)
            if self._stop.is_set():
                break
            self._nudge.clear()
            with guard:
                self._pump()
            self._stop.wait(MIN_PERIOD_S)

    def _pump(self) -> None:
        from protocol.sparkplug.payload import decode_payload, rebirth_requested

        ncmd, self._ncmd = self._ncmd, None
        if ncmd is not None:
            try:
                if rebirth_requested(decode_payload(ncmd)):
                    log.info("Sparkplug rebirth requested by NCMD")
                    self._birth.set()
            except PayloadError as exc:
                should_log, more = self.count_error(exc.kind)
                if should_log:
                    log.warning(
                        "ignored an NCMD on %s: %s%s",
                        self.topics.ncmd,
                        exc,
                        f" [{more} more not logged]" if more else "",
                    )
        with self._lock:
            latest, self._latest = self._latest, {}
            gone, self._gone = self._gone, set()
        now = time.monotonic()  # at most MIN_PERIOD_S + a tick after the windows came
        out = self.devices.forget(gone)
        out += self.devices.take(latest, now)
        out += self.devices.silent(now)
        if self._birth.is_set() and self._connected:
            self._birth.clear()
            self._publish_births()
            return  # the births carry the latest values of every live machine
        if not self._born:
            return  # offline: the next NBIRTH and DBIRTHs tell the host everything
        for kind, device, metrics in out:
            self._publish(kind, device, metrics)
        version = self.model_version()
        if version != self._sent_model:
            self._sent_model = version
            self._publish("NDATA", None, [Metric("model version", DataType.Int64, version)])

    def _publish_births(self) -> None:
        version = self.model_version()
        with self._bd_lock:
            bd = self.bd_seq
        node_metrics = [
            Metric(BD_SEQ, DataType.Int64, bd),
            Metric(REBIRTH, DataType.Boolean, False),
            Metric("edgeloop version", DataType.String, self.sw_version),
            Metric("model version", DataType.Int64, version),
        ]
        self._sent_model = version
        self._publish("NBIRTH", None, node_metrics)
        self._born = True
        for _kind, device, metrics in self.devices.births():
            self._publish("DBIRTH", device, metrics)
        log.info(
            "Sparkplug NBIRTH (bdSeq %d) and %d DBIRTH(s) published", bd, len(self.devices.alive())
        )

    def _publish(self, kind: str, device: str | None, metrics: list[Metric]) -> None:
        from protocol.sparkplug.payload import encode_payload

        t = self.topics
        if device is None:
            topic = t.nbirth if kind == "NBIRTH" else t.ndata
        else:
            topic = {"DBIRTH": t.dbirth, "DDATA": t.ddata, "DDEATH": t.ddeath}[kind](device)
        seq = self.seq.reset() if kind == "NBIRTH" else self.seq.next()
        payload = encode_payload(metrics, timestamp_ms=time.time_ns() // 1_000_000, seq=seq)
        client = self._client
        if client is None:  # stopped meanwhile
            return
        rc = client.publish(topic, payload, qos=0, retain=False).rc
        if rc != 0:
            should_log, _ = self.count_error("sparkplug_publish_failed")
            if should_log:
                log.warning("could not hand a Sparkplug %s to paho (rc %s)", kind, rc)
            return
        self._count(kind)

    def _count(self, kind: str) -> None:
        self.published[kind] = self.published.get(kind, 0) + 1
