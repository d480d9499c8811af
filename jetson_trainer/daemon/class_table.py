"""The trainer's class table for its machine type: what the labels in its window store index.

The site file's declared classes first, then each class name a node's drift batch brought that
the type does not declare — a type with `open_classes`, whose technician named a fault nobody
listed — appended in the order they came, never reordered or removed, so a stored row's label
keeps naming its class (`classes.json` beside the store, written before the rows that index it;
nodekit/class_file.py). Growth (daemon/growth.py) sees the type with this table as its classes:
a new name is a class the champion lacks, appended after the known ones (healthy first).

A drift batch's labels and predictions are translated by name: a version 3 batch indexes its
own class table, an older one the type's declared classes. A record naming a class the type
neither has nor may add (a closed type, or 64 classes already) is refused and counted, its
window not stored (protocol/README.md, "Anomaly models and class growth"). So is a new name
while `MAX_UNLEARNED` names the type does not declare wait for the champion to learn them: a
node (one login) that sends made-up names cannot fill the table for good.

>>> from protocol.machine_type import Channel, MachineType
>>> from protocol.window import Window
>>> import numpy as np
>>> fan = MachineType("fan", (Channel("vib"),), window_length=4, classes=("ok", "loose"),
...                   open_classes=True)
>>> table = ClassTable(None, fan)
>>> w = Window("fan-1", 1, 5, np.zeros((4, 1), np.float32), label=1)
>>> b = DriftBatch(bytes(16), "pi-1", 2, (Kept(w, "labeled", 0, 0.5),), "fan", ("ok", "seal"))
>>> out, refused = table.translate(b)
>>> table.classes, out.records[0].window.label, out.classes, refused
(('ok', 'loose', 'seal'), 2, None, [])
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from nodekit.class_file import CLASSES_FILE, load_classes, save_classes
from nodekit.errors import StorageError
from protocol.drift_batch import DriftBatch, Kept
from protocol.errors import PayloadError
from protocol.machine_type import MachineType

__all__ = ["MAX_UNLEARNED", "ClassTable"]

log = logging.getLogger(__name__)


MAX_UNLEARNED = 16  # added names the champion does not know yet (as on a node)


class ClassTable:
    """The class table of machine type `declared` (see the module doc); `path` None: memory
    only; `learned()` the champion's classes (none: the declared ones). `translate` runs on
    the intake thread, `kind` is read by the policy thread."""

    def __init__(
        self,
        path: Path | None,
        declared: MachineType,
        learned: Callable[[], Sequence[str]] | None = None,
    ) -> None:
        self.path = path
        self.declared = declared
        self._learned = learned or (lambda: ())
        self._lock = threading.Lock()
        saved = None if path is None else load_classes(path, declared.name)
        kind = declared
        if saved is not None:
            try:  # the saved table first (its order is what the store's rows index)
                kind = declared.with_classes(saved).with_known(declared.classes)
            except ValueError as exc:  # ConfigError: a saved name is no longer valid
                log.error("ignored the class table %s: %s", path, exc)
        self.kind = kind  # replaced whole (never mutated): safe to read from any thread
        self.refused = 0  # records naming a class the type neither has nor may add

    @classmethod
    def beside(
        cls,
        store_dir: Path,
        declared: MachineType,
        learned: Callable[[], Sequence[str]] | None = None,
    ) -> ClassTable:
        return cls(store_dir / CLASSES_FILE, declared, learned)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.kind.classes

    def translate(self, batch: DriftBatch) -> tuple[DriftBatch | None, list[str]]:
        """`batch` with its labels and predictions as this table's indexes (the new names of
        an open type appended, and saved first), without the records it cannot name; and why
        each of those was refused. None when no record is left."""
        source = batch.classes if batch.classes is not None else self.declared.classes
        with self._lock:
            kind, refused, records = self.kind, [], []
            for k in batch.records:
                label = k.window.label
                try:
                    if isinstance(label, int):
                        if not 0 <= label < len(source):
                            raise PayloadError(
                                f"label {label} is not a class of machine type {kind.name} "
                                f"(0..{len(source) - 1})",
                                kind="bad_label",
                            )
                        grown = kind.with_class(source[label])  # itself when it has it
                        if grown is not kind:
                            self._check_room(kind, source[label])
                        kind = grown
                except PayloadError as exc:
                    refused.append(str(exc))
                    continue
                records.append(k)
            if kind is not self.kind:
                self._save(kind)
                self.kind = kind
            self.refused += len(refused)
        if refused and self.refused == len(refused):  # the first time; then only counted
            log.warning(
                "refused %d record(s) of a drift batch from %s: %s (further ones are counted)",
                len(refused),
                batch.node,
                refused[0],
            )
        if not records:
            return None, refused
        index = {c: i for i, c in enumerate(kind.classes)}
        out = tuple(_renamed(k, source, index) for k in records)
        return dataclasses.replace(batch, records=out, classes=None), refused

    def _check_room(self, kind: MachineType, name: str) -> None:
        """PayloadError (`too_many_classes`) when `kind` holds MAX_UNLEARNED added names the
        champion has not learned: `name` waits until growth learned some of them."""
        known = set(self.declared.classes) | set(self._learned())
        waiting = [c for c in kind.classes if c not in known]
        if len(waiting) >= MAX_UNLEARNED:
            raise PayloadError(
                f"machine type {kind.name} has {len(waiting)} added classes no model has "
                f"learned yet ({', '.join(waiting[:4])}, …); class {name[:64]!r} is refused "
                "until class growth learns some of them",
                kind="too_many_classes",
            )

    def _save(self, kind: MachineType) -> None:
        added = [c for c in kind.classes if c not in self.kind.classes]
        log.info(
            "machine type %s: drift batches name class(es) %s, which it does not list yet; "
            "added after %s (the champion learns them by class growth)",
            kind.name,
            ", ".join(added),
            ", ".join(self.kind.classes),
        )
        if self.path is None:
            return
        try:  # before the rows that index it; failing, the batch is not stored (retried)
            save_classes(self.path, kind.name, kind.classes)
        except OSError as exc:
            raise StorageError(f"could not save the class table {self.path}: {exc}") from exc


def _renamed(k: Kept, source: tuple[str, ...], index: dict[str, int]) -> Kept:
    """`k` with its label and prediction moved from `source`'s indexes to `index`'s."""
    window, predicted = k.window, k.predicted
    if isinstance(window.label, int):
        window = dataclasses.replace(window, label=index[source[window.label]])
    if predicted is not None:
        name = source[predicted] if predicted < len(source) else None
        predicted = index.get(name) if name is not None else None
    if window is k.window and predicted == k.predicted:
        return k
    return dataclasses.replace(k, window=window, predicted=predicted)
