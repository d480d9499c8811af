"""Drift batches: kept windows a Pi ships to the trainer on `…/drift/batches/{node}`.

Binary, little-endian — see protocol/README.md:

    header:  magic b"ED" | version u8 (1, 2 or 3) | reserved u8 | n_records u16
             | batch_id 16 bytes | node_len u8 | node id (UTF-8) | model_version u32 (0 = none)
             [versions 2 and 3: | type_len u8 | machine type (UTF-8)]
             [version 3 only: | n_classes u8 | n_classes × (name_len u16 | class name (UTF-8))]
    record:  reason u8 | predicted int8 (-1 = none) | reserved u16 | score float64
             | frame_len u32 | window frame (protocol.window binary frame, label inside)

Version 1 is a batch of the built-in machine type's windows (what every batch was before machine
types); version 2 names the machine type whose model (`model_version`) classified them, and the
windows' labels and predictions index that type's classes. A node writes version 1 for the
built-in type, so a trainer of before machine types reads it; such a trainer refuses version 2.
Version 3 also carries the class table its labels and predictions index (`classes`), by name:
a node writes it when that table is not the type's declared list (a type with `open_classes`
whose technicians named a class the site file does not list, or a node that learned the type's
classes from its models), so a label of a class nobody declared reaches the trainer unambiguous.

A window's identity is (machine, seq, timestamp_ns): the trainer drops duplicates by it, so the
Pi may resend a batch whose acknowledgement it never saw (at-least-once).

>>> import numpy as np
>>> from protocol.window import Window
>>> w = Window("m01", 3, 5, np.zeros((60, 4), np.float32), label=2)
>>> batch = DriftBatch(b"0123456789abcdef", "pi-1", 4, (Kept(w, "labeled", 1, 0.4),))
>>> decode_batch(encode_batch(batch)) == batch, encode_batch(batch)[2]
(True, 1)
>>> fans = DriftBatch(b"0123456789abcdef", "pi-1", 2, (Kept(w, "labeled", 1, 0.4),), "fan")
>>> decode_batch(encode_batch(fans)).machine_type, encode_batch(fans)[2]
('fan', 2)
>>> grown = DriftBatch(b"0123456789abcdef", "pi-1", 2, (Kept(w, "labeled", 1, 0.4),), "fan",
...                    ("ok", "loose", "seal leak"))
>>> back = decode_batch(encode_batch(grown))
>>> back.classes, back.records[0].window.label, encode_batch(grown)[2]
(('ok', 'loose', 'seal leak'), 2, 3)
>>> window_id(w)
'm01:3:5'
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from .errors import PayloadError
from .names import check_name
from .topics import DEFAULT_TYPE_NAME, check_id
from .window import Window, decode_window, encode_window

MAGIC = b"ED"
BATCH_VERSION = 3  # the newest this build writes (with a class table)
BATCH_VERSIONS = (1, 2, 3)
MAX_TABLE_CLASSES = 64  # a window's label byte indexes at most 64 classes (protocol.window)
RESERVED_CLASS = "anomaly"  # an anomaly model's verdict, never a class of a type
REASONS: tuple[str, ...] = ("labeled", "low_confidence", "out_of_distribution", "drift")
MAX_BATCH_BYTES = 8 * 1024 * 1024
MAX_RECORDS = 4096
_HEAD = struct.Struct("<2sBBH16sB")
_MODEL = struct.Struct("<I")
_RECORD = struct.Struct("<BbHdI")
_NAME_LEN = struct.Struct("<H")


@dataclass(frozen=True, slots=True)
class Kept:
    """One kept window and why: `reason` in REASONS, the Pi's prediction and its score."""

    window: Window
    reason: str
    predicted: int | None = None
    score: float = 0.0

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise PayloadError(f"kept-window reason {self.reason!r} not in {REASONS}", "bad_field")


