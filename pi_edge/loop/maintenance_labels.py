"""Maintenance labels on the Pi: label events (protocol.labels) applied to held and new windows.

A technician's label ("m01 had a bearing fault from 08:00, until further notice") arrives on
`{prefix}/labels`, often minutes after the windows it is about. The node therefore holds its most
recent windows for a bounded count and time (`RecentWindows`), and keeps the label intervals
(`LabelBook`) for the windows still to come:

- a label applies to every held window of its machine inside [from, to), and those windows are
  kept again as labeled (the durable buffer upgrades a row it still has; the trainer's store
  upgrades a row it has stored unlabeled), so they are shipped like any labeled window;
- every new window inside an interval gets the label before it is classified, so the drift
  monitor's labeled accuracy sees it too;
- a maintenance label wins over a window's own (in-band) label (a sensor cannot label:
  in-band labels are taken only from the sources the site trusts, `--window-labels`, and a
  technician's label overrides even those); between events, the one applied last wins;
- a new label of a machine closes that machine's open label at its start (the technician's
  "repaired, normal from now" ends "bearing fault until further notice");
- `cancel` withdraws a label for the windows still to come; windows already shipped with it keep
  it (the trainer has them).

The intervals survive a restart (`labels.json` in the state dir, written atomically and
fsynced). All of this is pure but for that file; `Labeler` is what the node's worker calls.

>>> import numpy as np
>>> from protocol.labels import LabelEvent
>>> lab = Labeler(None, hold_windows=10, hold_s=60.0)
>>> w = [Window("m01", i, int((100 + i) * 1e9), np.zeros((60, 4), np.float32)) for i in range(3)]
>>> lab.hold(w, [0, 0, 0], [0.0, 0.0, 0.0], now=103.0)
>>> lab.submit(LabelEvent("m01", "bearing_fault", 101.0).to_json())
>>> [(k.window.seq, k.window.label, k.reason) for k in lab.pump(now=104.0)]
[(1, 1, 'labeled'), (2, 1, 'labeled')]
>>> [x.label for x in lab.label_new([Window("m01", 3, int(104e9), w[0].data)])]
[1]
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodekit.storage import atomic_write
from protocol import Kept, PayloadError, Window
from protocol.labels import LabelEvent
from protocol.machine_type import DEFAULT_TYPE, MachineType

log = logging.getLogger(__name__)

__all__ = ["MAX_LABELS", "LabelBook", "Labeler", "RecentWindows"]

MAX_LABELS = 4096  # intervals a node keeps; the oldest closed ones go first
MAX_QUEUED_EVENTS = 1024  # events waiting for the worker; more are dropped (counted)
LABELS_FILE = "labels.json"
STATUS_OPEN_LABELS = 32  # open labels a status names (it is capped at 64 KiB)
_FILE_VERSION = 1


class LabelBook:
    """The label intervals per machine; `label_at(machine, t)` is what a window at t gets.

    >>> from protocol.labels import LabelEvent
    >>> book = LabelBook()
    >>> _ = book.apply(LabelEvent("m01", "bearing_fault", 10.0))
    >>> _ = book.apply(LabelEvent("m01", "normal", 20.0))        # closes the open one at 20
    >>> [book.label_at("m01", t) for t in (5.0, 10.0, 19.9, 20.0, 1e9)], book.label_at("m02", 15)
    ([None, 1, 1, 0, 0], None)
    """

    def __init__(
        self, max_labels: int = MAX_LABELS, machine_type: MachineType = DEFAULT_TYPE
    ) -> None:
        self.machine_type = machine_type  # whose class names the events use
        self.max_labels = max_labels
        self._by_id: dict[str, LabelEvent] = {}
        self._by_machine: dict[str, list[LabelEvent]] = {}  # ordered by when applied
        self.dropped = 0  # intervals dropped by the cap

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, machine: str) -> bool:
        return machine in self._by_machine

    def labels(self) -> list[LabelEvent]:
        return list(self._by_id.values())

    def open_labels(self) -> dict[str, str]:
        """machine → class of every label without an end (what the status shows)."""
        return {e.machine: e.cls for e in self._by_id.values() if e.end is None}

    def apply(self, event: LabelEvent) -> list[LabelEvent]:
        """Add, replace or cancel; returns the intervals whose windows must be (re)labeled."""
        self._remove(event.label_id)
        if event.action == "cancel":
            return []
        changed = [event]
        for other in list(self._by_machine.get(event.machine, ())):  # close its open label
            if other.end is None and other.start < event.start and event.end is None:
                closed = dataclasses.replace(other, end=event.start)
                self._remove(other.label_id)
                self._add(closed)
        self._add(event)
        self._cap()
        return changed

    def label_at(self, machine: str, t: float) -> int | None:
        """The class index of the last applied label of `machine` covering `t`, or None."""
        events = self._by_machine.get(machine)
        if not events:
            return None
        for event in reversed(events):
            if event.covers(t):
                return self.machine_type.class_of(event.cls)
        return None

    def expire(self, before: float) -> int:
        """Drop closed labels that ended before `before` (no window can reach them any more)."""
        old = [e.label_id for e in self._by_id.values() if e.end is not None and e.end < before]
        for label_id in old:
            self._remove(label_id)
        return len(old)

    def _add(self, event: LabelEvent) -> None:
        self._by_id[event.label_id] = event
        self._by_machine.setdefault(event.machine, []).append(event)

    def _remove(self, label_id: str) -> None:
        old = self._by_id.pop(label_id, None)
        if old is None:
            return
        events = self._by_machine[old.machine]
        events.remove(old)
        if not events:
            del self._by_machine[old.machine]

    def _cap(self) -> None:
        while len(self._by_id) > self.max_labels:
            closed = [e for e in self._by_id.values() if e.end is not None]
            victim = min(closed or self._by_id.values(), key=lambda e: e.end or e.start)
            self._remove(victim.label_id)
            self.dropped += 1


@dataclass(slots=True)
class _Batch:
    """One micro-batch as the worker classified it (held whole: a few µs per batch, not per
    window); `labeled_by[i]` is the label id that labeled window i, None: unlabeled or in-band."""

    windows: list[Window]
    predicted: list[int]
    scores: list[float]
    arrived: float
    labeled_by: list[str | None]
    sureness: list[tuple[float, float]] | None = None  # (confidence, margin): label requests


class RecentWindows:
    """The node's last ~`max_windows` windows (whole batches: up to one batch more), none older
    than `max_age_s`, oldest first.

    Memory: a window is ~1.5 KB (60 × 4 float32 plus its frame), so the default 1,024 cost ~1.5 MB.
    """

    def __init__(self, max_windows: int, max_age_s: float) -> None:
        if max_windows < 0 or max_age_s < 0:
            raise ValueError("max_windows and max_age_s must be ≥ 0")
        self.max_windows = max_windows
        self.max_age_s = max_age_s
        self._batches: deque[_Batch] = deque()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(
        self,
        windows: Sequence[Window],
        predicted: Iterable[int],
        scores: Iterable[float],
        labeled_by: Sequence[str | None],
        now: float,
        sureness: Sequence[tuple[float, float]] | None = None,
    ) -> None:
        """Hold a classified batch; `sureness` (confidence, margin) per window lets
        `unlabeled` offer the windows for label requests (pi_edge/loop/label_requests.py)."""
        if not self.max_windows or not windows:
            return
        batch = _Batch(
            list(windows),
            [int(p) for p in predicted],
            [float(x) for x in scores],
            now,
            list(labeled_by),
            None if sureness is None else list(sureness),
        )
        self._batches.append(batch)
        self._count += len(batch.windows)
        while self._count - len(self._batches[0].windows) >= self.max_windows:
            self._count -= len(self._batches.popleft().windows)
        self.expire(now)

    def expire(self, now: float) -> None:
        batches, horizon = self._batches, now - self.max_age_s
        while batches and batches[0].arrived < horizon:
            self._count -= len(batches.popleft().windows)

    def relabel(self, event: LabelEvent, index: int) -> list[Kept]:
        """Label the held windows of `event`'s interval with class `index` (the event's class in
        the machine's type); the changed ones, to keep again."""
        label_id, out = event.label_id, []
        machine, start = event.machine, event.start
        end = float("inf") if event.end is None else event.end
        for batch in self._batches:
            for i, w in enumerate(batch.windows):
                if w.machine != machine or not start <= w.timestamp_ns / 1e9 < end:
                    continue
                if w.label == index:
                    continue  # already this class (in-band or by an event)
                labeled = batch.windows[i] = dataclasses.replace(w, label=index)
                batch.labeled_by[i] = label_id
                p = batch.predicted[i]  # -1: none of the type's classes (`anomaly`)
                out.append(Kept(labeled, "labeled", p if p >= 0 else None, batch.scores[i]))
        return out

    def unlabeled(self) -> Iterator[tuple[Window, int, float, float]]:
        """(window, predicted, confidence, margin) of every held window without a label whose
        batch came with its sureness, oldest first (what a label request may ask about)."""
        for batch in self._batches:
            if batch.sureness is None:
                continue
            for w, p, (conf, margin) in zip(
                batch.windows, batch.predicted, batch.sureness, strict=True
            ):
                if w.label is None:
                    yield w, p, conf, margin

    def forget(self, machines: Sequence[str]) -> None:
        gone = set(machines)
        for batch in self._batches:
            keep = [i for i, w in enumerate(batch.windows) if w.machine not in gone]
            if len(keep) < len(batch.windows):
                self._count -= len(batch.windows) - len(keep)
                batch.windows = [batch.windows[i] for i in keep]
                batch.predicted = [batch.predicted[i] for i in keep]
                batch.scores = [batch.scores[i] for i in keep]
                batch.labeled_by = [batch.labeled_by[i] for i in keep]
                if batch.sureness is not None:
                    batch.sureness = [batch.sureness[i] for i in keep]
        while self._batches and not self._batches[0].windows:
            self._batches.popleft()


