"""The running node: wires the parts together and owns the MQTT connection and the worker.

Threads and where their state lives:

    paho network thread   `_on_message`: decode a window and Inbox.put it (never blocks), or
                          hand a bundle (or an operator's rollback command) to the
                          ModelManager; publish status on (re)connect
    worker (here)         Inbox.get_batch → swap in a vetted model if one is pending (so a swap
                          falls between two batches) → one invoke per batch and machine type
                          (each type's windows with its own model) → report/outputs.py
                          turns it into payloads and history rows → one paho hand-over
                          (`publish_many`)
    edge-models           ModelManager (model/lifecycle.py): vet, store, hand over, see rollbacks;
                          one per machine type the node serves (`edge-models-<type>` for a
                          type other than `default`; model/machine_types.py)
    edge-status (here)    publish the retained status every `status_interval_s`
    edge-shipper          BatchShipper (loop/shipper.py), on its own MQTT connection
    edge-history          HistoryRecorder (report/history_writer.py)
    edge-sparkplug        SparkplugNode (report/sparkplug.py, `--sparkplug`), on its own MQTT
                          connection

No thread dies quietly: every paho callback is wrapped by `nodekit.guard` and every loop has
the last-resort handler at its outermost frame, so an unexpected exception is logged once per
kind, counted (status `errors` "fault:<where>:<Type>", metric "faults") and the thread goes on.
If a thread dies anyway, `watchdog()` (the status thread, and `pi_edge run`'s main thread)
notices: the node publishes a retained status "degraded" naming the dead threads, and `run`
stops and exits 1 so that a service manager restarts it.

Per-machine state is capped at `max_machines`: intake/machine_cap.py's MachineTracker (kept by
telemetry) picks the least recently seen machine, and every per-machine structure forgets it
(telemetry, drift detectors, keeper rate limits, prediction topics, debounced machine states).

With `--fleet GROUP` (intake/ownership.py, protocol/fleet.py) the node also hears every node's
status: the paho thread keeps the group's live members and drops, before decoding, each window or
reading of a machine another member owns (status `fleet_skipped`); machines it gives away when a
member joins are forgotten by the worker through the same path as the cap's evictions (`_forget`).

Figures (rates, latencies, error counts) live in NodeTelemetry (report/telemetry.py); the closed
loop in DriftWatch (loop/drift_watch.py: drift verdicts, one per machine type), KeptWindows
(loop/kept_windows.py: kept windows of every type, their durable buffer and the shipper) and one
LaneLoop per machine type served (loop/lane_loop.py: its maintenance labels, kept windows, accuracy
estimate and label requests, in its class names); the prediction history in HistoryRecorder.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from nodekit.errors import BrokerRefusedError
from nodekit.guard import Faults, ThreadWatch, guard_client, publish_retained
from nodekit.lifecycle import DEGRADED, Loop, Watchdog
from nodekit.mqtt import ConnectionWatch, connect, make_client, publish_many, start_loop
from nodekit.storage import WriteFailures
from protocol import Manifest, PayloadError, Status, Window, decode_any, encode_window
from protocol.fleet import FLEET_DETAIL, fleet_view
from protocol.labels import LabelEvent
from protocol.machine_state import MachineState
from protocol.machine_type import DEFAULT_TYPE_NAME
from protocol.node_command import NodeCommand
from protocol.status_detail import (
    TYPES_DETAIL_VERSION,
    DriftDetail,
    RolloutGroup,
    TypeLoops,
    TypeModel,
    TypeModels,
)

from . import __version__
from .config import EdgeConfig
from .errors import EdgeError, ModelError
from .intake.assembler import PROBLEMS
from .intake.inbox import Inbox
from .intake.ownership import Change as FleetChange
from .intake.sources import PROBLEMS as SOURCE_PROBLEMS
from .loop.accuracy_estimate import AccuracyEstimator
from .loop.label_requests import LabelAsker
from .loop.maintenance_labels import Labeler
from .loop.served_batch import serve_batch
from .model.machine_types import Lanes, TypeLane
from .report.dashboard import Snapshot
from .report.debounce import Change
from .report.history_writer import HistoryRecorder
from .report.outputs import Clock, batch_outputs
from .report.telemetry import NodeTelemetry, Queue

if TYPE_CHECKING:
    from nodekit.metrics_server import MetricsServer
    from nodekit.mqtt import Client, ConnectFlags, DisconnectFlags, Message, Properties, ReasonCode

    from .intake.sources import SourceRunner

log = logging.getLogger(__name__)

ROLE = "edge"
_NO_CONN = 4  # paho MQTT_ERR_NO_CONN: a QoS 1 message waits for the reconnect
_CLEARED_LOG_EVERY_S = 60.0  # a log line about cleared retained topics at most this often
FLEET_KEEPALIVE_S = 5  # MQTT keepalive of a fleet member: its Will comes ≤ 7.5 s after a crash
SPREAD_EVERY_S = 2.0  # how often the batch gather follows the types with traffic


@dataclass(frozen=True, slots=True)
class _Item:
    window: Window
    received_ns: int
    lane: TypeLane | None = None  # its machine type's lane (None: the node's first)


class EdgeService:
    """One pi_edge node. `start()`, then `stop()`; `snapshot()`/`status()` from any thread."""

    def __init__(self, config: EdgeConfig, *, public_key: bytes | tuple[bytes, ...] | None) -> None:
        self.config = config
        self.topics = config.topics
        basics = config.basics()  # reads the password file: ConfigError now
        intake, models, loop, report = config.intake, config.models, config.loop, config.report
        self.policy = intake.batch_policy()
        self._base_policy = self.policy  # spread over the types with traffic (_spread_batches)
        self._lane_windows: dict[str, int] = {}
        self._spread_at = 0.0
        self.inbox: Inbox[_Item] = intake.inbox()
        self._input_shape = (models.window_length, len(models.channels))
        self._machine_type = models.machine_type
        self._stop = threading.Event()
        self._status_now = threading.Event()  # publish the status now (it was overwritten)
        self._own_heard = False  # paho's: its own status came back since the last connect
        self.faults = Faults(log, report.log_interval_s)
        # the threads this node cannot go on without, and how it ends when one dies
        self._dog = Watchdog(f"pi_edge node {config.node}", self._degraded, log=log)
        self._allowed = intake.allowed
        # --window-labels: whose in-band labels count (a login, the secure profile: none by
        # default); the others are dropped at intake, before anything keeps or ships them
        tls_or_user = basics.credentials.username is not None or basics.credentials.tls is not None
        self._label_trust = intake.label_trust(logged_in=tls_or_user)
        trust = self._label_trust
        self._label_trust_text = (
            ("every machine" if trust else "no machine")
            if isinstance(trust, bool)
            else ", ".join(sorted(trust))
        )
        # --fleet GROUP: this node's share of the machines (intake/ownership.py)
        self.fleet = intake.ownership(config.node, self._fleet_changed)
        self._fleet_lost: list[tuple[int, list[str]]] = []  # the worker's: (barrier, machines)
        self._status_every = (  # a fleet member's status is its heartbeat: ≥ 3 per timeout
            min(report.status_interval_s, intake.fleet_timeout_s / 3)
            if self.fleet is not None
            else report.status_interval_s
        )
        status_x = self.topics.status("x")  # …/nodes/x/status: what surrounds a node id
        cut = status_x.rindex("/x/")
        self._status_head, self._status_tail = status_x[: cut + 1], status_x[cut + 2 :]
        self.telemetry = NodeTelemetry(
            config.node, ROLE, __version__, report.log_interval_s, max_machines=intake.max_machines
        )
        self._topics_by_machine: dict[str, str] = {}  # the worker's own cache
        # each machine's last published state (worker's; bounded by the machine cap like every
        # per-machine structure): a change of its drift level publishes it again
        self._published_states: dict[str, MachineState] = {}
        self.retained_cleared = 0  # retained topics cleared for machines evicted or given away
        self._cleared_logged = float("-inf")
        self._command_topic = self.topics.node_command(config.node)
        # Home Assistant discovery (report/home_assistant.py): configs per machine first seen
        self.ha = report.home_assistant(basics, config.prefix, __version__)
        self.machine_states = report.debouncer(normal=models.classes[0])
        self.broker_state = "not started"
        self.credentials = basics.credentials
        self.link: ConnectionWatch | None = None  # set by start(): connected, refused and why
        self.drift = loop.drift_watch()  # the serving model's drift detector
        self.write_failures = WriteFailures(log, config.state_dir)  # buffer and history writes
        self.history = HistoryRecorder.open(config.state_dir, self.write_failures, self.faults)
        # the machine types this node serves (model/machine_types.py): one model lifecycle,
        # interpreter, drift watch, model topic and closed loop each; the first is the primary
        served = models.served()
        try:  # kept windows for the trainer: keeper, a durable buffer per type, the shipper
            self.kept = loop.kept_windows(
                basics,
                lambda: self.drift.model_version,
                self.write_failures,
                self.faults,
                self._type_version,
                tuple(kind.name for kind in served),
                self._type_classes,
            )
        except BaseException:
            self.history.history.close()
            raise
        # --signals: readings → windows, an assembler per machine type (intake/signal_types.py)
        self.signal_intake = intake.signal_intake(config.signal_plans(), self._signal_problem)
        self._signals_lock = threading.Lock()  # paho's thread feeds, the worker forgets
        self.sources: SourceRunner | None = None  # [[opcua]]/[[modbus]]: the edge-sources thread
        fed = [] if self.signal_intake is None else self.signal_intake.with_sources()
        if fed:
            from .intake.sources import SourceRunner  # asyncio: only with plant sources

            self.sources = SourceRunner(
                [(signals, functools.partial(self._on_source_reading, k)) for k, signals in fed],
                self._signal_problem,
                self.faults,
            )
        lanes: list[TypeLane] = []
        for i, kind in enumerate(served):
            lanes.append(
                TypeLane(
                    kind,
                    models.manager(
                        basics,
                        public_key=public_key,
                        site=config.prefix,
                        policy=self.policy,
                        disk_poll_s=report.status_interval_s,
                        on_pending=self.inbox.wake,
                        on_refused=self.telemetry.count_error,
                        on_install=functools.partial(self._model_installed, i),
                        faults=self.faults,
                        served=kind,
                    ),
                    self.drift if i == 0 else loop.drift_watch(),
                    self._model_topics_of(kind.name, models.rollout_group),
                )
            )
        # the built-in type alone without a site file: every machine is its, as before types
        self._single = (
            len(served) == 1 and served[0].name == DEFAULT_TYPE_NAME and models.site is None
        )
        self.lanes = Lanes(lanes, route_all=self._single, sort_ties=models.site is None)
        self._lane_named = {lane.name: lane for lane in lanes}
        self.models = lanes[0].manager  # the primary: status model_version, node commands
        self._by_model_topic = {
            topic: (lane, source) for lane in lanes for topic, source in lane.model_topics
        }
        self._typed = [lane.name for lane in lanes] != [DEFAULT_TYPE_NAME]  # detail v 2
        # each type's closed loop (loop/lane_loop.py): labels, kept windows, estimate, requests
        self.lane_loops = {
            lane.name: loop.lane_loop(
                lane.name,
                self._machine_type if lane.name == DEFAULT_TYPE_NAME else lane.machine_type,
                basics.state_dir
                if lane.name == DEFAULT_TYPE_NAME
                else basics.state_dir / "types" / lane.name,
                self.kept,
                lane.drift,
            )
            for lane in lanes
        }
        for lane in lanes:  # a type's classes as its closed loop keeps them (new names too)
            if lane.name != DEFAULT_TYPE_NAME and lane.machine_type is not None:
                lane.machine_type = self.lane_loops[lane.name].kind or lane.machine_type
        self._primary_loop = self.lane_loops[lanes[0].name]
        self._client: Client | None = None
        self._loops = (  # this node's own threads (the parts start theirs)
            Loop("edge-worker", self._worker, wake=self.inbox.wake),
            Loop("edge-status", self._status_loop),
        )
        self.metrics: MetricsServer | None = None  # /metrics, if --metrics-port
        self.sparkplug = report.sparkplug_node(  # --sparkplug GROUP, on its own connection
            basics,
            normal=models.classes[0],
            version=__version__,
            model_version=lambda: self.models.version,
            faults=self.faults,
            count_error=self.telemetry.count_error,
        )

    def _model_topics_of(self, machine_type: str, group: str | None) -> list[tuple[str, str]]:
        """(topic, source) of a type's retained models: model/current for the built-in type (as
        before machine types), types/{type}/model/current for another; and with
        --rollout-group the group's offers of it, where new versions come first."""
        if machine_type == DEFAULT_TYPE_NAME:
            out = [(self.topics.model_current, "mqtt")]
            if group:
                out.append((self.topics.model_group(group), f"mqtt group {group}"))
            return out
        out = [(self.topics.model_of(machine_type), f"mqtt type {machine_type}")]
        if group:
            topic = self.topics.model_group_of(machine_type, group)
            out.append((topic, f"mqtt type {machine_type} group {group}"))
        return out

    def _model_installed(self, index: int, manifest: Manifest) -> None:
        """A lane's model serves now (worker, or start): its drift detector starts over, it
        takes the model's vocabulary, and machines are routed afresh."""
        lane = self.lanes.lanes[index]
        lane.drift.model_changed(manifest)
        lane.learn(manifest)
        if lane.name != DEFAULT_TYPE_NAME:  # the built-in type keeps the node's vocabulary
            # its class table: the model's new names after the ones its labels index already
            lane.machine_type = self.lane_loops[lane.name].learn(lane.machine_type)
        self.lanes.changed()

    def _type_classes(self, machine_type: str) -> tuple[str, ...] | None:
        """The class table `machine_type`'s kept labels index, when its drift batches must name
        it (version 3: not the type's declared list); the shipper's thread."""
        lane_loop = self.lane_loops.get(machine_type)
        return None if lane_loop is None else lane_loop.wire_classes()

    def _type_version(self, machine_type: str) -> int | None:
        """The model version serving `machine_type` (its kept windows' drift batches)."""
        lane = next((each for each in self.lanes.lanes if each.name == machine_type), None)
        return None if lane is None else lane.drift.model_version

    # the primary type's loop, as before machine types (tests and the dashboard read them)
    @property
    def labeler(self) -> Labeler:
        """The first type's maintenance labels."""
        labeler = self._primary_loop.labeler
        if labeler is None:
            raise EdgeError(f"machine type {self._primary_loop.name} has no classes yet")
        return labeler

    @property
    def estimator(self) -> AccuracyEstimator:
        """The first type's label-free accuracy estimate."""
        return self._primary_loop.estimator

    @property
    def asker(self) -> LabelAsker:
        """The first type's label requests."""
        return self._primary_loop.asker

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> EdgeService:
        """Load the startup model, connect in the background and start the threads."""
        self._start_metrics()  # first: a port in use fails before anything else has started
        self.models.load_startup(self.config.models.model)  # --model: the first type's
        for lane in self.lanes.lanes[1:]:
            lane.manager.load_startup(None)
        will = Status.offline(self.config.node, ROLE, __version__).to_json()
        client = make_client(
            self.config.node, will_topic=self.topics.status(self.config.node), will_payload=will
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        guard_client(client, self.faults, "edge-mqtt")
        self._client = client
        for lane in self.lanes.lanes:
            lane.manager.start().watch(self.watch)
        for loop in self._loops:
            loop.start().watch(self.watch)
        self.broker_state = "connecting"
        self.kept.start().watch(self.watch)
        self.history.start().watch(self.watch)
        try:
            self.link = connect(
                client,
                self.config.broker,
                credentials=self.credentials,
                # a fleet member killed outright: the broker sends its Will after 1.5 × this
                keepalive=FLEET_KEEPALIVE_S if self.fleet is not None else 15,
            )
        except ValueError as exc:
            raise EdgeError(f"broker address: {exc}") from exc
        start_loop(client)
        self.watch.add_paho(client, "edge-mqtt")
        if self.sparkplug is not None:
            self.sparkplug.start().watch(self.watch)
        if self.sources is not None:  # readings before the broker is up are classified too
            self.sources.start().watch(self.watch)
        log.info(
            "pi_edge %s node %s connecting to %s", __version__, self.config.node, self.config.broker
        )
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Publish a retained offline (or degraded) status, disconnect, join the threads.

        A degraded node leaves its degraded status retained, so that an operator sees why.
        """
        self._stop.set()
        self._status_now.set()
        self.inbox.wake()
        for lane in self.lanes.lanes:
            lane.manager.stop(timeout)
        client = self._client
        if client is not None:
            with self._dog.lock:  # not at the same time as the watchdog's degraded status
                last = (
                    self.status()
                    if self.dead_threads
                    else Status.offline(self.config.node, ROLE, __version__)
                )
                if self.broker_state == "connected" and not self._publish_retained(last.to_json()):
                    log.warning("could not publish the %s status before disconnecting", last.state)
            client.disconnect()
            client.loop_stop()
        if self.sources is not None:
            self.sources.stop(timeout)
        for loop in self._loops:
            loop.stop(timeout)
        if self.sparkplug is not None:  # after the worker: its NDEATH is the last word
            self.sparkplug.stop(timeout)
        self.history.close()
        self.kept.stop()
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None

    def _start_metrics(self) -> None:
        """Serve /metrics if --metrics-port is set (prometheus-client is imported only then)."""
        port = self.config.report.metrics_port
        if port is None:
            return
        from nodekit.metrics_server import MetricsServer

        from .report.prometheus import edge_families

        self.metrics = MetricsServer(
            lambda: edge_families(self.status(), self.snapshot(), self.inbox.arrived),
            self.config.report.metrics_host,
            port,
            faults=self.faults,
            where="edge-metrics",
        )

    @property
    def metrics_port(self) -> int | None:
        """The bound /metrics port (the real one when --metrics-port 0), None when off."""
        return None if self.metrics is None else self.metrics.port

    def connection_failure(self) -> BrokerRefusedError | None:
        """Why the broker keeps refusing this node (bad credentials, ACL, TLS), once it has
        refused `ConnectionWatch.give_up_after` times in a row; `pi_edge run` exits with it."""
        spb = self.sparkplug.link if self.sparkplug is not None else None
        for link in (self.link, self.kept.shipper.link, spb):
            failure = link.failure() if link is not None else None
            if failure is not None:
                return failure
        return None

    def __enter__(self) -> EdgeService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ models
    @property
    def model_version(self) -> int | None:
        return self.models.version

    def wait_for_model(self, version: int | None = None, timeout: float = 10.0) -> bool:
        """Block until a model (of `version`, if given) is serving; False on timeout."""
        return self.models.wait_for(version, timeout)

    def submit_bundle(self, data: bytes, source: str = "mqtt") -> None:
        """Queue a bundle for vetting (latest wins); never blocks."""
        self.models.submit(data, source)

    # ------------------------------------------------------------------ MQTT callbacks
    def _on_connect(
        self,
        client: Client,
        userdata: Any,
        flags: ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        if getattr(reason_code, "is_failure", False):  # self.link logged why and what to check
            self.broker_state = self.link.state if self.link else f"refused ({reason_code})"
            return
        self.broker_state = "connected"
        self._own_heard = False
        if self.fleet is not None:  # first, in its own SUBSCRIBE: the retained statuses of
            # the group arrive before any window, so a joining node knows the others at once
            client.subscribe(self.topics.statuses(), qos=1)
        subs = (
            []  # republishing: it would hear its own windows again
            if self.config.intake.republish_windows
            else [
                (self.topics.windows(m, self.config.intake.shared_group), 0)
                for m in self.config.intake.machines
            ]
        )
        if self.signal_intake is not None:  # per-signal readings, QoS 0 like windows
            subs += [(f, 0) for f in self.signal_intake.filters()]
        # the key log in its own SUBSCRIBE, before the models: its retained records are
        # applied before a bundle signed by a new key is vetted (and such a bundle is vetted
        # again after a change of trust anyway, model/lifecycle.py)
        client.subscribe(self.topics.key_log, qos=1)
        for lane in self.lanes.lanes:  # each type's model topic(s); with --rollout-group the
            subs += [(topic, 1) for topic, _ in lane.model_topics]  # highest of both serves
        subs.append((self.topics.labels, 1))
        subs.append((self.topics.node_command(self.config.node), 1))  # operator: rollback
        if self.ha is not None:  # HA's birth message: re-publish the configs
            subs.append((self.ha.birth_topic, 1))
            subs.append((self.ha.legacy_filter, 1))  # its configs of before site-scoped ids
        client.subscribe(subs)
        self._publish_status()
        if self.ha is not None:
            self.ha.publish_node(client)
        log.info(
            "connected to %s; subscribed to %s", self.config.broker, ", ".join(t for t, _ in subs)
        )

    def _on_disconnect(
        self,
        client: Client,
        userdata: Any,
        flags: DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        if self._stop.is_set():
            self.broker_state = "disconnected"
            return
        self.broker_state = "reconnecting"
        version = self.models.version
        log.warning(
            "lost the broker %s (%s); reconnecting with backoff, still serving %s",
            self.config.broker,
            reason_code,
            "nothing" if version is None else f"v{version}",
        )

    def _on_message(self, client: Client, userdata: Any, msg: Message) -> None:
        received_ns = time.time_ns()
        topic = msg.topic
        model_topic = self._by_model_topic.get(topic)
        if model_topic is not None:  # a type's model: vetted by its lane, latest per topic kept
            if msg.payload:
                model_topic[0].manager.submit(msg.payload, model_topic[1])
            return
        if topic == self.topics.key_log:  # the trainer's key records: each type's model
            if msg.payload:  # thread applies them (an empty retained payload clears the topic)
                for each in self.lanes.lanes:
                    each.manager.submit_keys(msg.payload)
            return
        if topic == self._command_topic:  # an operator's rollback: the model thread does it
            self._on_node_command(msg.payload)
            return
        if topic == self.topics.labels:  # decoded here, applied by the worker
            try:
                self._submit_label(msg.payload)
            except PayloadError as exc:
                self._bad_payload(exc, topic, "label event")
            else:
                self.inbox.wake()
            return
        if self.ha is not None and topic == self.ha.birth_topic:
            self.ha.on_birth(bytes(msg.payload[:16]))  # sets a flag; the worker publishes
            return
        if self.ha is not None and self.ha.is_legacy(topic):  # remembered; the worker clears
            self.ha.on_legacy(topic, bytes(msg.payload))
            return
        if self.fleet is not None and topic.startswith(self._status_head):
            self._on_status(topic, msg.payload)
            return
        if self.signal_intake is not None and self._on_signal(topic, msg.payload, received_ns):
            return
        machine = self.topics.machine_of(topic)
        try:
            if machine is None:
                raise PayloadError(f"topic {topic!r} is not a machine window topic", "bad_topic")
            if self._allowed is not None and machine not in self._allowed:
                raise PayloadError(
                    f"machine {machine!r} is not in this node's --machines list", "not_allowed"
                )
            if self.fleet is not None and not self.fleet.owns(machine, time.monotonic()):
                return  # another member's machine: counted as skipped, not an error
            lane: TypeLane | None = None
            if self._single:
                window = self._machine_type.resolve(  # a label names one of the type's classes
                    decode_any(msg.payload, machine, self._input_shape)
                )
            else:
                lane = self._lane_of(machine)
                kind = lane.machine_type
                if kind is None or lane.manager.model is None:
                    lane.count_unclassified(1)  # no model of its type yet: not classified
                    return
                window = kind.resolve(decode_any(msg.payload, machine, kind.input_shape))
        except PayloadError as exc:
            self._bad_payload(exc, topic)
            return
        if window.label is not None and not self._label_trusted(machine):
            window = replace(window, label=None)  # drops its frame too: it carried the label
            self._untrusted_label(machine)
        self.inbox.put(_Item(window, received_ns, lane))

    def _lane_of(self, machine: str) -> TypeLane:
        """The lane of `machine`'s type; PayloadError `no_type` when this node serves none."""
        lane = self.lanes.route(machine)
        if lane is None:
            raise PayloadError(
                f"machine {machine!r} is of no machine type this node serves ("
                + ", ".join(lane.name for lane in self.lanes.lanes)
                + "); declare its type's members in the site file (--site)",
                "no_type",
            )
        return lane

    def _submit_label(self, payload: bytes) -> None:
        """A maintenance label event (paho's thread): to the loop of its machine's type, which
        refuses a class the type has not (PayloadError listing the type's classes)."""
        try:
            event = LabelEvent.from_json(payload)
            lane = self._lane_of(event.machine)
        except PayloadError:
            self._primary_loop.refuse()
            raise
        self.lane_loops[lane.name].submit(event)

    def _label_trusted(self, machine: str) -> bool:
        """Whether an in-band label of `machine`'s windows counts (`--window-labels`)."""
        trust = self._label_trust
        return trust if isinstance(trust, bool) else machine in trust

    def _untrusted_label(self, machine: str) -> None:
        n = self._primary_loop.untrusted()
        if n == 1 or n % 1000 == 0:
            log.warning(
                "dropped the in-band label of a window of %r (%d so far): this node takes "
                "in-band labels from %s only (--window-labels); the window is classified "
                "unlabeled, and a maintenance label on %s still labels it",
                machine[:80],
                n,
                self._label_trust_text,
                self.topics.labels,
            )

    def _on_node_command(self, payload: bytes) -> None:
        """A node command (protocol.node_command): decoded here, carried out off paho's thread.

        Only an addressed rollback (version 2: `from` and `id`) is acted on; a version 1 one
        is refused as unaddressed, a repeated id as a duplicate, and the model thread refuses
        one whose `from` the node no longer serves as stale: each does nothing, is counted
        (`errors.command_<result>`), logged and shown in `detail.commands`."""
        try:
            command = NodeCommand.from_json(payload)
        except PayloadError as exc:
            self._bad_payload(exc, self._command_topic, "node command")
            return
        if command.from_version is None or command.id is None:
            self.models.command_result(command.cmd, command.id, None, "unaddressed")
            return
        self.models.request_rollback(command.from_version, command.id)  # only "rollback"

    def _on_signal(self, topic: str, payload: bytes, received_ns: int) -> bool:
        """One per-signal reading (on paho's thread, cheap): parse it, feed its machine type's
        assembler, queue the windows it finished (and republish them). False if `topic` is no
        signal's; a reading whose machine is of another type than its file's is refused."""
        intake = self.signal_intake
        assert intake is not None
        try:
            found = intake.match(topic, self._signal_type_of())
            if found is None:
                return False
            k, machine, index = found
            if self._allowed is not None and machine not in self._allowed:
                raise PayloadError(
                    f"machine {machine[:80]!r} is not in this node's --machines list",
                    "not_allowed",
                )
            if self.fleet is not None and not self.fleet.owns(machine, time.monotonic()):
                return True  # another member's machine: its assembler has the reading
            t_s, value = intake.feeds[k].signals.parse(index, payload, received_ns / 1e9)
            with self._signals_lock:
                windows = intake.feed(k, machine, index, t_s, value)
        except PayloadError as exc:
            self._bad_payload(exc, topic, "signal reading")
            return True
        self._assembled(k, windows, received_ns)
        return True

    def _on_source_reading(
        self, k: int, machine: str, index: int, t_s: float, value: float
    ) -> None:
        """One OPC UA or Modbus reading of signals file k (on the edge-sources thread): exactly
        the path of an MQTT reading after its payload is parsed."""
        intake = self.signal_intake
        assert intake is not None
        received_ns = time.time_ns()
        try:
            if self._allowed is not None and machine not in self._allowed:
                raise PayloadError(
                    f"machine {machine[:80]!r} is not in this node's --machines list",
                    "not_allowed",
                )
            if self.fleet is not None and not self.fleet.owns(machine, time.monotonic()):
                return  # another member's machine (each member reads the sources itself)
            intake.check(k, machine, self._signal_type_of())
            with self._signals_lock:
                windows = intake.feed(k, machine, index, t_s, value)
        except PayloadError as exc:
            self._bad_payload(exc, f"source point of {machine[:80]!r}", "source reading")
            return
        self._assembled(k, windows, received_ns)

    def _signal_type_of(self) -> Callable[[str], str | None] | None:
        """A machine's type name for the signal intake (None: a node of the built-in type
        alone, whose every machine is its)."""
        return None if self._single else self._type_name_of

    def _type_name_of(self, machine: str) -> str | None:
        lane = self.lanes.route(machine)
        return None if lane is None else lane.name

    def _assembled(self, k: int, windows: list[Window], received_ns: int) -> None:
        """Windows the assembler of signals file k finished: to the worker with the lane of
        the file's machine type, whose shape they have (counted unclassified while the type
        has no model), and republished if asked."""
        lane = None
        if not self._single:
            assert self.signal_intake is not None
            lane = self._lane_named[self.signal_intake.feeds[k].name]
        for window in windows:
            if lane is not None and lane.manager.model is None:
                lane.count_unclassified(1)  # no model of its type yet: not classified
                continue
            self.inbox.put(_Item(window, received_ns, lane))
        if windows and self.config.intake.republish_windows:
            items = [(self.topics.window(w.machine), encode_window(w)) for w in windows]
            if (
                not publish_many(self._mqtt, items)
                and self.telemetry.count_error("republish_failed", len(items))[0]
            ):
                log.warning(
                    "could not republish %d assembled window(s): not connected to %s, or the "
                    "broker is not reading them (QoS 0)",
                    len(items),
                    self.config.broker,
                )

    def _on_status(self, topic: str, payload: bytes) -> None:
        """A node's status (or Will) while in a fleet: who of the group is live.

        Only a status whose topic is its payload's node and whose role is edge counts
        (`protocol.fleet.fleet_view`: the ACL lets a login write its own status topic only). A
        status on this node's own topic that is not what it publishes (a forged offline, another
        group, a cleared retained status) is answered by publishing its own status at once, so
        that the other members drop it for a moment at most."""
        fleet = self.fleet
        assert fleet is not None
        node = topic[len(self._status_head) : -len(self._status_tail)]
        if not node or "/" in node or not topic.endswith(self._status_tail):
            return  # not a status topic (the subscription is …/nodes/+/status)
        status = None
        if payload:
            try:
                status = Status.from_json(payload)
            except PayloadError as exc:
                self._bad_payload(exc, topic, "node status")
                return
        view = fleet_view(node, status, lambda exc: self._bad_payload(exc, topic, "node status"))
        if node == self.config.node:
            self._own_status_heard(view)
        if view is not None:
            fleet.observe(node, view[0], view[1], time.monotonic())

    def _own_status_heard(self, view: tuple[str, str | None] | None) -> None:
        """This node's own topic carried `view`: if it is not this node's (online, this group),
        someone wrote it; count it and have the status thread publish the real one now."""
        expected = (DEGRADED if self.dead_threads else "online", self.config.intake.fleet)
        if view == expected:
            self._own_heard = True
            return
        if not self._own_heard or self._stop.is_set():
            return  # its retained status of before the (re)connect, its Will: its own, older
        should_log, more = self.telemetry.count_error("status_overwritten")
        if should_log:
            log.warning(
                "this node's status topic says %s, which it did not publish; publishing its "
                "own status again%s",
                "something not its own" if view is None else f"{view[0]} (group {view[1]})",
                f" [{more} more not logged]" if more else "",
            )
        self._status_now.set()

    def _fleet_changed(self, change: FleetChange) -> None:
        """Members came or went (on paho's thread): log it; the worker forgets lost machines."""
        log.info("%s", change.describe())
        self.inbox.wake()

    def _signal_problem(self, kind: str, n: int) -> None:
        """The assembler's and the sources' problems (signal_late, signal_gap_dropped,
        source_bad_value, source_disconnected, …): counted, logged."""
        should_log, more = self.telemetry.count_error(kind, n)
        if should_log:
            log.warning(
                "signals: %s: %s%s",
                kind,
                PROBLEMS.get(kind) or SOURCE_PROBLEMS.get(kind, kind),
                f" [{more} more not logged]" if more else "",
            )

    def _bad_payload(self, exc: PayloadError, topic: str, what: str = "window") -> None:
        should_log, more = self.telemetry.count_error(exc.kind)
        if should_log:
            log.warning(
                "dropped a bad %s on %s (%s): %s%s",
                what,
                topic,
                exc.kind,
                exc,
                f" [{more} more not logged]" if more else "",
            )

    # ------------------------------------------------------------------ inference
    def _worker(self) -> None:
        guard = self.faults.loop("edge-worker", self._stop)  # the outermost frame
        while not self._stop.is_set():
            with guard:
                self._work_once()

    def _work_once(self) -> None:
        if self.ha is not None:  # after HA's birth message: every tracked machine's configs
            self.ha.pump(self._client, self._topics_by_machine)
        for lane_loop in self.lane_loops.values():  # label events: held windows they reach
            if lane_loop.pending():  # are kept again
                lane_loop.pump(time.time())
        if self._single and self.models.model is None:  # nothing to classify with: wait
            pending = self.models.take_pending()
            if pending is not None:
                self.models.install(*pending)
            else:
                self._stop.wait(0.1)
            return
        batch = self.inbox.get_batch(self.policy, timeout=0.2)
        for lane in self.lanes.lanes:  # a swap falls between two batches, for every type
            pending = lane.manager.take_pending()
            if pending is not None:
                lane.manager.install(*pending)
        if batch:
            if self._single:
                self._classify(batch, self.lanes.primary)
            else:
                self._classify_by_type(batch)
            self._ask_labels()
            self._spread_batches()
        if self.fleet is not None:
            self._forget_given_away()

    def _spread_batches(self) -> None:
        """Every 2 s: gather light-rate batches once per machine type that had windows since
        (intake/inbox.py, `BatchPolicy.spread_over`), so each type's invoke keeps its size."""
        now = time.monotonic()
        if now - self._spread_at < SPREAD_EVERY_S or len(self.lanes.lanes) < 2:
            return
        self._spread_at = now
        active = 0
        for lane in self.lanes.lanes:
            active += lane.windows != self._lane_windows.get(lane.name, 0)
            self._lane_windows[lane.name] = lane.windows
        self.policy = self._base_policy.spread_over(active)

    def _classify_by_type(self, batch: list[_Item]) -> None:
        """Classify a batch of several machine types: each type's windows with its model."""
        by_lane: dict[str, tuple[TypeLane, list[_Item]]] = {}
        for item in batch:
            lane = item.lane or self.lanes.primary
            by_lane.setdefault(lane.name, (lane, []))[1].append(item)
        for lane, items in by_lane.values():
            if lane.manager.model is None:  # cannot happen after intake's check; counted
                lane.count_unclassified(len(items))
                continue
            self._classify(items, lane)

    def _classify(self, batch: list[_Item], lane: TypeLane | None = None) -> None:
        """Classify windows of one machine type (`lane`, default: the node's first) with its
        serving model and publish; the type's closed loop (loop/lane_loop.py: maintenance
        labels, kept windows for the trainer, the accuracy estimate, held windows) takes its
        share."""
        lane = lane or self.lanes.primary
        model = lane.manager.model
        assert model is not None
        lane_loop = self.lane_loops[lane.name]
        start_ns = time.time_ns()
        originals = [item.window for item in batch]
        windows = lane_loop.label_new(originals)  # maintenance labels of open intervals
        x = np.stack([w.data for w in windows])
        try:
            probs = model.classifier.predict(x)
        except (RuntimeError, ValueError, ModelError) as exc:
            # the interpreter failed on this batch: count it, keep the worker alive
            should_log, _ = self.telemetry.count_error("inference_failed", len(batch))
            if should_log:
                log.error(
                    "inference failed on a batch of %d with model v%d: %s",
                    len(batch),
                    model.version,
                    exc,
                )
            return
        inferred_ns = time.time_ns()
        # labels as the model's outputs (an anomaly model's: healthy or `anomaly`)
        served = serve_batch(model, lane_loop.declared(model), lane.drift, windows, x, probs)
        top, verdicts, labels = served.top, served.verdicts, served.labels
        lane.manager.observe(model.version, probs, top, verdicts.flags == 1, labels)  # health
        lane.windows += len(windows)
        lane_loop.observe(model, windows, originals, served, probs, start_ns)
        out = batch_outputs(
            served.seen,
            [item.received_ns for item in batch],
            probs,
            top,
            verdicts,
            model.classes,
            model.version,
            Clock(start_ns, inferred_ns, time.time_ns()),  # the batch goes to paho at once
            self._prediction_topic,
            lane.wire_type,
        )
        failed = 0 if publish_many(self._mqtt, out.messages) else len(out.messages)
        debounce = self.machine_states.update  # per window a counter; a change is published
        states = self._published_states
        kind = None if lane.wire_type is None else (lane.wire_type, lane.normal)
        for row, item in zip(out.history, batch, strict=True):
            change = debounce(row.machine, row.label, row.confidence, item.received_ns / 1e9, kind)
            if change is not None:
                self._publish_change(change, row.drift, row.model_version)
            elif (last := states.get(row.machine)) is not None and last.drift != row.drift:
                self._publish_drift(last, row.drift, item.received_ns / 1e9)
        if self.sparkplug is not None:  # a dict update per window; its thread publishes
            normal = None if lane.wire_type is None else lane.normal
            self.sparkplug.observe(out.history, self.machine_states.current, normal)
        self.history.record(out.history)
        evicted = self.telemetry.add_batch(out.history, out.latencies_ms)
        if evicted:  # the machine cap: every per-machine structure forgets the same ids
            self._forget(evicted, evicted=True)
        if failed and self.telemetry.count_error("publish_failed", failed)[0]:
            log.warning(
                "dropped %d prediction(s): not connected to %s, or the broker is not reading "
                "them (QoS 0); classification goes on and status counts publish_failed",
                failed,
                self.config.broker,
            )

    def _ask_labels(self) -> None:
        """Ask for the labels of each type's held windows that would help most
        (loop/lane_loop.py), while it is unsure; one QoS 1 message on
        `…/labels/requests/{node}` per type that asks, within its budget."""
        now = time.time()
        topic = self.topics.label_requests(self.config.node)
        for lane in self.lanes.lanes:
            lane_loop, model = self.lane_loops[lane.name], lane.manager.model
            flagged = model is not None and model.anomaly is not None  # ask what it flags
            headed = model is not None and model.head is not None  # … what its head flags first
            message = lane_loop.requests(
                self.config.node, now, flagged_only=flagged, flagged_first=headed
            )
            if message is None:
                continue
            rc = self._mqtt.publish(topic, message.to_json(), qos=1).rc
            if rc not in (0, _NO_CONN) and self.telemetry.count_error("label_request_failed")[0]:
                log.warning("could not queue a label request for the broker (paho rc %s)", rc)
                continue
            log.info(
                "asked for the labels of %d window(s) of type %s on %s: %s",
                len(message.requests),
                lane_loop.name,
                topic,
                ", ".join(
                    f"{r.machine}#{r.seq} ({r.predicted} {r.confidence:.2f})"
                    for r in message.requests
                ),
            )

    def _forget_given_away(self) -> None:
        """Forget the machines another fleet member took, once the windows of theirs that were
        queued before the move are classified (the inbox is FIFO: once as many items have left
        it as had arrived when the move was seen, they have)."""
        fleet = self.fleet
        assert fleet is not None
        lost = fleet.take_lost()
        pending = self._fleet_lost
        if lost:
            pending.append((self.inbox.arrived, lost))
        gone = self.inbox.arrived - len(self.inbox)  # arrived read first: a lower bound
        while pending and pending[0][0] <= gone:
            machines = [m for m in pending.pop(0)[1] if not fleet.owned(m)]  # not won back
            if machines:
                self.telemetry.forget(machines)
                self._forget(machines, evicted=False)

    def _forget(self, machines: list[str], *, evicted: bool) -> None:
        """Every per-machine structure forgets `machines` (`evicted` by the machine cap, or
        given to another fleet member); telemetry has forgotten them already. The retained
        topics this node owns for them are cleared first (`_clear_retained`)."""
        self._clear_retained(machines, evicted)
        for lane in self.lanes.lanes:
            lane.drift.forget(machines)
        self.kept.forget(machines)
        self.machine_states.forget(machines)
        for machine in machines:
            self._published_states.pop(machine, None)
        if self.signal_intake is not None:
            with self._signals_lock:
                self.signal_intake.forget(machines)
        for lane_loop in self.lane_loops.values():
            lane_loop.forget(machines)
        if self.sparkplug is not None:
            self.sparkplug.forget(machines)
        for machine in machines:
            self._topics_by_machine.pop(machine, None)

    def _clear_retained(self, machines: list[str], evicted: bool) -> None:
        """Clear the retained topics this node owns for `machines` (empty retained payloads,
        QoS 1, on the connection that published them, so a machine seen again is published
        after its clearing): their Home Assistant configs (published when the machine was
        first seen; HA removes the entities), and this node's own `machines/<m>/state/<node>`
        (cleared whether or not this run published one: an older run's may be there); a fleet
        member that takes a machine keeps its state on its own topic. Sparkplug's
        DDEATH comes from `sparkplug.forget`. Bounded like everything per machine: at most
        `max_machines` machines hold retained topics of this node (1 + 4 with HA discovery),
        and each clearing follows a window that made room."""
        client = self._client
        if client is None:
            return
        cleared = 0
        for machine in machines:
            if self.ha is not None and machine in self._topics_by_machine:
                cleared += self.ha.machine_gone(client, machine)
            # evicted or given away: this node's own state topic of it goes (a new owner
            # keeps the machine's state on its own topic)
            self._publish_state(self._state_topic(machine), b"", True)
            cleared += 1
        self.retained_cleared += cleared
        now = time.monotonic()
        if cleared and now - self._cleared_logged >= _CLEARED_LOG_EVERY_S:
            self._cleared_logged = now
            log.info(
                "cleared %d retained topic(s) of %d machine(s) %s (%d so far): machine states "
                "and Home Assistant configs this node no longer serves",
                cleared,
                len(machines),
                "evicted by the machine cap" if evicted else "given to another fleet member",
                self.retained_cleared,
            )

    def _publish_change(self, change: Change, drift: str, model_version: int) -> None:
        """Publish `change`: the machine's retained state, then its event (both QoS 1).

        Disconnected, paho keeps QoS 1 messages for the reconnect; changes need `state_windows`
        windows each, and windows stop with the broker, so what waits is bounded by the inbox.
        """
        state, event = change.messages(self.config.node, drift, model_version)
        out = [(self._state_topic(change.machine), state.to_json(), True)]
        if event is not None:
            out.append((self.topics.machine_event(change.machine), event.to_json(), False))
        log.info(
            "machine %s: %s → %s (%s)",
            change.machine,
            change.previous or "unknown",
            change.cls,
            change.event or "first state",
        )
        self._published_states[change.machine] = state
        for topic, payload, retain in out:
            self._publish_state(topic, payload, retain)

    def _publish_drift(self, last: MachineState, drift: str, ts: float) -> None:
        """Publish `last` again with the machine's new drift level (no event: the class held),
        so that what reads the retained state (Home Assistant's drift sensor) follows drift."""
        state = replace(last, drift=drift, ts=max(ts, last.ts))
        self._published_states[state.machine] = state
        log.info("machine %s: drift %s → %s", state.machine, last.drift, drift)
        self._publish_state(self._state_topic(state.machine), state.to_json(), True)

    def _state_topic(self, machine: str) -> str:
        """This node's retained state topic of `machine` (its own: the ACL's `{node}`)."""
        return self.topics.machine_state(machine, self.config.node)

    def _publish_state(self, topic: str, payload: bytes, retain: bool) -> None:
        rc = self._mqtt.publish(topic, payload, qos=1, retain=retain).rc
        if rc not in (0, _NO_CONN) and self.telemetry.count_error("state_publish_failed")[0]:
            log.warning("could not queue %s for the broker (paho rc %s)", topic, rc)

    def _prediction_topic(self, machine: str) -> str:
        """The prediction topic of `machine`, built (and its id checked) once per machine."""
        topic = self._topics_by_machine.get(machine)
        if topic is None:  # bounded: evicted machines are dropped in _classify
            topic = self._topics_by_machine[machine] = self.topics.prediction(machine)
            if self.ha is not None:  # first seen (or again after eviction): HA discovery
                self.ha.machine_seen(self._client, machine)
        return topic

    # ------------------------------------------------------------------ status
    def _status_loop(self) -> None:
        guard = self.faults.loop("edge-status", self._stop)  # the outermost frame
        while True:
            self._status_now.wait(self._status_every)
            if self._stop.is_set():
                return
            if self._status_now.is_set():  # its own status was overwritten: at once, ≤ 4/s
                self._status_now.clear()
                self._stop.wait(0.25)
            with guard:
                if not self.watchdog() and self.broker_state == "connected":
                    self._publish_status()

    @property
    def _mqtt(self) -> Client:
        """The node's MQTT client; the worker and paho's thread run only after `start()`."""
        if self._client is None:
            raise EdgeError("the node's MQTT client is used before start()")
        return self._client

    # the watchdog (nodekit.lifecycle): what `pi_edge run` and the tests read
    @property
    def watch(self) -> ThreadWatch:
        """The threads this node cannot go on without."""
        return self._dog.threads

    @property
    def failed(self) -> threading.Event:
        """Set once a watched thread was found dead."""
        return self._dog.failed

    @property
    def dead_threads(self) -> tuple[str, ...]:
        return self._dog.dead

    def watchdog(self) -> bool:
        """Whether a thread this node needs has died; the first time, go degraded.

        Degraded: a retained status with state "degraded" names the dead threads and an error
        says that the node must be restarted; `failed` is set (`pi_edge run` then stops and
        exits 1). Called by the status thread and by `pi_edge run`'s main thread.
        """
        return self._dog.check(stopping=self._stop.is_set())

    def _degraded(self, dead: tuple[str, ...]) -> None:
        if self.broker_state == "connected":
            self._publish_retained(self.status().to_json())

    def _publish_retained(self, payload: bytes, timeout: float = 2.0) -> bool:
        """Publish `payload` as this node's retained status (also with paho's thread dead)."""
        return publish_retained(
            self._client, self.topics.status(self.config.node), payload, timeout
        )

    def _publish_status(self) -> None:
        client = self._client
        if client is None:
            return
        client.publish(
            self.topics.status(self.config.node), self.status().to_json(), qos=1, retain=True
        )

    def _loop_detail(self) -> dict[str, Any]:
        """The status's drift, buffer, shipper, history and storage parts."""
        kept, counts = self.kept.detail()
        buffer, history = self.kept.storage(counts), self.history.storage()
        storage = {  # in the order the status always had
            key: {**buffer, **history}[key]
            for key in (
                "buffer_moved_aside",
                "buffer_moved_aside_count",
                "history_moved_aside",
                "history_moved_aside_count",
                "buffer_rejected",
                "buffer_quarantined",
                "history_rejected",
                "history_bad_rows",
            )
        }
        return {
            DriftDetail.KEY: self.drift.detail().to_json_obj(),
            **kept,
            "history_dropped": self.history.dropped,
            "storage_errors": self.write_failures.counts(),
            "storage": storage,
        }

    def _queue(self) -> Queue:
        return Queue(len(self.inbox), self.inbox.capacity, self.inbox.dropped)

    def status(self) -> Status:
        """This node's status message, as published retained."""
        dead = self.dead_threads
        detail = self._loop_detail()
        detail["labels"] = self._primary_loop.stats()  # with the label requests sent
        detail["estimate"] = self.estimator.summary()  # label-free accuracy estimate
        detail.update(self.models.health_detail())  # rollbacks, model_health
        detail["commands"] = self.models.command_detail()  # node commands: done, or why not
        if self.config.models.rollout_group is not None:  # the trainer's staged rollout reads it
            group = RolloutGroup(self.config.models.rollout_group)
            detail[RolloutGroup.KEY] = group.to_json_obj()
        if self.signal_intake is not None:
            with self._signals_lock:
                detail["signals"] = self.signal_intake.detail()
        if self._typed:  # detail v 2: each machine type's model and closed loop
            detail[TypeModels.KEY] = self._types_detail().to_json_obj()
            detail[TypeLoops.KEY] = self._loops_detail().to_json_obj()
        if self.sources is not None:  # each OPC UA server's and Modbus device's state, counts
            detail["sources"] = self.sources.info()
        extra: dict[str, float] = {"retained_cleared": float(self.retained_cleared)}
        if self.fleet is not None:  # detail.fleet: what other members and the console read
            detail[FLEET_DETAIL] = fleet = self.fleet.info()
            extra["fleet_skipped"] = float(fleet["skipped"])
            extra["fleet_owned"] = float(fleet["owned"])
        status = self.telemetry.status(
            self.models.info(),
            self._queue(),
            self.broker_state,
            self.drift.overall(),
            detail,
            state=DEGRADED if dead else "online",
            faults=self.faults.counts(),
            dead_threads=dead,
            extra_metrics=extra,
        )
        if self._typed:
            status.detail["v"] = TYPES_DETAIL_VERSION  # version 1 plus `types`
        return status

    def _types_detail(self) -> TypeModels:
        """The status's `detail.types`: each machine type this node serves and its model."""
        entries = []
        for lane in self.lanes.lanes:
            model = lane.manager.model
            entries.append(
                TypeModel(
                    lane.name,
                    None if model is None else model.version,
                    0 if model is None else len(model.bundle.manifest.classes),
                    lane.windows,
                    lane.unclassified,
                )
            )
        return TypeModels(tuple(entries))

    def _loops_detail(self) -> TypeLoops:
        """The status's `detail.type_loops`: each machine type's closed loop."""
        waiting = self.kept.waiting_by_type()
        return TypeLoops(
            tuple(loop.detail(waiting.get(name, 0)) for name, loop in self.lane_loops.items())
        )

    def snapshot(self) -> Snapshot:
        """What the dashboard shows."""
        return self.telemetry.snapshot(
            self.models.info(),
            self._queue(),
            self.broker_state,
            self.drift.overall(),
            self.drift.machine_states(),
            {**self._loop_detail(), "estimate": self.estimator.summary()},
            self.config.loop.low_confidence,
            self.faults.counts(),
            self._normal_of,
        )

    def _normal_of(self, machine: str) -> str | None:
        """The healthy class of `machine`'s machine type (the dashboard's OK / FAULT)."""
        lane = self.lanes.route(machine)
        return None if lane is None else lane.normal
