"""The site as the console sees it: a pure model fed decoded messages and the time.

`SiteModel` takes what the MQTT shell decoded (statuses, machine states, predictions) together
with the receive time, and gives the screen what it shows: one row per machine and per node,
bounded series for the sparklines (throughput, p99 latency, labeled accuracy) and the loop's
timeline, derived from changes between two statuses of a node:

    drift      the simulator starts or stops drifting a machine; an edge node's verdict for a
               machine becomes `drift` / `suspect` / `ok`
    batches    the trainer stored more drift batches (and how many labeled windows it holds);
               at most one entry per `BATCHES_EVERY_S`, since labeled windows flow all the time
    fine-tune  the trainer starts making a model (its stage becomes `fine_tuning` or `training`;
               the text is its phase, e.g. "fine-tuning v1 on 480 labels")
    phase      any other change of the trainer's stage or phase (e.g. back to "idle")
    gate       a new gate decision, with champion and challenger scores on drift and original data
    swap       a node's model version goes up (the trainer's: published)
    rollback   an edge node's model version goes down
    node       a node goes online, offline or degraded

Each status's detail is read through the contract's codecs (`protocol.status_detail`): a part
that is malformed, or a detail of a version this build does not know, is ignored and counted
(`refused`, per kind). No clock, socket or thread: every call passes `now` (s since the epoch),
so tests feed exact sequences. Everything is bounded: at most `max_machines` machines and
`max_nodes` nodes (the least recently heard go first), `series_len` points per series,
`timeline_len` entries.

>>> from protocol import Status
>>> site = SiteModel()
>>> site.status(Status("pi-1", "edge", "online", "0.1.0", model_version=1,
...     metrics={"windows_per_s": 160.0, "latency_p99_ms": 4.5}), now=100.0)
>>> site.status(Status("pi-1", "edge", "online", "0.1.0", model_version=2), now=102.0)
>>> [e.text for e in site.timeline]
['pi-1 (edge) online', 'pi-1 swapped model v1 → v2']
>>> site.tick(now=103.0); site.series["throughput"][-1]
0.0
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from protocol import CLASSES, PayloadError, Prediction, Status
from protocol.machine_state import ANOMALY, MachineState
from protocol.machine_type import MAX_CLASSES
from protocol.status_detail import (
    DetailReader,
    DriftDetail,
    EstimateDetail,
    GateDetail,
    RecentMachines,
    SimMachines,
    TrainerPhase,
    TrainerStage,
)

from .safe import MAX_CELL, MAX_LINE, clean

__all__ = [
    "SERIES",
    "MachineRow",
    "NodeRow",
    "SiteModel",
    "TimelineEntry",
]

SERIES = ("throughput", "latency_p99", "accuracy")  # the sparklines, in screen order
DEFAULT_SERIES_LEN = 150  # one point per tick: 5 minutes at the console's 2 s tick
DEFAULT_TIMELINE_LEN = 500
DEFAULT_MAX_MACHINES = 2000
DEFAULT_MAX_NODES = 256
BATCHES_EVERY_S = 30.0
_KEEP_OPEN = 64  # per-node keys remembered for change detection (drift per machine)


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One event of the loop: when (s since the epoch), its kind (see the module) and text."""

    ts: float
    kind: str
    text: str


@dataclass(slots=True)
class MachineRow:
    """What the machines table shows of one machine (None: not heard yet)."""

    machine: str
    state: str = "unknown"
    cls: str | None = None
    confidence: float | None = None
    drift: str = "ok"
    node: str | None = None
    latency_ms: float | None = None
    last_label: str | None = None  # the newest prediction's class (the state is debounced)
    sim_drift: str | None = None  # what the simulator says it injects, if it says
    seen: float = 0.0
    state_ts: float = 0.0  # when the state shown was published (its node's `ts`)
    machine_type: str | None = None  # its type, as its state names it (None: the built-in)
    classes: tuple[str, ...] = ()  # its model's classes, as its newest prediction lists them

    def cells(self, now: float) -> tuple[str, ...]:
        """The table's cells: machine, state, class, confidence, drift, node, latency, age."""
        drift = (
            self.drift
            if not self.sim_drift or self.sim_drift == "off"
            else (f"{self.drift} (sim {self.sim_drift})")
        )
        return _cleaned(
            self.machine,
            self.state,
            self.cls or (self.last_label or "-"),
            "-" if self.confidence is None else f"{self.confidence:.2f}",
            drift,
            self.node or "-",
            "-" if self.latency_ms is None else f"{self.latency_ms:.1f}",
            _age(now - self.seen) if self.seen else "-",
        )