@dataclass(frozen=True, slots=True)
class DriftBatch:
    """A batch of kept windows from one Pi node; `batch_id` is 16 random bytes.

    `classes`: the class table the records' labels and predictions index (version 3), None: the
    machine type's declared classes (versions 1 and 2).
    """

    batch_id: bytes
    node: str
    model_version: int
    records: tuple[Kept, ...]
    machine_type: str = DEFAULT_TYPE_NAME
    classes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.batch_id) != 16:
            raise PayloadError("batch_id must be 16 bytes", kind="bad_field")
        check_id(self.node, "node id")
        check_id(self.machine_type, "machine type")
        if not 0 < len(self.records) <= MAX_RECORDS:
            raise PayloadError(f"a batch holds 1..{MAX_RECORDS} records", kind="bad_field")
        if self.classes is not None:
            object.__setattr__(self, "classes", check_table(self.classes))
            n = len(self.classes)
            for i, k in enumerate(self.records):
                label, predicted = k.window.label, k.predicted
                if (isinstance(label, int) and label >= n) or (
                    predicted is not None and predicted >= n
                ):
                    raise PayloadError(
                        f"drift batch record {i} has label {label} / predicted {predicted}, "
                        f"beyond its class table of {n} ({', '.join(self.classes)})",
                        kind="bad_field",
                    )


def check_table(classes: object) -> tuple[str, ...]:
    """A drift batch's class table: 1..64 distinct class names, none `anomaly`; PayloadError.

    >>> check_table(["ok", "3"])
    ('ok', '3')
    >>> check_table(["ok", "ok"])
    Traceback (most recent call last):
    ...
    protocol.errors.PayloadError: drift batch class table names a class twice: ['ok', 'ok']
    """
    if not isinstance(classes, tuple | list) or not 1 <= len(classes) <= MAX_TABLE_CLASSES:
        raise PayloadError(
            f"drift batch class table must list 1..{MAX_TABLE_CLASSES} names", kind="bad_field"
        )
    names = tuple(check_name(c, "drift batch class") for c in classes)
    if len(set(names)) != len(names):
        raise PayloadError(
            f"drift batch class table names a class twice: {list(names)[:64]}", kind="bad_field"
        )
    if RESERVED_CLASS in names:
        raise PayloadError(
            f"drift batch class table names {RESERVED_CLASS!r}, an anomaly model's verdict",
            kind="bad_field",
        )
    return names


def window_id(window: Window) -> str:
    """The key duplicates are dropped by: machine:seq:timestamp_ns."""
    return f"{window.machine}:{window.seq}:{window.timestamp_ns}"


def encode_batch(batch: DriftBatch) -> bytes:
    node = batch.node.encode()
    if batch.classes is not None:
        version = 3
    else:
        version = 1 if batch.machine_type == DEFAULT_TYPE_NAME else 2
    parts = [
        _HEAD.pack(MAGIC, version, 0, len(batch.records), batch.batch_id, len(node)),
        node,
        _MODEL.pack(batch.model_version),
    ]
    if version >= 2:
        kind = batch.machine_type.encode()
        parts += [bytes([len(kind)]), kind]
    if batch.classes is not None:
        parts.append(bytes([len(batch.classes)]))
        for name in batch.classes:
            raw = name.encode()
            parts += [_NAME_LEN.pack(len(raw)), raw]
    for rec in batch.records:
        frame = encode_window(rec.window)
        predicted = -1 if rec.predicted is None else rec.predicted
        parts.append(_RECORD.pack(REASONS.index(rec.reason), predicted, 0, rec.score, len(frame)))
        parts.append(frame)
    return b"".join(parts)


