"""The live simulator's MQTT shell: publish windows on a steady clock, take control commands.

Threads: the caller's thread runs `Simulator.run` — it owns the fleet, generates and publishes
every window and applies commands. paho's network thread only parses control messages
(`protocol.Command.from_json`) and hands them over through a bounded queue; a malformed
message is logged, counted by kind and dropped, and publishing goes on. Its callbacks are
wrapped by `nodekit.guard`: anything unexpected is counted (status `errors`
"fault:<where>:<Type>") and the thread goes on. If paho's thread dies anyway, `run` notices at
its next status, publishes a retained "degraded" status and raises SimError (exit 1).

Timing: tick k is due at ``start + k / hz`` (absolute deadlines, so the rate does not drift
under load); each tick publishes one window per machine. A tick that is late is published at
once (catch-up); if the loop falls more than `max_lag_s` behind, it counts the skipped ticks
as `late_ticks` and re-bases the schedule. While waiting for the next deadline the loop
applies commands as they arrive, so a command takes effect within ~0.1 s.

`max_rate=True` drops the clock and publishes as fast as one core allows (every
`backpressure_every` ticks it waits until paho has written the last window to the socket),
to measure the publish ceiling.

Per-signal mode (`--signals FILE`): each window goes out as T × C readings, one message per
sample and channel on the file's topics (`{"ts": <s>, "value": <v>}` or the file's keys), all
of a tick in one write (`nodekit.mqtt.publish_many`). Sample times: the first tick's window
is the last whole window before the wall clock, slots `s0 … s0+T-1` with `s0` a multiple of
the window length T (so pi_edge's epoch-aligned windows are exactly the simulator's), and
every tick's window follows the last: window n covers slots `s0 + n·T … s0 + n·T + T-1`, at
`slot / sample_hz` seconds. So sample time runs `hz · T / sample_hz` times as fast as the wall
clock: 1× (real time) with the shipped 60 Hz example at `--hz 1`, 600× at 1 Hz and `--hz 10`;
ahead of the wall clock, pi_edge's latency figures (from the sensor time) go negative. The
window's `timestamp_ns` is its first slot's time. pi_edge reassembles window n as seq
`s0/T + n` with equal values (float32, exactly). With fans (`--fans N`) a second file names
`machine_type = "fan"`: the fans' windows go out on its topics, on their own grid (the fan
type's 1000 Hz, 128 samples a window), the seed machines' on the first file's.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from nodekit.errors import BrokerRefusedError
from nodekit.guard import Faults, guard_client, publish_retained
from nodekit.lifecycle import DEGRADED, Watchdog
from nodekit.mqtt import (
    ConnectionWatch,
    Credentials,
    connect,
    make_client,
    publish_confirmed,
    publish_many,
    start_loop,
)
from protocol import (
    Command,
    PayloadError,
    Status,
    Topics,
    Window,
    __version__,
    encode_window,
)
from protocol.machine_type import DEFAULT_TYPE_NAME
from protocol.signals import SignalMap, slot_ns
from protocol.status_detail import DETAIL_VERSION, SimMachine, SimMachines, clip_text

from .answers import RequestAnswerer
from .config import SimConfig
from .errors import SimError
from .fleet import Fleet
from .plant_fleet import PlantFleet
from .snapshot import MachineRow, Snapshot

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

    from nodekit.mqtt import Client, ConnectFlags, DisconnectFlags, Message, Properties, ReasonCode


__all__ = ["ROLE", "RunReport", "SimConfig", "Simulator", "send_command"]

log = logging.getLogger(__name__)

ROLE = "simulator"
INBOX_SIZE = 256


@dataclass(frozen=True, slots=True)
class RunReport:
    """What one run achieved: `rate` is windows/s over the whole run."""

    windows: int
    elapsed_s: float
    machines: int
    target_rate: float | None
    late_ticks: int
    publish_failed: int

    @property
    def rate(self) -> float:
        return self.windows / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def describe(self) -> str:
        target = (
            "as fast as possible" if self.target_rate is None else f"target {self.target_rate:.1f}"
        )
        return (
            f"published {self.windows} windows from {self.machines} machines in "
            f"{self.elapsed_s:.2f} s: {self.rate:.1f} windows/s ({target}); "
            f"late ticks {self.late_ticks}, failed publishes {self.publish_failed}"
        )


class Simulator:
    """The live simulator: a `Fleet` behind an MQTT client.

    Use `start()`, then `run(stop_event)` on one thread; `snapshot()` and `send_command()`
    may be called from any thread; `close()` publishes the offline status and disconnects.
    """

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.topics = Topics(config.prefix)
        rng = np.random.default_rng(config.seed)
        self.fleet = (
            PlantFleet(config.fleet, config.plant_config(), rng)
            if config.realism == "plant"
            else Fleet(config.fleet, rng)
        )
        self._window_topics = [self.topics.window(mid) for mid in self.fleet.ids]
        # per-signal mode: a signals file per machine type played, or none
        self._signals = [
            _SignalPlan.of(signals, self.fleet, config.fleet.window_length)
            for signals in config.signal_maps().values()
        ]
        if self._signals and self.fleet.label_fraction:
            log.info(
                "per-signal readings carry no ground truth (label fraction %g ignored); press l "
                "or run `python -m jetson_trainer label` to send maintenance labels",
                self.fleet.label_fraction,
            )
            self.fleet.label_fraction = 0.0
        self._status_topic = self.topics.status(config.node)
        self._inbox: queue.Queue[Command] = queue.Queue(maxsize=INBOX_SIZE)
        self._lock = threading.Lock()  # guards fleet reads from other threads and counters
        self._technician_on = False  # key l: label events follow the machines' true states
        self.answerer = (  # --answer-label-requests: label what a node asks for (answers.py)
            RequestAnswerer(config.label_answer_delay_s, source=config.node)
            if config.answer_label_requests
            else None
        )
        self._labeled_states: dict[str, str] = {}  # machine → class of its last label event
        self.labels_events = 0
        self._connected = threading.Event()
        self._errors: dict[str, int] = {}
        self._control_ok = 0
        self._control_rejected = 0
        self._published = np.zeros(len(self.fleet.ids), dtype=np.int64)
        self._rates = np.zeros(len(self.fleet.ids), dtype=np.float64)
        self._late_ticks = 0
        self._started = time.monotonic()
        self._last_event = ""
        self._client: mqtt.Client | None = None
        self._link: ConnectionWatch | None = None  # connected? refused, and why?
        self._closing = False
        self._faults = Faults(log)
        # the threads the simulator cannot go on without (paho's), and how it ends when one dies
        self._dog = Watchdog("the simulator", self._degraded, log=log)

    # ---- paho thread: flags, counters and a hand-off, nothing heavy -------------------------
    def _on_connect(
        self,
        client: Client,
        userdata: Any,
        flags: ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        if reason.is_failure:  # self._link logged why and which settings to check
            return
        client.subscribe(self.topics.sim_control, qos=1)
        if self.answerer is not None:
            client.subscribe(
                [
                    (self.topics.all_label_requests(), 1),
                    (self.topics.legacy_label_requests, 1),  # nodes of before per-node topics
                ]
            )
        self._connected.set()
        log.info(
            "connected to %s; listening for commands on %s",
            self.config.broker,
            self.topics.sim_control,
        )
        self._publish_status()

    def _on_disconnect(
        self,
        client: Client,
        userdata: Any,
        flags: DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        self._connected.clear()
        if self._closing:
            log.info("disconnected from %s", self.config.broker)
        else:
            log.warning("lost the broker %s (%s); paho reconnects", self.config.broker, reason)

    def _on_message(self, client: Client, userdata: Any, msg: Message) -> None:
        asker = self.topics.node_of_label_requests(msg.topic)
        if self.answerer is not None and asker is not None:
            self.answerer.submit(msg.payload, time.monotonic(), asker or None)  # the loop answers
            return
        try:
            cmd = Command.from_json(msg.payload)
            self._inbox.put_nowait(cmd)
        except PayloadError as exc:
            self._reject(exc.kind, f"rejected control message on {msg.topic}: {exc}")
        except queue.Full:
            self._reject("queue_full", f"control inbox full ({INBOX_SIZE}); dropped a command")

    def _reject(self, kind: str, message: str) -> None:
        log.warning("%s", message)
        with self._lock:
            self._control_rejected += 1
            self._errors[kind] = self._errors.get(kind, 0) + 1
            self._last_event = message

    def _count_error(self, kind: str, n: int = 1) -> None:
        with self._lock:
            self._errors[kind] = self._errors.get(kind, 0) + n

    # ---- lifecycle ---------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> Simulator:
        """Connect (in the background) with a retained offline Last Will."""
        client_id = f"{self.config.node}-{os.getpid()}-{id(self) & 0xFFFF:04x}"
        will = Status.offline(self.config.node, ROLE, __version__).to_json()
        credentials = self.config.credentials()  # ConfigError before anything starts
        client = make_client(client_id, will_topic=self._status_topic, will_payload=will)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        guard_client(client, self._faults, "sim-mqtt")
        self._client = client
        self._link = connect(client, self.config.broker, credentials=credentials)
        start_loop(client)
        self._dog.threads.add_paho(client, "sim-mqtt")
        return self

    def wait_connected(self, timeout: float | None = None) -> None:
        timeout = self.config.connect_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while not self._connected.wait(min(0.1, max(0.0, deadline - time.monotonic()))):
            link = self._link
            failure = link.failure() if link is not None else None
            if failure is not None:  # refused: credentials, ACL or TLS; retrying cannot help
                raise SimError(str(failure), kind="refused")
            if time.monotonic() >= deadline:
                raise SimError(
                    f"could not connect to the MQTT broker at {self.config.broker} within "
                    f"{timeout:g} s ({link.state if link else 'not started'}); is it running? "
                    "(`python -m scripts.broker` starts one) or pass --broker HOST:PORT",
                    kind="connect",
                )

    def close(self) -> None:
        """Publish the retained offline status and disconnect (the will is for crashes)."""
        client, self._client = self._client, None
        if client is None:
            return
        self._closing = True
        if self.connected and not self._dead:  # a degraded status stays: it says why
            offline = Status.offline(self.config.node, ROLE, __version__).to_json()
            info = client.publish(self._status_topic, offline, qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=2.0)
            except (RuntimeError, ValueError) as exc:
                log.warning("offline status not delivered: %s", exc)
        client.disconnect()
        client.loop_stop()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- status and snapshots --------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        with self._lock:
            rows = tuple(
                MachineRow(
                    m.id,
                    m.state_name,
                    m.drift.describe(),
                    float(self._rates[i]),
                    self.fleet.labels_sent[m.id],
                    tuple(m.sim_type.kind.classes[f] for f in m.faults),
                )
                for i, m in enumerate(self.fleet.machines)
            )
            return Snapshot(
                broker=self.config.broker,
                connected=self.connected,
                machines=rows,
                target_hz=self.config.hz,
                label_fraction=self.fleet.label_fraction,
                windows_total=int(self._published.sum()),
                control_ok=self._control_ok,
                control_rejected=self._control_rejected,
                errors=dict(self._errors),
                late_ticks=self._late_ticks,
                uptime_s=time.monotonic() - self._started,
                prefix=self.config.prefix,
                last_event=self._last_event,
            )

    def status(self) -> Status:
        snap = self.snapshot()
        drifts = {row.drift for row in snap.machines}
        errors = dict(snap.errors)
        errors.update((f"fault:{kind}", n) for kind, n in self._faults.counts().items())
        machines = SimMachines(
            {m.machine: SimMachine(m.state, clip_text(m.drift), m.labels) for m in snap.machines}
        )
        detail: dict[str, Any] = {  # the typed parts: protocol.status_detail
            "v": DETAIL_VERSION,
            SimMachines.KEY: machines.to_json_obj(),
        }
        if self._dead:
            detail["dead_threads"] = list(self._dead)
        if self.answerer is not None:  # --answer-label-requests: requests, windows answered
            detail["label_answers"] = dict(self.answerer.counts)
        return Status(
            node=self.config.node,
            role=ROLE,
            state=DEGRADED if self._dead else "online",
            software_version=__version__,
            timestamp=time.time(),
            metrics={
                "windows_per_s": round(snap.total_rate, 2),
                "windows_total": float(snap.windows_total),
                "machines": float(len(snap.machines)),
                "hz": self.config.hz,
                "label_fraction": snap.label_fraction,
                "control_ok": float(snap.control_ok),
                "control_rejected": float(snap.control_rejected),
                "late_ticks": float(snap.late_ticks),
                "uptime_s": round(snap.uptime_s, 1),
            },
            errors=errors,
            drift=drifts.pop() if len(drifts) == 1 else "mixed",
            detail=detail,
        )

    def _publish_status(self) -> None:
        client = self._client
        if client is not None and self.connected:
            client.publish(self._status_topic, self.status().to_json(), qos=1, retain=True)

    @property
    def _dead(self) -> tuple[str, ...]:
        return self._dog.dead

    def _degraded(self, dead: tuple[str, ...]) -> None:
        client = self._client
        if client is not None and self.connected:
            publish_retained(client, self._status_topic, self.status().to_json())

    def _check_alive(self) -> None:
        """A thread the simulator needs died (paho's): go degraded and stop with an error."""
        if self._dog.check(stopping=self._closing):
            raise SimError(
                "the MQTT network thread died (degraded); restart the simulator", kind="degraded"
            )

    def send_command(self, cmd: Command) -> None:
        """Apply `cmd` (a dashboard key) to this simulator, the way a received one is applied.

        Not over MQTT: in the secure profile a sensor may not publish on sim/control (only an
        operator may), and the keys act on this simulator only.
        """
        try:
            self._inbox.put_nowait(cmd)
        except queue.Full:
            self._reject("queue_full", f"control inbox full ({INBOX_SIZE}); dropped a key")

    def technician(self, on: bool | None = None) -> bool:
        """Switch the technician on (or off; None toggles) and return the new setting.

        On, the simulator publishes a maintenance label event (protocol.labels, QoS 1 on
        `{prefix}/labels`) per machine with its true class from its next window on, until
        further notice, and a new one whenever a machine's true state changes (which ends the
        previous one): what a plant without in-band labels has (`--label-fraction 0`,
        `--signals`). In the secure profile a sensor may not publish labels (the operator's
        role does): the broker refuses them and pi_edge never sees them.
        """
        with self._lock:
            self._technician_on = not self._technician_on if on is None else on
            self._labeled_states.clear()
            state = self._technician_on
        log.info("technician %s: label events on %s", "on" if state else "off", self.topics.labels)
        return state

    def _technician_step(self, client: mqtt.Client, windows: list[Window]) -> None:
        """Label each machine whose true state changed since it was last labeled (the windows
        carry it; their time is the label's start)."""
        from protocol.labels import LabelEvent

        labeled = self._labeled_states
        for window, machine in zip(windows, self.fleet.machines, strict=True):
            cls = machine.state_name
            if labeled.get(window.machine) == cls:
                continue
            event = LabelEvent(
                window.machine, cls, window.timestamp_ns / 1e9, source=f"{self.config.node}"
            )
            if client.publish(self.topics.labels, event.to_json(), qos=1).rc in (0, 4):
                labeled[window.machine] = cls  # 4: not connected, paho sends it on reconnect
                self.labels_events += 1
            else:
                self._count_error("label_publish_failed")

    def _answer_requests(self, client: mqtt.Client, windows: list[Window]) -> None:
        """`--answer-label-requests`: remember the true class of the windows of this tick, and
        publish the answers to label requests whose delay has passed (QoS 1, `…/labels`)."""
        answerer = self.answerer
        assert answerer is not None
        answerer.remember(windows, [m.state_name for m in self.fleet.machines])
        for event in answerer.due(time.monotonic()):
            if client.publish(self.topics.labels, event.to_json(), qos=1).rc in (0, 4):
                self.labels_events += 1
            else:
                self._count_error("label_publish_failed")

    def _plant_labels(self, client: mqtt.Client) -> None:
        """`--realism plant`: publish the late label events that fell due (QoS 1, `…/labels`)."""
        if not isinstance(self.fleet, PlantFleet):
            return
        for event in self.fleet.due_label_events():
            if client.publish(self.topics.labels, event.to_json(), qos=1).rc not in (0, 4):
                self._count_error("label_publish_failed")

    # ---- the loop ----------------------------------------------------------------------------
    def _apply_pending(self) -> None:
        while True:
            try:
                cmd = self._inbox.get_nowait()
            except queue.Empty:
                return
            changed = None
            with self._faults.loop("sim-control"):  # a command must not stop the publishing
                try:
                    with self._lock:
                        changed = self.fleet.apply(cmd)
                except SimError as exc:
                    self._reject(
                        exc.kind, f"rejected control command {cmd.to_json().decode()}: {exc}"
                    )
            if changed is None:
                continue
            text = cmd.to_json().decode()
            with self._lock:
                self._control_ok += 1
                self._last_event = f"applied {text}"
            log.info("applied control command %s to %d machine(s)", text, len(changed))

    def _wait_until(
        self, deadline: float, stop: threading.Event, on_idle: Callable[[], None] | None
    ) -> None:
        """Sleep until `deadline`, applying commands (and `on_idle`) every ≤ 0.1 s."""
        while True:
            self._apply_pending()
            if on_idle is not None:
                on_idle()
            remaining = deadline - time.monotonic()
            if remaining <= 0 or stop.is_set():
                return
            stop.wait(min(0.1, remaining))

    def _publish_tick(self, client: mqtt.Client, dt: float) -> Any:
        if self._signals:
            return self._publish_signals(client, dt, self._signals)
        with self._lock:
            windows = self.fleet.tick(dt, time.time_ns())
            self._plant_labels(client)
            if self._technician_on:
                self._technician_step(client, windows)
            if self.answerer is not None:
                self._answer_requests(client, windows)
        info = None
        failed = 0
        for i, window in enumerate(windows):
            info = client.publish(self._window_topics[i], encode_window(window), qos=0)
            if info.rc:
                failed += 1
            else:
                self._published[i] += 1
        if failed:
            self._count_error("publish_failed", failed)
        return info

    def _publish_signals(self, client: mqtt.Client, dt: float, plans: list[_SignalPlan]) -> None:
        """One tick in per-signal mode: every machine's window as readings of its type's file,
        each type on its own grid, all in one write."""
        now = time.time()
        firsts = [plan.advance(now) for plan in plans]
        with self._lock:
            windows = self.fleet.tick(dt, slot_ns(firsts[0], plans[0].signals.sample_hz))
            self._plant_labels(client)
            if self._technician_on:
                self._technician_step(client, windows)
        items: list[tuple[str, bytes]] = []
        for plan, first in zip(plans, firsts, strict=True):
            for i, topics in plan.topics.items():
                items += signal_messages(plan.signals, topics, windows[i].data, first)
        if publish_many(client, items):
            self._published += 1
        else:
            self._count_error("publish_failed", len(windows))

    def run(
        self, stop: threading.Event | None = None, on_idle: Callable[[], None] | None = None
    ) -> RunReport:
        """Publish until `stop` is set or `duration_s` has passed; returns the achieved rate."""
        client = self._client
        if client is None:
            raise SimError("Simulator.run() before start(); use `with Simulator(cfg) as sim:`")
        stop = stop or threading.Event()
        self.wait_connected()
        cfg = self.config
        period = cfg.period_s
        start = time.monotonic()
        base, k = start, 0
        end = start + cfg.duration_s if cfg.duration_s > 0 else math.inf
        next_status = start + cfg.status_interval_s
        next_rate = start + cfg.rate_interval_s
        next_report = start + cfg.report_interval_s
        last_rate_t, last_counts = start, self._published.copy()
        first = int(self._published.sum())
        while not stop.is_set():
            now = time.monotonic()
            if now >= end:
                break
            if cfg.max_rate:
                self._apply_pending()
                if on_idle is not None and k % 64 == 0:
                    on_idle()
                info = self._publish_tick(client, period)
                k += 1
                if info is not None and k % cfg.backpressure_every == 0 and info.rc == 0:
                    info.wait_for_publish(timeout=1.0)
            else:
                deadline = base + k * period
                if now - deadline > cfg.max_lag_s:
                    skipped = int((now - deadline) / period)
                    with self._lock:
                        self._late_ticks += skipped
                    log.warning("fell %.2f s behind; skipping %d tick(s)", now - deadline, skipped)
                    base, k = now, 0
                    deadline = now
                self._wait_until(min(deadline, end), stop, on_idle)
                if stop.is_set() or time.monotonic() >= end:
                    break
                self._publish_tick(client, period)
                k += 1
            now = time.monotonic()
            if now >= next_rate:
                counts = self._published.copy()
                with self._lock:
                    self._rates = (counts - last_counts) / (now - last_rate_t)
                last_rate_t, last_counts = now, counts
                next_rate = now + cfg.rate_interval_s
            if now >= next_status:
                self._check_alive()
                self._publish_status()
                next_status = now + cfg.status_interval_s
            if now >= next_report:
                target = "max" if cfg.max_rate else f"{cfg.hz * len(self.fleet.ids):.0f}"
                log.info(
                    "publishing %.1f windows/s (target %s), %d total, late ticks %d",
                    float(self._rates.sum()),
                    target,
                    int(self._published.sum()),
                    self._late_ticks,
                )
                next_report = now + cfg.report_interval_s
        self._apply_pending()
        elapsed = time.monotonic() - start
        self._publish_status()
        report = RunReport(
            windows=int(self._published.sum()) - first,
            elapsed_s=elapsed,
            machines=len(self.fleet.ids),
            target_rate=None if cfg.max_rate else cfg.hz * len(self.fleet.ids),
            late_ticks=self._late_ticks,
            publish_failed=self._errors.get("publish_failed", 0),
        )
        log.info("%s", report.describe())
        return report


@dataclass
class _SignalPlan:
    """Per-signal mode, one machine type: its signals file, window length, its machines'
    topics (by fleet index) and the next window's first slot on its grid."""

    signals: SignalMap
    window_length: int
    topics: dict[int, list[str]]
    next_slot: int | None = None

    @classmethod
    def of(cls, signals: SignalMap, fleet: Fleet, seed_length: int) -> _SignalPlan:
        name = signals.machine_type or DEFAULT_TYPE_NAME
        kinds = [m.sim_type.kind for m in fleet.machines]
        mine = [i for i, kind in enumerate(kinds) if kind.name == name]
        length = seed_length if name == DEFAULT_TYPE_NAME else kinds[mine[0]].window_length
        n = len(signals.signals)
        topics = {i: [signals.topic(j, fleet.ids[i]) for j in range(n)] for i in mine}
        return cls(signals, length, topics)

    def advance(self, now_s: float) -> int:
        """The first slot of this tick's window: the first tick's is the last whole window
        before `now_s` on a boundary, every later one follows the last — unless that fell more
        than a window behind `now_s` (a type whose window is shorter than a tick: the fan's 128
        samples at 1000 Hz are 0.128 s, a tick at --hz 1 is 1 s), which skips ahead to the last
        whole window, so its readings' times stay those of the wall clock, not ever later.

        >>> from protocol.signals import SignalSpec
        >>> plan = _SignalPlan(SignalMap([SignalSpec("p/{machine}/t", "temperature")],
        ...     ("temperature",), sample_hz=1000.0), 128, {})
        >>> plan.advance(100.0), plan.advance(100.1), plan.advance(101.0)  # 6 windows behind
        (99840, 99968, 100864)
        """
        t = self.window_length
        latest = (math.floor(now_s * self.signals.sample_hz) // t - 1) * t
        if self.next_slot is None or self.next_slot < latest - t:
            self.next_slot = latest
        first = self.next_slot
        self.next_slot += t
        return first


def signal_messages(
    signals: SignalMap, topics: list[str], data: Any, first_slot: int
) -> list[tuple[str, bytes]]:
    """(topic, payload) of every reading of one window (T × C `data`), sample by sample.

    `topics[j]` is signal j's topic for the machine; slot `first_slot + r` holds row r.

    >>> import numpy as np
    >>> from protocol.signals import SignalSpec
    >>> m = SignalMap([SignalSpec("p/{machine}/t", "temperature", time="ts")], ("temperature",))
    >>> data = np.array([[20.5], [21.0]], np.float32)
    >>> for topic, payload in signal_messages(m, ["p/m01/t"], data, 1_700_000_000):
    ...     print(topic, payload.decode())
    p/m01/t {"ts":1700000000.0,"value":20.5}
    p/m01/t {"ts":1700000001.0,"value":21.0}
    """
    hz = signals.sample_hz
    columns = signals.channel_of
    rows = data.tolist()  # Python floats: the float32 values, exactly
    out = []
    for r, row in enumerate(rows):
        t_s = (first_slot + r) / hz
        for j, topic in enumerate(topics):
            out.append((topic, signals.encode(j, t_s, row[columns[j]])))
    return out


def send_command(
    broker: str,
    prefix: str,
    cmd: Command,
    timeout_s: float = 5.0,
    credentials: Credentials | None = None,
) -> None:
    """Publish one control command at QoS 1 and return once the broker took it (its PUBACK
    says so: in the secure profile only the operator's credentials may send control)."""
    topics = Topics(prefix)
    client = make_client(f"sim-cli-{os.getpid()}-{time.monotonic_ns() & 0xFFFF:04x}")
    guard_client(client, Faults(log), "sim-cli-mqtt")
    link = connect(client, broker, credentials=credentials and credentials.for_("cli"))
    start_loop(client)
    try:
        try:
            link.wait(timeout_s)
            sent = publish_confirmed(
                client, link, topics.sim_control, cmd.to_json(), timeout=timeout_s
            )
        except BrokerRefusedError as exc:
            raise SimError(str(exc), kind="refused") from exc
        except (RuntimeError, ValueError) as exc:
            raise SimError(f"control command not delivered to {broker}: {exc}", "publish") from exc
        if not sent:
            raise SimError(
                f"broker {broker} did not acknowledge the command within {timeout_s:g} s",
                kind="publish",
            )
        log.info("sent %s to %s", cmd.to_json().decode(), topics.sim_control)
    finally:
        client.disconnect()
        client.loop_stop()