@dataclass(slots=True)
class NodeRow:
    """What the nodes table shows of one node, from its newest status."""

    node: str
    role: str
    state: str
    model_version: int | None = None
    rate: float | None = None
    inbox: str = "-"
    drops: float | None = None
    p99_ms: float | None = None
    cpu_percent: float | None = None
    rss_mb: float | None = None
    drift: str | None = None
    detail: str = ""
    seen: float = 0.0
    estimate: float | None = None  # an edge node's label-free accuracy estimate

    def cells(self, now: float) -> tuple[str, ...]:
        """node, role, state, rate, inbox, drops, CPU %, RSS MB, model, est. accuracy,
        drift/phase, age."""
        return _cleaned(
            self.node,
            self.role,
            self.state,
            _num(self.rate, "{:.1f}"),
            self.inbox,
            _num(self.drops, "{:.0f}"),
            _num(self.cpu_percent, "{:.0f}"),
            _num(self.rss_mb, "{:.0f}"),
            "-" if self.model_version is None else f"v{self.model_version}",
            _num(self.estimate, "{:.3f}"),
            self.detail or (self.drift or "-"),
            _age(now - self.seen) if self.seen else "-",
        )


def _cleaned(*cells: str) -> tuple[str, ...]:
    """Cells as the screen may show them: printable, at most MAX_CELL characters each (they
    come from the network; the screen also shows them as `Text`, never as markup)."""
    return tuple(clean(c, MAX_CELL) for c in cells)


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def _age(seconds: float) -> str:
    """A short age: '3s', '4m', '2h'.

    >>> [_age(s) for s in (0.4, 75, 7300)]
    ['0s', '1m', '2h']
    """
    s = max(0.0, seconds)
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{s // 60:.0f}m"
    return f"{s // 3600:.0f}h"


@dataclass(slots=True)
class _NodeMemory:
    """What the model remembers of a node's previous status, to see what changed."""

    state: str | None = None
    model_version: int | None = None
    machine_drift: dict[str, str] = field(default_factory=dict)
    phase: str | None = None
    stage: TrainerStage | None = None
    gate: GateDetail | None = None
    batches: float | None = None  # the trainer's total at its last status
    batches_shown: float | None = None  # … at its last timeline entry
    batches_shown_at: float = float("-inf")
    fine_tune_shown: bool = False  # a fine-tuning phase was on the timeline since the last gate
    labeled_seen: float = 0.0
    labeled_wrong: float = 0.0


class SiteModel:
    """Rows, series and timeline of one site; single-threaded (the UI thread feeds it)."""

    def __init__(
        self,
        *,
        series_len: int = DEFAULT_SERIES_LEN,
        timeline_len: int = DEFAULT_TIMELINE_LEN,
        max_machines: int = DEFAULT_MAX_MACHINES,
        max_nodes: int = DEFAULT_MAX_NODES,
    ) -> None:
        if min(series_len, timeline_len, max_machines, max_nodes) < 1:
            raise ValueError("series_len, timeline_len, max_machines and max_nodes must be ≥ 1")
        self.machines: OrderedDict[str, MachineRow] = OrderedDict()  # least recent first
        self.nodes: OrderedDict[str, NodeRow] = OrderedDict()
        self.series: dict[str, deque[float]] = {k: deque(maxlen=series_len) for k in SERIES}
        self.timeline: deque[TimelineEntry] = deque(maxlen=timeline_len)
        self.timeline_added = 0  # entries ever added: the screen appends the new ones
        self._memory: dict[str, _NodeMemory] = {}
        self._max_machines = max_machines
        self._max_nodes = max_nodes
        self._labels_at_tick: tuple[float, float] | None = None  # (seen, wrong) summed
        self.refused: dict[str, int] = {}  # status-detail parts ignored, per error kind

    # -- feeding ----------------------------------------------------------------------------
    def status(self, status: Status, now: float) -> None:
        """A node's retained status: its row, and timeline entries for what changed."""
        node = status.node
        memory = self._memory.get(node)
        if memory is None:
            memory = self._memory[node] = _NodeMemory()
        metrics = status.metrics
        detail = DetailReader(status.detail, status.role, self._refused)
        row = self.nodes.pop(node, None) or NodeRow(node, status.role, status.state)
        row.role, row.state, row.seen = status.role, status.state, now
        row.model_version = status.model_version
        row.rate = metrics.get("windows_per_s")
        depth, capacity = metrics.get("queue_depth"), metrics.get("queue_capacity")
        row.inbox = (
            "-"
            if depth is None
            else (f"{depth:.0f}" if capacity is None else f"{depth:.0f}/{capacity:.0f}")
        )
        row.drops = metrics.get("drops")
        row.p99_ms = metrics.get("latency_p99_ms")
        row.cpu_percent = metrics.get("cpu_percent")
        row.rss_mb = metrics.get("rss_mb")
        row.drift = status.drift
        phase = detail.get(TrainerPhase)
        row.detail = "" if phase is None else phase.text[:40]
        estimate = detail.get(EstimateDetail)  # an edge node's label-free accuracy estimate
        row.estimate = None if estimate is None else estimate.accuracy_est
        self.nodes[node] = row
        self._bound(self.nodes, self._max_nodes, self._memory)

        who = f"{node} ({status.role})"
        if status.state != memory.state:
            why = f": {status.reason}" if status.reason else ""
            self._add(now, "node", f"{who} {status.state}{why}")
            memory.state = status.state
        if status.state != "online":
            return  # an offline Will carries nothing else; keep what was known
        self._model_change(memory, status, now)
        if status.role == "edge":
            self._edge(memory, node, detail, now)
        elif status.role == "trainer":
            self._trainer(memory, metrics, detail, now)
        elif status.role == "simulator":
            self._sim(detail, now)

    def machine_state(self, state: MachineState, now: float) -> None:
        """A machine's retained debounced state (`…/machines/{m}/state/{node}`): each node
        keeps its own, so after a fleet member took the machine the newest one counts."""
        row = self._machine(state.machine)
        if row.node not in (None, state.node) and state.ts < row.state_ts:
            return  # an older state of the node that served it before
        row.state_ts = state.ts
        row.state, row.cls, row.confidence = state.state, state.cls, state.confidence
        row.node = state.node
        row.machine_type = state.machine_type
        row.seen = max(row.seen, min(now, state.ts)) if row.seen else min(now, state.ts)

    def prediction(self, p: Prediction, now: float) -> None:
        """A machine's newest prediction: latency, last class, drift verdict, last heard."""
        row = self._machine(p.machine)
        row.latency_ms = p.latency_ms.get("total")
        row.last_label = p.label
        row.classes = p.classes[:MAX_CLASSES]  # names ≤ 64 characters: the codec checked
        row.drift = p.drift
        row.seen = now
        if row.confidence is None:
            row.confidence = p.confidence

    def tick(self, now: float) -> None:
        """One point per series: site throughput (windows/s classified by online edge nodes),
        the worst p99 latency of them, labeled accuracy since the last tick (if labels came)."""
        edges = [
            (n, self._memory.get(n.node))
            for n in self.nodes.values()
            if n.role == "edge" and n.state == "online"
        ]
        self.series["throughput"].append(sum(n.rate or 0.0 for n, _ in edges))
        p99 = [n.p99_ms for n, _ in edges if n.p99_ms is not None]
        self.series["latency_p99"].append(max(p99) if p99 else 0.0)
        seen = sum(m.labeled_seen for _, m in edges if m is not None)
        wrong = sum(m.labeled_wrong for _, m in edges if m is not None)
        before, self._labels_at_tick = self._labels_at_tick, (seen, wrong)
        if before is not None and seen > before[0]:
            d_seen, d_wrong = seen - before[0], max(0.0, wrong - before[1])
            self.series["accuracy"].append(round(1.0 - min(d_wrong, d_seen) / d_seen, 4))

    def action(self, now: float, text: str) -> None:
        """An operator's action (sent or cancelled) goes on the timeline too."""
        self._add(now, "action", text)

    # -- reading ----------------------------------------------------------------------------
    def machine_rows(self, now: float) -> list[tuple[str, tuple[str, ...]]]:
        """(machine id, cells) sorted by id."""
        return [(m, self.machines[m].cells(now)) for m in sorted(self.machines)]

    def node_rows(self, now: float) -> list[tuple[str, tuple[str, ...]]]:
        """(node id, cells) sorted by role, then id."""
        rows = sorted(self.nodes.values(), key=lambda r: (r.role, r.node))
        return [(r.node, r.cells(now)) for r in rows]

    def label_choices(self, machine: str) -> tuple[str, ...]:
        """The classes a technician may pick for `machine`: its model's, as its newest
        prediction lists them, without `anomaly` (an anomaly model's verdict, never a label);
        for a machine of the built-in type the type's own four first. A class its model does
        not know yet (a cold start, an open type) is typed in the dialog instead.

        >>> site = SiteModel()
        >>> site.label_choices("m01")
        ('normal', 'bearing_fault', 'drive_wear', 'pump_fault')
        >>> p = Prediction("fan-1", 1, "ok", 0.9, (0.9, 0.1), 2, classes=("ok", "anomaly"))
        >>> site.prediction(p, 0.0); site.machines["fan-1"].machine_type = "fan"
        >>> site.label_choices("fan-1")
        ('ok',)
        """
        row = self.machines.get(machine)
        named = () if row is None else row.classes
        builtin = CLASSES if row is None or row.machine_type is None else ()
        return tuple(dict.fromkeys(c for c in (*builtin, *named) if c != ANOMALY))

    def current_class(self, machine: str) -> str | None:
        """The machine's debounced class, else its newest predicted class, else None."""
        row = self.machines.get(machine)
        return None if row is None else (row.cls or row.last_label)

    # -- internals --------------------------------------------------------------------------
    def _machine(self, machine: str) -> MachineRow:
        row = self.machines.pop(machine, None) or MachineRow(machine)
        self.machines[machine] = row
        self._bound(self.machines, self._max_machines)
        return row

    @staticmethod
    def _bound(rows: OrderedDict[str, Any], limit: int, *also: dict[str, Any]) -> None:
        while len(rows) > limit:
            key, _ = rows.popitem(last=False)
            for other in also:
                other.pop(key, None)

    def _add(self, now: float, kind: str, text: str) -> None:
        self.timeline.append(TimelineEntry(now, kind, clean(text, MAX_LINE)))
        self.timeline_added += 1

    def _model_change(self, memory: _NodeMemory, status: Status, now: float) -> None:
        old, new = memory.model_version, status.model_version
        memory.model_version = new
        if new is None or old is None or new == old:
            return
        if status.role == "trainer":
            self._add(now, "swap", f"trainer published model v{new} (was v{old})")
        elif new > old:
            self._add(now, "swap", f"{status.node} swapped model v{old} → v{new}")
        else:
            self._add(now, "rollback", f"{status.node} rolled back model v{old} → v{new}")

    def _refused(self, exc: PayloadError) -> None:
        self.refused[exc.kind] = self.refused.get(exc.kind, 0) + 1

    def _edge(self, memory: _NodeMemory, node: str, detail: DetailReader, now: float) -> None:
        drift = detail.get(DriftDetail)
        if drift is not None and drift.labeled_seen is not None:
            memory.labeled_seen = float(drift.labeled_seen)
            memory.labeled_wrong = float(drift.labeled_wrong or 0)
        recent = detail.get(RecentMachines)
        for machine in () if recent is None else recent.ids:
            if machine in self.machines:
                self.machines[machine].node = node  # the node classifying it now
        machines = {} if drift is None or drift.machines is None else drift.machines
        changed: dict[tuple[str, str], list[str]] = {}  # (new, old) → machines: one entry each
        for machine, info in sorted(machines.items()):
            state = info.state
            before = memory.machine_drift.get(machine, "ok")
            if state != before:
                changed.setdefault((state, before), []).append(machine)
            memory.machine_drift[machine] = state
        for (state, before), group in changed.items():
            ms = _machines_text(group)
            text = {
                "drift": f"drift detected on {ms} by {node}",
                "suspect": f"{ms} suspect on {node}",
                "ok": f"{ms} back to ok on {node} (was {before})",
            }.get(state, f"{ms} drift {state} on {node}")
            self._add(now, "drift", text)
        if len(memory.machine_drift) > _KEEP_OPEN * 4:  # machines that left the status list
            for m in [m for m in memory.machine_drift if m not in machines][:_KEEP_OPEN]:
                del memory.machine_drift[m]

    def _trainer(
        self, memory: _NodeMemory, metrics: dict[str, float], detail: DetailReader, now: float
    ) -> None:
        batches = metrics.get("batches")
        if batches is not None:
            if memory.batches_shown is None:
                memory.batches_shown = batches  # what it had before the console came
            grew = memory.batches is not None and batches > memory.batches
            if grew and now - memory.batches_shown_at >= BATCHES_EVERY_S:
                labeled = metrics.get("stored_labeled")
                extra = "" if labeled is None else f"; {labeled:.0f} labeled windows stored"
                self._add(
                    now,
                    "batches",
                    f"trainer stored {batches - memory.batches_shown:.0f} drift batch(es) "
                    f"(total {batches:.0f}{extra})",
                )
                memory.batches_shown, memory.batches_shown_at = batches, now
            memory.batches = batches
        # the stage says what the trainer does; the phase says it to people (a trainer from
        # before detail.v has only the phase: its changes show as "phase")
        text, stage = detail.get(TrainerPhase), detail.get(TrainerStage)
        phase = text.text if text is not None else None if stage is None else stage.text()
        if phase is not None and (phase, stage) != (memory.phase, memory.stage):
            if memory.phase is not None:
                kind = "fine-tune" if stage is not None and stage.fine_tune else "phase"
                self._add(now, kind, f"trainer: {phase}")
                memory.fine_tune_shown |= kind == "fine-tune"
            memory.phase, memory.stage = phase, stage
        gate = detail.get(GateDetail)
        if gate is not None and gate != memory.gate:
            if memory.gate is not None or memory.phase is not None:
                if not memory.fine_tune_shown:  # shorter than a status interval: say it now
                    self._add(now, "fine-tune", fine_tune_text(gate))
                self._add(now, "gate", gate_text(gate))
                memory.fine_tune_shown = False
            memory.gate = gate

    def _sim(self, detail: DetailReader, now: float) -> None:
        changed: dict[str, list[str]] = {}  # what happened → machines: one entry each
        sim = detail.get(SimMachines)
        for machine, info in sorted(({} if sim is None else sim.machines).items()):
            mode = info.drift
            row = self.machines.get(machine)
            if row is None:
                continue  # the simulator's own list; a machine shows once it is classified
            before = row.sim_drift
            row.sim_drift = mode
            if before is not None and mode != before:
                what = "stopped" if mode == "off" else f"started ({mode})"
                changed.setdefault(what, []).append(machine)
        for what, group in changed.items():
            self._add(now, "drift", f"simulator: drift {what} on {_machines_text(group)}")


def _machines_text(machines: list[str], show: int = 4) -> str:
    """A few machine ids, or how many with the first and last.

    >>> _machines_text(["m01", "m02"]), _machines_text([f"m{i:02d}" for i in range(1, 17)])
    ('m01, m02', '16 machines (m01 … m16)')
    """
    if len(machines) <= show:
        return ", ".join(machines)
    return f"{len(machines)} machines ({machines[0]} … {machines[-1]})"


def fine_tune_text(gate: GateDetail) -> str:
    """The fine-tune a gate decision judged, from the decision itself.

    >>> fine_tune_text(GateDetail(True, "", 480, 3.25, 96, 0.5, 0.9, None, None))
    'trainer fine-tuned on 480 labels in 3.2 s (judged on 96 held-out drift windows)'
    """
    return (
        f"trainer fine-tuned on {gate.labels_used:.0f} labels in {gate.seconds:.1f} s "
        f"(judged on {gate.holdout:.0f} held-out drift windows)"
    )


def gate_text(gate: GateDetail) -> str:
    """One line for a gate decision with both models' scores ("?": nothing to score on).

    >>> gate_text(GateDetail(True, "better", 480, 3.2, 96, 0.61, 0.94, 0.97, 0.96))
    'gate ACCEPTED challenger: drift 0.610 → 0.940, original 0.970 → 0.960 (better)'
    """
    verdict = "ACCEPTED" if gate.accepted else "REFUSED"

    def score(value: float | None) -> str:
        return "?" if value is None else f"{value:.3f}"

    return (
        f"gate {verdict} challenger: drift {score(gate.champion_drift)} → "
        f"{score(gate.challenger_drift)}, original {score(gate.champion_original)} → "
        f"{score(gate.challenger_original)}" + (f" ({gate.reason[:80]})" if gate.reason else "")
    )
