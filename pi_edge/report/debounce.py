"""The debounced state of each machine: a class holds only after N consecutive windows of it.

One prediction per window flickers; an operator wants "m01 has had a bearing fault since
10:42". `Debouncer.update` takes one classified window and returns a `Change` only when the
machine's debounced class changes, so the worker publishes the retained state and the event
(protocol.machine_state) on a change and does nothing else per window but a counter update.

Rules per machine: the debounced class starts unknown (None). A window whose class differs from
the debounced one starts or extends a run of that class; a window of the debounced class, or
of yet another class, breaks the run. A run of `windows` windows becomes the new debounced class,
`since` the first window of the run. Windows below `min_confidence` are ignored: they neither
extend nor break a run. Pure: times come in with the windows; the caller forgets evicted
machines (`forget`), like every per-machine structure of the node.

>>> d = Debouncer(windows=3)
>>> stream = ["normal"] * 3 + ["bearing_fault", "normal"] + ["bearing_fault"] * 3 + ["normal"] * 3
>>> for i, label in enumerate(stream):
...     change = d.update("m01", label, 0.9, float(i))
...     if change is not None:
...         print(i, change.previous, "->", change.cls, change.state, change.event,
...               change.duration_s)
2 None -> normal normal None None
7 normal -> bearing_fault fault fault_start 5.0
10 bearing_fault -> normal normal fault_end 3.0

A flapping stream never holds a class for three windows, so nothing changes:

>>> [d.update("m02", label, 0.9, 0.0) for label in ["normal", "pump_fault"] * 10].count(None)
20
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from protocol.machine_state import NORMAL, MachineEvent, MachineState, event_of, state_of

__all__ = ["DEFAULT_STATE_WINDOWS", "Change", "Debouncer"]

DEFAULT_STATE_WINDOWS = 5


@dataclass(frozen=True, slots=True)
class Change:
    """`machine`'s debounced class became `cls` at `ts` (it began at `since`).

    `previous` is the class before (None the first time), `duration_s` how long it lasted;
    `confidence` the mean confidence of the windows that confirmed `cls`.
    """

    machine: str
    cls: str
    previous: str | None
    confidence: float
    since: float
    ts: float
    duration_s: float | None
    normal: str = NORMAL  # the class that is no fault (the machine type's healthy class)
    machine_type: str | None = None  # the machine's type; None: the built-in type

    @property
    def state(self) -> str:
        return state_of(self.cls, self.normal)

    @property
    def event(self) -> str | None:
        """The event this change is, or None (a first class of normal is not an event)."""
        return event_of(self.previous, self.cls, self.normal)

    def messages(
        self, node: str, drift: str, model_version: int
    ) -> tuple[MachineState, MachineEvent | None]:
        """The retained state and, if this change is one, the event to publish."""
        conf = round(self.confidence, 4)
        kind: dict[str, Any] = (
            {}
            if self.machine_type is None
            else {"machine_type": self.machine_type, "normal": self.normal}
        )
        state = MachineState(
            self.machine,
            node,
            self.state,
            self.cls,
            conf,
            self.since,
            drift,
            model_version,
            self.ts,
            **kind,
        )
        event = self.event
        if event is None:
            return state, None
        return state, MachineEvent(
            self.machine,
            node,
            event,
            self.cls,
            self.previous,
            conf,
            self.ts,
            None if self.duration_s is None else round(self.duration_s, 3),
            model_version,
            **kind,
        )


class _Track:
    """One machine: its debounced class and the run that may replace it."""

    __slots__ = ("candidate", "confidence_sum", "count", "current", "run_start", "since")

    def __init__(self) -> None:
        self.current: str | None = None
        self.since = 0.0
        self.candidate: str | None = None
        self.count = 0
        self.confidence_sum = 0.0
        self.run_start = 0.0


class Debouncer:
    """Per-machine debounced class; not thread-safe (the worker owns it).

    Parameters: `windows` — consecutive windows a new class needs (≥ 1); `min_confidence` —
    windows less confident than this are ignored (0: none are); `normal` — the class that is no
    fault (a node configured with other class names passes its first one).
    """

    def __init__(
        self,
        windows: int = DEFAULT_STATE_WINDOWS,
        min_confidence: float = 0.0,
        normal: str = NORMAL,
    ) -> None:
        if windows < 1:
            raise ValueError(f"state windows {windows} must be ≥ 1")
        if not 0.0 <= min_confidence < 1.0:
            raise ValueError(f"state min confidence {min_confidence} must be in 0..1 (1 excluded)")
        self.windows = windows
        self.min_confidence = min_confidence
        self.normal = normal
        self._tracks: dict[str, _Track] = {}

    def update(
        self,
        machine: str,
        label: str,
        confidence: float,
        t: float,
        kind: tuple[str | None, str] | None = None,
    ) -> Change | None:
        """Take one classified window of `machine` (seen at `t`, s); the change it makes, if any.

        `kind`: the machine's type and its healthy class, for a machine of another type than
        the built-in one (None: this debouncer's `normal`, the built-in type).
        """
        if confidence < self.min_confidence:
            return None
        track = self._tracks.get(machine)
        if track is None:
            track = self._tracks[machine] = _Track()
        if label == track.current:
            track.candidate, track.count = None, 0
            return None
        if label == track.candidate:
            track.count += 1
            track.confidence_sum += confidence
        else:
            track.candidate, track.count = label, 1
            track.confidence_sum, track.run_start = confidence, t
        if track.count < self.windows:
            return None
        previous, previous_since = track.current, track.since
        track.current, track.since = label, track.run_start
        track.candidate, track.count = None, 0
        return Change(
            machine,
            label,
            previous,
            min(1.0, track.confidence_sum / self.windows),
            track.since,
            t,
            None if previous is None else max(0.0, track.since - previous_since),
            self.normal if kind is None else kind[1],
            None if kind is None else kind[0],
        )

    def current(self, machine: str) -> str | None:
        """`machine`'s debounced class (None: unknown)."""
        track = self._tracks.get(machine)
        return None if track is None else track.current

    def forget(self, machines: Iterable[str]) -> None:
        """Drop `machines` (evicted by the node's machine cap); they start unknown again."""
        for m in machines:
            self._tracks.pop(m, None)

    def __len__(self) -> int:
        return len(self._tracks)
