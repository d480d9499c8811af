"""A machine type's class table on the node: the names its kept windows' labels index.

It starts as the type's declared classes (the site file's; without one, its first verified
model's) and only grows at its end, so a label index written into the durable buffer keeps
naming the same class after the table grew or the node restarted (`classes.json` in the type's
state dir, nodekit/class_file.py):

- a verified model's classes it lacks are appended (a model grown by a class nobody declared);
- a type with `open_classes` appends the class a technician's label event names, if it is a
  valid name (1–64 printable characters, no `/ + #`, not `anomaly`) — at most 64 classes, and at
  most `MAX_UNLEARNED` names no model has learned yet: a label source that floods the node with
  made-up names is refused (`too_many_classes`, counted by the node) once they are used up;
- a closed type refuses a name it has not, with an error listing its classes.

When the table is not the site file's declared list, the type's drift batches carry it
(protocol.drift_batch version 3), so the trainer reads every label by name.

>>> from protocol.machine_type import Channel, MachineType
>>> fan = MachineType("fan", (Channel("vib"),), classes=("ok",), open_classes=True)
>>> table = ClassTable(None, fan)
>>> table.wire(), table.add("seal leak").classes, table.wire()
(None, ('ok', 'seal leak'), ('ok', 'seal leak'))
>>> table.learn(fan.with_classes(("ok", "loose"))).classes
('ok', 'seal leak', 'loose')
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from nodekit.class_file import CLASSES_FILE, load_classes, save_classes
from protocol import ConfigError, PayloadError
from protocol.machine_type import MachineType

__all__ = ["MAX_UNLEARNED", "ClassTable"]

log = logging.getLogger(__name__)

MAX_UNLEARNED = 16  # names labels added that no verified model knows yet


class ClassTable:
    """The class table of one machine type (see the module doc); `state_dir` None: memory only.

    `declared` is the site file's declaration (None: the node learns the type from its first
    model). `add` runs on paho's thread, `learn` on the worker, `wire` on the shipper's.
    """

    def __init__(self, state_dir: Path | None, declared: MachineType | None) -> None:
        self.path = None if state_dir is None else state_dir / CLASSES_FILE
        self.site = None if declared is None else declared.classes
        self._lock = threading.Lock()
        self._learned: set[str] = set(self.site or ())  # names a site or a model gave
        self.kind: MachineType | None = None  # replaced whole: safe to read from any thread
        if declared is not None:
            self.kind = self._restored(declared)

    def _restored(self, kind: MachineType) -> MachineType:
        """`kind` with the names its saved table had (in their order) first."""
        saved = None if self.path is None else load_classes(self.path, kind.name)
        if saved is None:
            return kind
        try:
            return kind.with_classes(saved).with_known(kind.classes)
        except ConfigError as exc:  # a saved name no longer valid: the declared ones serve
            log.error("ignored the class table %s: %s", self.path, exc)
            return kind

    def learn(self, machine_type: MachineType) -> MachineType:
        """A verified model of the type serves (its type is `machine_type`, its classes the
        model's or the declared ones): the table with the model's classes it lacked appended."""
        with self._lock:
            kind = self.kind
            if kind is None:  # no site declaration: the first model's classes (and the saved)
                new = self._restored(machine_type)
                self._learned.update(machine_type.classes)
            else:
                new = machine_type.with_classes(kind.classes).with_known(machine_type.classes)
                self._learned.update(machine_type.classes)
            dropped = [c for c in machine_type.classes if c not in new.classes]
            if dropped:  # 64 classes already: the model's outputs of these go unnamed
                log.error(
                    "machine type %s has %d classes already; its model's class(es) %s cannot be "
                    "added (their predictions go to the trainer as none)",
                    new.name,
                    len(new.classes),
                    ", ".join(dropped),
                )
            try:
                self._save(kind, new)
            except OSError as exc:  # it serves all the same; a restart may forget new names
                log.error("could not save the class table %s: %s", self.path, exc)
            self.kind = new
            return new

    def add(self, name: str) -> MachineType:
        """The table with class `name` (a label event's): appended for an open type; PayloadError
        (`bad_label`, listing the classes) for a closed one, (`too_many_classes`) past the
        bounds."""
        with self._lock:
            kind = self.kind
            if kind is None:
                raise PayloadError(
                    f"class {name!r}: the machine type has no classes yet", "bad_label"
                )
            new = kind.with_class(name)  # itself if it has the name; raises if it may not
            if new is kind:
                return kind
            unlearned = [c for c in kind.classes if c not in self._learned]
            if len(unlearned) >= MAX_UNLEARNED:
                raise PayloadError(
                    f"machine type {kind.name} has {len(unlearned)} classes labels named that no "
                    f"model has learned yet ({', '.join(unlearned[:4])}, …); class {name!r} is "
                    f"refused until the trainer grows its model by some of them",
                    kind="too_many_classes",
                )
            try:  # before any label indexes the new name
                self._save(kind, new)
            except OSError as exc:
                raise PayloadError(
                    f"could not save the class table {self.path} ({exc}); check free space "
                    f"and permissions of {self.path and self.path.parent}",
                    kind="classes_not_saved",
                ) from exc
            self.kind = new
            log.info(
                "machine type %s: a label names class %r, which it did not list; added as its "
                "class %d (the trainer grows its model by it)",
                kind.name,
                name,
                len(new.classes) - 1,
            )
            return new

    def wire(self) -> tuple[str, ...] | None:
        """The table a drift batch must carry (version 3): None when it is the site file's
        declared list (the trainer knows it), else the table."""
        kind = self.kind
        if kind is None or kind.classes == self.site:
            return None
        return kind.classes

    def _save(self, old: MachineType | None, new: MachineType) -> None:
        """Write the table if it changed (OSError if it cannot)."""
        if self.path is None or (old is not None and old.classes == new.classes):
            return
        save_classes(self.path, new.name, new.classes)