class Labeler:
    """What the node does with label events: paho's thread `submit`s, the worker does the rest.

    `state_dir` None keeps the intervals in memory only (tests, doctests).
    """

    def __init__(
        self,
        state_dir: Path | None,
        *,
        hold_windows: int = 1024,
        hold_s: float = 3600.0,
        max_labels: int = MAX_LABELS,
        machine_type: MachineType = DEFAULT_TYPE,
    ) -> None:
        self.path = None if state_dir is None else state_dir / LABELS_FILE
        self.machine_type = machine_type  # a label's class must be one of its classes
        self.book = LabelBook(max_labels, machine_type)
        self.held = RecentWindows(hold_windows, hold_s)
        self._queue: deque[LabelEvent] = deque()
        self._lock = threading.Lock()  # the queue and the counters (paho, worker, status)
        self.counts = {
            "events": 0,
            "refused": 0,
            "dropped": 0,
            "windows_labeled": 0,
            "inband_untrusted": 0,  # in-band labels dropped: not from a trusted source
        }
        self._load()

    def retype(self, machine_type: MachineType) -> None:
        """A model of another vocabulary serves now (its type's classes grew): events are
        checked against, and intervals resolved in, `machine_type`'s classes from now on."""
        self.machine_type = machine_type
        self.book.machine_type = machine_type

    # -- paho's thread ---------------------------------------------------------------------
    def submit(self, payload: bytes) -> None:
        """Decode a label event and queue it for the worker; PayloadError if it is bad."""
        try:
            event = LabelEvent.from_json(payload)
        except PayloadError:
            self.refuse()
            raise
        self.submit_event(event)

    def submit_event(self, event: LabelEvent) -> None:
        """Queue a decoded label event for the worker; PayloadError (listing the type's class
        names) if its class is not one of the machine type's."""
        try:
            self.machine_type.class_of(event.cls)  # PayloadError listing the type's classes
        except PayloadError:
            self.refuse()
            raise
        with self._lock:
            if len(self._queue) >= MAX_QUEUED_EVENTS:
                self.counts["dropped"] += 1
                raise PayloadError(
                    f"{MAX_QUEUED_EVENTS} label events wait already; send them more slowly",
                    kind="label_queue_full",
                )
            self._queue.append(event)

    def refuse(self, n: int = 1) -> None:
        """Count `n` label events refused (bad, or of a machine of no type served)."""
        with self._lock:
            self.counts["refused"] += n

    def pending(self) -> bool:
        return bool(self._queue)

    def untrusted(self, n: int = 1) -> int:
        """Count `n` in-band labels dropped (their source is not trusted); the new total."""
        with self._lock:
            self.counts["inband_untrusted"] += n
            return self.counts["inband_untrusted"]

    # -- the worker ------------------------------------------------------------------------
    def pump(self, now: float) -> list[Kept]:
        """Apply the queued events; the held windows they labeled, to keep (and ship) again."""
        with self._lock:
            events = list(self._queue)
            self._queue.clear()
        if not events:
            return []
        out: list[Kept] = []
        for event in events:
            for interval in self.book.apply(event):
                out.extend(self.held.relabel(interval, self.machine_type.class_of(interval.cls)))
            log.info(
                "label %s: %s %s %s from %s to %s (%s)",
                event.label_id,
                event.action,
                event.machine,
                event.cls,
                event.start,
                "further notice" if event.end is None else event.end,
                event.source or "no source given",
            )
        self.book.expire(now - self.held.max_age_s - 86400.0)
        with self._lock:
            self.counts["events"] += len(events)
            self.counts["windows_labeled"] += len(out)
        self._save()
        return out

    def label_new(self, windows: list[Window]) -> list[Window]:
        """`windows` with the label of the interval each falls in (it wins over an in-band
        label)."""
        book = self.book
        if not len(book):
            return windows
        out = windows
        for i, w in enumerate(windows):
            if w.machine in book:
                label = book.label_at(w.machine, w.timestamp_ns / 1e9)
                if label is not None and label != w.label:
                    if out is windows:
                        out = list(windows)
                    out[i] = dataclasses.replace(w, label=label)
        if out is not windows:
            with self._lock:
                self.counts["windows_labeled"] += sum(
                    a is not b for a, b in zip(out, windows, strict=True)
                )
        return out

    def hold(
        self,
        windows: Sequence[Window],
        predicted: Iterable[int],
        scores: Iterable[float],
        now: float,
        originals: Sequence[Window] | None = None,
        sureness: Sequence[tuple[float, float]] | None = None,
    ) -> None:
        """Hold classified windows for late labels; `originals` (before `label_new`) tell which
        labels came from an event (those a later event may still change); `sureness`
        (confidence, margin per window) makes them candidates for label requests."""
        if not self.held.max_windows:
            return
        if originals is None or originals is windows:  # label_new changed nothing
            by: Sequence[str | None] = [None] * len(windows)
        else:
            by = ["event" if w is not o else None for w, o in zip(windows, originals, strict=True)]
        self.held.add(windows, predicted, scores, by, now, sureness)

    def forget(self, machines: Sequence[str]) -> None:
        """Drop the held windows of `machines` (evicted by the machine cap); labels stay."""
        self.held.forget(machines)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            counts = dict(self.counts)
        open_labels = self.book.open_labels()
        return {
            **counts,
            "active": len(self.book),
            "open_count": len(open_labels),
            "open": dict(sorted(open_labels.items())[:STATUS_OPEN_LABELS]),  # the status is capped
            "held_windows": len(self.held),
        }

    # -- the file --------------------------------------------------------------------------
    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            obj = json.loads(self.path.read_text("utf-8"))
            if not isinstance(obj, dict) or obj.get("v") != _FILE_VERSION:
                raise ValueError(f"not a version {_FILE_VERSION} labels file")
            events = [LabelEvent.from_json(json.dumps(e)) for e in obj["labels"]]
        except (OSError, ValueError, KeyError, TypeError, PayloadError) as exc:
            aside = self.path.with_name(f"{self.path.name}.corrupt")
            log.error(
                "could not read the label intervals in %s (%s); moved it to %s and starting "
                "without labels: re-send the open labels with `python -m jetson_trainer label`",
                self.path,
                exc,
                aside,
            )
            with contextlib.suppress(OSError):  # unreadable and immovable: overwritten later
                self.path.replace(aside)
            return
        kept = [e for e in events if e.cls in self.machine_type.classes]
        if len(kept) < len(events):  # written under another vocabulary (another model)
            log.warning(
                "dropped %d stored label interval(s) whose class machine type %s has not",
                len(events) - len(kept),
                self.machine_type.name,
            )
        for event in kept:
            self.book.apply(event)
        if kept:
            log.info("restored %d label interval(s) from %s", len(kept), self.path)

    def _save(self) -> None:
        if self.path is None:
            return
        data = {"v": _FILE_VERSION, "labels": [json.loads(e.to_json()) for e in self.book.labels()]}
        try:  # temp file + fsync + rename + directory fsync: a power cut keeps old or new
            atomic_write(self.path, json.dumps(data).encode())
        except OSError as exc:
            log.error(
                "could not save the label intervals to %s (%s); they apply until a restart. "
                "Check free space and permissions of %s",
                self.path,
                exc,
                self.path.parent,
            )
