"""The machine types one node serves: each type's model, drift watch and vocabulary, and which
type each machine is.

A node serves one or more machine types (`--site FILE`, `--types`; protocol/README.md, "Machine
types"). Each `TypeLane` has its own model lifecycle (model/lifecycle.py: verify, vet, hot-swap,
rollback, health watch, its own state dir), its own LiteRT interpreter, its own drift detector
and its own retained model topic(s). `Lanes.route` gives a machine's lane by the types'
membership (`protocol.machine_type.best_type`): the site file's declaration, else what the
type's verified model says; ties go to the type served first (with a site file), else to the
type whose name sorts first. A lane's vocabulary (classes, channels, window length, units) is
its verified model's; before its first model a lane has only what the site file declares.

A node that serves only the built-in type without a site file routes every machine to it, as
before machine types.

>>> from protocol.machine_type import Channel, MachineType
>>> press = MachineType("press", (Channel("force"),), window_length=32, machines=("press-*",))
>>> lanes = Lanes([_Stub("default", DEFAULT_TYPE), _Stub("press", press)], route_all=False)
>>> [getattr(lanes.route(m), "name", None) for m in ("press-1", "m01")]
['press', 'default']
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

from protocol import Manifest
from protocol.machine_type import DEFAULT_TYPE, DEFAULT_TYPE_NAME, MachineType, best_type

from ..loop.drift_watch import DriftWatch
from .config import ServedType
from .lifecycle import ModelManager

__all__ = ["Lanes", "TypeLane"]

MAX_ROUTES = 8192  # machines whose type a router remembers (then it starts over)


class _Routable(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def machine_type(self) -> MachineType | None: ...


L = TypeVar("L", bound=_Routable)


class TypeLane:
    """One machine type this node serves: its model manager and drift watch, its vocabulary
    (the serving model's type, else the site file's declaration), its model topics and counts.

    `windows` is written by the worker, `unclassified` by paho's thread (windows of its machines
    that came while it had no model); both are read by the status thread.
    """

    def __init__(
        self,
        served: ServedType,
        manager: ModelManager,
        drift: DriftWatch,
        model_topics: Sequence[tuple[str, str]],
    ) -> None:
        self.name = served.name
        self.declared = served.declared
        self.manager = manager
        self.drift = drift
        self.model_topics = tuple(model_topics)  # (topic, source name for the manager)
        self.machine_type: MachineType | None = served.declared
        self.wire_type: str | None = None if self.name == DEFAULT_TYPE_NAME else self.name
        self.windows = 0
        self.unclassified = 0
        self._lock = threading.Lock()

    def count_unclassified(self, n: int) -> None:
        """`n` windows of its machines came while it had no model: counted, not classified."""
        with self._lock:
            self.unclassified += n

    @property
    def input_shape(self) -> tuple[int, int] | None:
        """(window length, channels) its windows must have; None before it knows (no site
        declaration and no model yet)."""
        kind = self.machine_type
        return None if kind is None else kind.input_shape

    @property
    def normal(self) -> str:
        """Its healthy class (the built-in type's `normal` while it knows no vocabulary)."""
        kind = self.machine_type
        return DEFAULT_TYPE.normal if kind is None else kind.normal

    def learn(self, manifest: Manifest) -> None:
        """A model of this type serves now: take its vocabulary (the built-in type keeps the
        node's configured one, which the model was checked against); membership stays the site
        file's when it declares the type, and so do its classes when the model knows some of
        them, healthy first (a cold start's anomaly model, or a classifier grown from it: labels
        keep naming every declared class, model/vocabulary.py). The node then puts the classes
        in its class table's order (loop/class_table.py: a model's new names after the others)."""
        if self.name == DEFAULT_TYPE_NAME:
            return
        kind = manifest.machine()
        declared = self.declared
        if declared is not None:
            kind = dataclasses.replace(
                kind, machines=declared.machines, open_classes=declared.open_classes
            )
            known = set(declared.classes)
            if kind.normal == declared.normal and all(c in known for c in kind.classes):
                kind = kind.with_classes(declared.classes)
        self.machine_type = kind


class Lanes(Generic[L]):
    """The lanes of one node and which one each machine is routed to; thread-safe routing.

    `route_all`: every machine goes to the first lane (a node of the built-in type alone, no
    site file: as before machine types).
    """

    def __init__(self, lanes: Sequence[L], *, route_all: bool, sort_ties: bool = False) -> None:
        if not lanes:
            raise ValueError("a node serves at least one machine type")
        self.lanes = tuple(lanes)
        self.primary = self.lanes[0]
        self._route_all = route_all
        self._sort_ties = sort_ties  # no site file: ties go to the type whose name sorts first
        self._lock = threading.Lock()
        self._routes: dict[str, L | None] = {}

    def __len__(self) -> int:
        return len(self.lanes)

    def route(self, machine: str) -> L | None:
        """The lane `machine` belongs to; None when no type this node serves names it."""
        if self._route_all:
            return self.primary
        with self._lock:
            try:
                return self._routes[machine]
            except KeyError:
                pass
            lanes = [lane for lane in self.lanes if lane.machine_type is not None]
            if self._sort_ties:
                lanes.sort(key=lambda lane: lane.name)
            by_type = {id(lane.machine_type): lane for lane in lanes}
            best = best_type([lane.machine_type for lane in lanes if lane.machine_type], machine)
            lane = None if best is None else by_type[id(best)]
            if len(self._routes) >= MAX_ROUTES:
                self._routes.clear()
            self._routes[machine] = lane
            return lane

    def changed(self) -> None:
        """A lane's vocabulary or membership changed (a model installed): route afresh."""
        with self._lock:
            self._routes.clear()


@dataclasses.dataclass
class _Stub:
    """A lane as the router sees it (for the doctest)."""

    name: str
    machine_type: MachineType | None
