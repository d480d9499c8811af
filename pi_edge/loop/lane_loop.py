"""The closed loop of one machine type a node serves: its labels, kept windows, estimate, asks.

A node runs one `LaneLoop` per machine type it serves (model/machine_types.py's lanes), each in
that type's own words:

- maintenance label events (protocol.labels) of its machines, in its class names: an event
  naming a class the type lacks is refused with an error listing the type's classes — unless
  the type has `open_classes`, whose class table (loop/class_table.py) takes the new name after
  its classes; its label intervals, class table and held windows are its own (`labels.json`,
  `classes.json` in the type's state dir: the node's for the built-in type, `types/<type>/` for
  another);
- kept windows (labeled, and flagged at most `keep_flagged_per_s` per machine) go to the node's
  one durable buffer and shipper marked with the type, so they travel in drift batches of their
  type (protocol.drift_batch: version 1 for the built-in type as before machine types, version 2
  naming another), their labels and predictions indexing the type's classes;
- the label-free accuracy estimate of the type's serving model, and the label requests for its
  least sure held windows with its class names, within its own budget, while its own drift
  detector or estimate says it is unsure.

A type with no vocabulary yet (no site declaration, no verified model) has no label book: its
events are refused until its first model serves (`learn`). The worker calls everything but
`submit` (paho's thread) and `detail` (the status thread).

>>> import numpy as np
>>> from protocol.machine_type import Channel, MachineType
>>> fan = MachineType("fan", (Channel("vib_x"),), window_length=8, classes=("ok", "loose"))
>>> from pi_edge.loop.config import LoopConfig
>>> lane = LaneLoop("fan", fan, config=LoopConfig(), state_dir=None, kept=None)
>>> from protocol.labels import LabelEvent
>>> try:
...     lane.submit(LabelEvent("fan-1", "bearing_fault", 10.0))
... except PayloadError as exc:
...     print(exc)
class 'bearing_fault' is not one of machine type fan's classes: ok, loose
>>> lane.submit(LabelEvent("fan-1", "loose", 10.0)); _ = lane.pump(now=11.0)
>>> w = Window("fan-1", 1, int(12e9), np.zeros((8, 1), np.float32))
>>> [x.label for x in lane.label_new([w])]
[1]
>>> import dataclasses
>>> cold = LaneLoop("fan", dataclasses.replace(fan, open_classes=True), config=LoopConfig(),
...                 state_dir=None, kept=None)
>>> cold.submit(LabelEvent("fan-1", "seal leak", 10.0)); _ = cold.pump(now=11.0)
>>> [x.label for x in cold.label_new([w])], cold.wire_classes()
([2], ('ok', 'loose', 'seal leak'))
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from protocol import PayloadError, Window
from protocol.label_request import LabelRequest, LabelRequests
from protocol.labels import LabelEvent
from protocol.machine_state import ANOMALY
from protocol.machine_type import DEFAULT_TYPE_NAME, MachineType
from protocol.status_detail import TypeLoop

from .ask_flagged import ask_flagged
from .class_table import ClassTable
from .label_requests import SPAN_S, Candidate
from .maintenance_labels import Labeler

if TYPE_CHECKING:
    from ..model.vetting import VettedModel
    from .config import LoopConfig
    from .drift_watch import DriftWatch
    from .kept_windows import KeptWindows
    from .served_batch import ServedBatch

__all__ = ["LaneLoop"]

log = logging.getLogger(__name__)


class LaneLoop:
    """The closed loop of machine type `name` (see the module docstring).

    `kept` None keeps nothing (doctests); `drift` is the type's drift detector (its verdicts
    and machine states decide when to ask for labels).
    """

    def __init__(
        self,
        name: str,
        machine_type: MachineType | None,
        *,
        config: LoopConfig,
        state_dir: Path | None,
        kept: KeptWindows | None,
        drift: DriftWatch | None = None,
    ) -> None:
        self.name = name
        self.builtin = name == DEFAULT_TYPE_NAME
        self._config = config
        self._state_dir = state_dir
        self.kept = kept
        self.drift = drift
        self.labeler: Labeler | None = None
        self._refused_early = 0  # events refused while the type had no vocabulary
        self._untrusted_early = 0  # in-band labels dropped while it had none
        # what its labels index: the declared classes and the names added since (not for the
        # built-in type, whose classes never change); a table change and the labeler's retype
        # happen under one lock (paho's thread adds names, the worker learns models)
        self.classes = None if self.builtin else ClassTable(state_dir, machine_type)
        self._classes_lock = threading.Lock()
        if machine_type is not None:
            if self.classes is not None and self.classes.kind is not None:
                machine_type = self.classes.kind
            self.labeler = self._new_labeler(machine_type)
        self.estimator = config.estimator()  # label-free accuracy estimate
        self.asker = config.asker()  # label requests for its least sure held windows

    def _new_labeler(self, machine_type: MachineType) -> Labeler:
        if self._state_dir is not None:
            self._state_dir.mkdir(parents=True, exist_ok=True)
        return Labeler(
            self._state_dir,
            hold_windows=self._config.label_hold_windows,
            hold_s=self._config.label_hold_s,
            machine_type=machine_type,
        )

    @property
    def kind(self) -> MachineType | None:
        """The type as its labels speak it (its class table), None before it has classes."""
        labeler = self.labeler
        return None if labeler is None else labeler.machine_type

    def learn(self, machine_type: MachineType | None) -> MachineType | None:
        """The type's vocabulary now (its first model, or one whose classes grew); returns it
        with the class table's order (new model classes after the ones labels index already)."""
        if machine_type is None:
            return self.kind
        with self._classes_lock:
            if self.classes is not None:
                machine_type = self.classes.learn(machine_type)
            if self.labeler is None:
                self.labeler = self._new_labeler(machine_type)
            elif self.labeler.machine_type != machine_type:
                self.labeler.retype(machine_type)
        return machine_type

    def wire_classes(self) -> tuple[str, ...] | None:
        """The class table its drift batches must name (version 3), None: its declared list."""
        return None if self.classes is None else self.classes.wire()

    # -- paho's thread ---------------------------------------------------------------------
    def submit(self, event: LabelEvent) -> None:
        """Queue a label event of one of its machines; PayloadError listing the type's class
        names if the type has not the event's class (or no vocabulary yet)."""
        labeler = self.labeler
        if labeler is None:
            self._refused_early += 1
            raise PayloadError(
                f"machine type {self.name} has no classes yet (no model of it has served, and "
                "the site file does not declare it): the label event is refused",
                kind="bad_label",
            )
        table = self.classes
        if table is not None and event.action == "set":
            with self._classes_lock:  # an open type takes a new name; a closed one refuses it
                if event.cls not in labeler.machine_type.classes:
                    try:
                        labeler.retype(table.add(event.cls))
                    except PayloadError:
                        labeler.refuse()
                        raise
        labeler.submit_event(event)

    def refuse(self) -> None:
        """Count a label event refused before it reached a type (bad, or of no type)."""
        if self.labeler is None:
            self._refused_early += 1
        else:
            self.labeler.refuse()

    def untrusted(self) -> int:
        """Count an in-band label dropped (its source is not trusted); the new total."""
        if self.labeler is None:
            self._untrusted_early += 1
            return self._untrusted_early
        return self.labeler.untrusted()

    # -- the worker ------------------------------------------------------------------------
    def pending(self) -> bool:
        return self.labeler is not None and self.labeler.pending()

    def pump(self, now: float) -> int:
        """Apply the queued label events; the held windows they labeled are kept again (and
        shipped as labeled). Returns the rows added to the buffer."""
        if self.labeler is None:
            return 0
        records = self.labeler.pump(now)
        if self.kept is None or not records:
            return 0
        return self.kept.keep_records(records, self.name)

    def label_new(self, windows: list[Window]) -> list[Window]:
        """`windows` with the label of the open interval each falls in."""
        return windows if self.labeler is None else self.labeler.label_new(windows)

    def declared(self, model: VettedModel) -> tuple[str, ...]:
        """The classes its window labels and drift batches index: the type's (which a cold
        start's model knows only some of: loop/served_batch.py), else the model's."""
        labeler = self.labeler
        return model.bundle.manifest.classes if labeler is None else labeler.machine_type.classes

    def observe(
        self,
        model: VettedModel,
        windows: list[Window],
        originals: list[Window],
        served: ServedBatch,
        probs: npt.NDArray[np.float32],
        start_ns: int,
    ) -> None:
        """The loop's share of a classified batch of this type: kept windows (durable before
        anything is published), the accuracy estimate, held windows for late labels. What goes
        to the trainer speaks the type's classes (`served.declared_top`; -1: `anomaly`)."""
        verdicts, top, labels = served.verdicts, served.top, served.labels
        if self.kept is not None:
            self.kept.keep(windows, verdicts, served.declared_top, machine_type=self.name)
        rows = np.arange(len(windows))
        confidence = probs[rows, top].astype(np.float64)
        metrics = model.bundle.manifest.metrics
        self.estimator.observe(model.version, metrics, confidence, top, labels)
        labeler = self.labeler
        if labeler is None:
            return
        sureness = None
        if labeler.held.max_windows and probs.shape[1] > 1:  # candidates for requests
            margin = confidence - np.partition(probs, -2, axis=1)[:, -2]
            sureness = list(zip(confidence.tolist(), margin.tolist(), strict=True))
        labeler.hold(
            windows,
            served.declared_top,
            verdicts.ood_score,
            start_ns / 1e9,
            originals,
            sureness=sureness,
        )

    def requests(
        self, node: str, now: float, *, flagged_only: bool = False, flagged_first: bool = False
    ) -> LabelRequests | None:
        """The label request to publish now for this type's held windows that would help most
        (loop/label_requests.py), in its class names; None when it is sure or out of budget.
        `flagged_only`: an anomaly model serves, ask for what it flagged (loop/ask_flagged.py);
        `flagged_first`: a classifier with an anomaly head serves, ask for what it flagged while
        it holds such windows, else as any classifier."""
        asker, labeler, drift = self.asker, self.labeler, self.drift
        if labeler is None or drift is None or now < asker.next_check:
            return None
        if flagged_first and not flagged_only:
            flagged_only = any(p < 0 for _, p, _, _ in labeler.held.unlabeled())
        if flagged_only:
            picks = ask_flagged(asker, labeler.held.unlabeled(), now)
        elif not asker.due(now, drift.overall(), self.estimator.accuracy_est):
            return None
        else:
            picks = asker.pick(
                (
                    Candidate(w.machine, w.seq, w.timestamp_ns, p, conf, margin)
                    for w, p, conf, margin in labeler.held.unlabeled()
                    if w.timestamp_ns > 0  # a window without a sensor time cannot be named
                ),
                now,
                drifting={m for m, st in drift.machine_states().items() if st != "ok"},
                sure_at=self.estimator.sure_at,  # sure windows of healthy machines are not asked
            )
        classes = labeler.machine_type.classes
        picks = [c for c in picks if c.predicted < len(classes)]  # of a model since replaced
        if not picks:
            return None
        requests = tuple(
            LabelRequest(
                c.machine,
                c.ts_ns / 1e9,  # exactly what labels.RecentWindows compares with
                c.ts_ns / 1e9 + SPAN_S,
                classes[c.predicted] if c.predicted >= 0 else ANOMALY,  # -1: it flagged it
                min(max(round(c.confidence, 4), 0.0), 1.0),
                c.seq,
            )
            for c in picks
        )
        return LabelRequests(node, now, requests)

    def forget(self, machines: list[str]) -> None:
        """Drop the held windows of `machines` (evicted, or given to another fleet member)."""
        if self.labeler is not None:
            self.labeler.forget(machines)

    # -- the status thread -----------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """The labeler's counts (as the status's `detail.labels` has them) and the requests."""
        if self.labeler is None:
            counts: dict[str, Any] = {"events": 0, "refused": 0, "windows_labeled": 0}
        else:
            counts = self.labeler.stats()
        counts["refused"] = counts.get("refused", 0) + self._refused_early
        counts["requests"] = self.asker.stats()
        return counts

    def detail(self, waiting: int) -> TypeLoop:
        """Its entry of the status's `detail.type_loops`; `waiting`: its buffered windows."""
        stats = self.stats()
        return TypeLoop(
            self.name,
            int(stats["events"]),
            int(stats["refused"]),
            int(stats["windows_labeled"]),
            int(self.asker.windows),
            self.estimator.accuracy_est,
            waiting,
        )