def decode_batch(data: bytes) -> DriftBatch:
    """Parse and validate a batch; PayloadError (with .kind) on anything malformed."""
    n = len(data)
    if n > MAX_BATCH_BYTES:
        raise PayloadError(f"drift batch is {n} bytes, limit {MAX_BATCH_BYTES}", "too_large")
    if n < _HEAD.size:
        raise PayloadError(f"drift batch is {n} bytes, shorter than its header", "truncated")
    magic, version, _, count, batch_id, node_len = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise PayloadError(
            f"drift batch starts with {bytes(magic)!r}, expected {MAGIC!r}", kind="bad_magic"
        )
    if version not in BATCH_VERSIONS:
        raise PayloadError(
            f"drift batch version {version}, this build reads {list(BATCH_VERSIONS)}; upgrade "
            "the trainer",
            kind="bad_version",
        )
    if not 1 <= count <= MAX_RECORDS:
        raise PayloadError(
            f"drift batch claims {count} records; a batch holds 1..{MAX_RECORDS}", "bad_field"
        )
    pos = _HEAD.size
    if n < pos + node_len + _MODEL.size:
        raise PayloadError("drift batch ends inside its header", kind="truncated")
    try:
        node = check_id(bytes(data[pos : pos + node_len]).decode(), "drift batch node id")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"drift batch node id is not UTF-8: {exc}", kind="bad_id") from exc
    pos += node_len
    (model_version,) = _MODEL.unpack_from(data, pos)
    pos += _MODEL.size
    machine_type = DEFAULT_TYPE_NAME
    classes: tuple[str, ...] | None = None
    if version >= 2:
        type_len = data[pos] if pos < n else 0
        if not 1 <= type_len <= 64 or n < pos + 1 + type_len:
            raise PayloadError("drift batch ends inside its machine type", kind="truncated")
        try:
            machine_type = check_id(
                bytes(data[pos + 1 : pos + 1 + type_len]).decode(), "drift batch machine type"
            )
        except UnicodeDecodeError as exc:
            raise PayloadError(f"drift batch machine type is not UTF-8: {exc}", "bad_id") from exc
        pos += 1 + type_len
    if version == 3:
        classes, pos = _decode_table(data, pos)
    records = []
    for i in range(count):
        if n < pos + _RECORD.size:
            raise PayloadError(f"drift batch ends inside record {i} of {count}", "truncated")
        reason, predicted, _, score, frame_len = _RECORD.unpack_from(data, pos)
        pos += _RECORD.size
        if reason >= len(REASONS):
            raise PayloadError(
                f"drift batch record {i} has unknown reason code {reason}; known are "
                f"0..{len(REASONS) - 1} {REASONS}",
                kind="bad_field",
            )
        if predicted < -1:
            raise PayloadError(
                f"drift batch record {i} has predicted class {predicted}; -1 means none",
                kind="bad_field",
            )
        if not math.isfinite(score):
            raise PayloadError(
                f"drift batch record {i} has score {score}; scores must be finite",
                kind="non_finite",
            )
        if pos + frame_len > n:
            raise PayloadError(f"drift batch record {i} overruns the payload", "truncated")
        try:
            window = decode_window(bytes(data[pos : pos + frame_len]))
        except PayloadError as exc:
            raise PayloadError(f"drift batch record {i}: {exc}", kind=exc.kind) from exc
        pos += frame_len
        records.append(
            Kept(window, REASONS[reason], None if predicted < 0 else predicted, float(score))
        )
    if pos != n:
        raise PayloadError(f"drift batch has {n - pos} trailing bytes", kind="malformed")
    return DriftBatch(bytes(batch_id), node, model_version, tuple(records), machine_type, classes)


def _decode_table(data: bytes, pos: int) -> tuple[tuple[str, ...], int]:
    """A version 3 header's class table at `pos`, and the position after it."""
    n = len(data)
    count = data[pos] if pos < n else 0
    if not 1 <= count <= MAX_TABLE_CLASSES:
        raise PayloadError(
            f"drift batch class table holds {count} names; 1..{MAX_TABLE_CLASSES}", "bad_field"
        )
    pos += 1
    names = []
    for i in range(count):
        if n < pos + _NAME_LEN.size:
            raise PayloadError(f"drift batch ends inside class name {i}", kind="truncated")
        (size,) = _NAME_LEN.unpack_from(data, pos)
        pos += _NAME_LEN.size
        if not 1 <= size <= 4 * 64 or n < pos + size:
            raise PayloadError(f"drift batch class name {i} has {size} bytes", kind="truncated")
        try:
            names.append(bytes(data[pos : pos + size]).decode())
        except UnicodeDecodeError as exc:
            raise PayloadError(
                f"drift batch class name {i} is not UTF-8: {exc}", "bad_utf8"
            ) from exc
        pos += size
    return check_table(names), pos
