"""A machine type's class table on disk: `classes.json`, the names its stored labels index.

A node's kept-window buffer and a trainer's window store hold labels as indexes into a class
table that only grows at its end (protocol.machine_type `with_class`, `with_known`); the table
must outlive a restart, or a stored index would name another class. One small JSON file per
type, written whole (temp file, fsync, rename: a power cut leaves the old or the new one):

    {"v": 1, "type": "fan", "classes": ["ok", "imbalance", "seal leak"]}

A file that cannot be read is moved aside (`classes.json.corrupt`, kept) and logged; the caller
starts from the type's declared classes.

>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "classes.json"
>>> load_classes(path, "fan") is None
True
>>> save_classes(path, "fan", ("ok", "seal leak"))
>>> load_classes(path, "fan")
('ok', 'seal leak')
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from .storage import atomic_write

__all__ = ["CLASSES_FILE", "load_classes", "save_classes"]

log = logging.getLogger(__name__)

CLASSES_FILE = "classes.json"
_VERSION = 1
_MAX_BYTES = 64 * 1024  # 64 names of ≤ 64 characters, escaped: far below


def load_classes(path: Path, type_name: str) -> tuple[str, ...] | None:
    """The class table saved at `path` for machine type `type_name`; None if there is none (or
    it was unreadable, and has been moved aside)."""
    if not path.exists():
        return None
    try:
        raw = path.read_bytes()
        if len(raw) > _MAX_BYTES:
            raise ValueError(f"{len(raw)} bytes, more than a class table takes")
        obj = json.loads(raw)
        if not isinstance(obj, dict) or obj.get("v") != _VERSION:
            raise ValueError(f"not a version {_VERSION} class table")
        if obj.get("type") != type_name:
            raise ValueError(f"the class table of machine type {obj.get('type')!r}")
        names = obj.get("classes")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or not names:
            raise ValueError("its classes are not a list of names")
        return tuple(names)
    except (OSError, ValueError) as exc:
        aside = path.with_name(f"{path.name}.corrupt")
        log.error(
            "could not read the class table %s (%s); moved it to %s and starting from machine "
            "type %s's declared classes: labels of classes added since may be misread",
            path,
            exc,
            aside,
            type_name,
        )
        with contextlib.suppress(OSError):
            path.replace(aside)
        return None


def save_classes(path: Path, type_name: str, classes: Sequence[str]) -> None:
    """Write the class table of `type_name` to `path` atomically (OSError if it cannot)."""
    data = {"v": _VERSION, "type": type_name, "classes": list(classes)}
    atomic_write(path, json.dumps(data, ensure_ascii=True).encode())
