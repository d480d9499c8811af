"""The window codec: one multichannel sensor window, as compact binary or as JSON.

Binary frame (all little-endian), format version 1 — see protocol/README.md:

    offset size field
    0      2    magic        b"EW"
    2      1    version      1
    3      1    label        int8: -1 = no ground truth, else 0..63, the index of a class
                                of the machine's type (protocol.machine_type)
    4      2    n_samples    uint16 T (1..4096)
    6      1    n_channels   uint8  C (1..16)
    7      1    id_len       uint8  L (1..64)
    8      8    seq          uint64 sequence number per machine
    16     8    timestamp_ns int64  sensor time, ns since the Unix epoch (0 = unknown)
    24     L    machine id   UTF-8, [A-Za-z0-9_.-]
    24+L   4TC  samples      float32, sample-major: t0c0 t0c1 .. t0c(C-1) t1c0 ..

>>> import numpy as np
>>> w = Window("m01", 7, 1_700_000_000_000_000_000, np.ones((60, 4), np.float32), label=2)
>>> frame = encode_window(w)
>>> len(frame), frame[:4]
(987, b'EW\\x01\\x02')
>>> decode_window(frame) == w
True
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ._json import loads, need_int, short
from .errors import PayloadError
from .names import check_name
from .schema import CHANNELS, CLASSES, NUM_CHANNELS, WINDOW_LENGTH
from .topics import check_id

MAGIC = b"EW"
WIRE_VERSION = 1
HEADER = struct.Struct("<2sBbHBBQq")
MAX_PAYLOAD_BYTES = 1 << 20  # 1 MiB: far above any real window, far below broker limits
MAX_JSON_BYTES = 128 * 1024  # parsing JSON costs up to ~120 ns a byte: a decode stays < 20 ms
MAX_SEQ = (1 << 64) - 1
MIN_TS_NS, MAX_TS_NS = -(1 << 63), (1 << 63) - 1
MAX_SAMPLES = 4096
MAX_CHANNELS = 16
NO_LABEL = -1
MAX_LABEL = 63  # a label index names one of a machine type's ≤ 64 classes
_JSON_FIELDS = frozenset({"v", "machine", "seq", "ts_ns", "label", "channels", "data"})

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True, eq=False)
class Window:
    """One window of T samples × C channels from one machine, with optional ground truth.

    `frame` is the binary frame the window was decoded from: it travels with the window to the
    Pi's buffer, the drift batch and the trainer's store, so a kept window is never re-encoded.
    It is not an init argument, so `dataclasses.replace` (a new label, say) drops it.
    """

    machine: str
    seq: int
    timestamp_ns: int
    data: FloatArray = field(repr=False)
    label: int | str | None = None  # an index into the machine type's classes, or a class name
    frame: bytes | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        check_id(self.machine)
        if not 0 <= self.seq <= MAX_SEQ:
            raise PayloadError(f"seq {self.seq} must be in 0..2**64-1", kind="bad_field")
        if not MIN_TS_NS <= self.timestamp_ns <= MAX_TS_NS:
            raise PayloadError(f"timestamp_ns {self.timestamp_ns} overflows int64", "bad_field")
        data = self.data
        if not isinstance(data, np.ndarray) or data.ndim != 2:
            raise PayloadError("window data must be a 2-D array (samples, channels)", "bad_shape")
        t, c = data.shape
        if not (1 <= t <= MAX_SAMPLES and 1 <= c <= MAX_CHANNELS):
            raise PayloadError(
                f"window shape {data.shape} is outside 1..{MAX_SAMPLES} × 1..{MAX_CHANNELS}",
                kind="bad_shape",
            )
        if data.dtype != np.float32:
            object.__setattr__(self, "data", data.astype(np.float32))
        label = self.label
        if label is not None and (isinstance(label, bool) or not isinstance(label, int | str)):
            raise PayloadError(
                f"window label {short(label)} is not a class name or index", "bad_label"
            )
        if isinstance(label, int) and not 0 <= label <= MAX_LABEL:
            raise PayloadError(
                f"window label {label} is not 0..{MAX_LABEL} (an index into the machine type's "
                "classes)",
                kind="bad_label",
            )
        if isinstance(label, str):
            check_name(label)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.data.shape[0]), int(self.data.shape[1]))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Window):
            return NotImplemented
        return (
            (self.machine, self.seq, self.timestamp_ns, self.label)
            == (other.machine, other.seq, other.timestamp_ns, other.label)
            and self.data.shape == other.data.shape
            and bool(np.array_equal(self.data, other.data))
        )

    __hash__ = None  # type: ignore[assignment]


def _check_finite(data: FloatArray) -> None:
    if not np.isfinite(data).all():
        bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise PayloadError(
            f"window has {bad} NaN/inf sample(s); send finite float32 values only",
            kind="non_finite",
        )


def encode_window(window: Window) -> bytes:
    """Binary frame for `window` (the received one, if it came as a frame); refuses NaN/inf."""
    if window.frame is not None:
        return window.frame
    _check_finite(window.data)
    mid = window.machine.encode()
    t, c = window.shape
    if isinstance(window.label, str):
        raise PayloadError(
            f"window label {window.label!r} is a class name; a binary frame carries its index in "
            "the machine type's classes (MachineType.label_index)",
            kind="bad_label",
        )
    label = NO_LABEL if window.label is None else window.label
    header = HEADER.pack(
        MAGIC, WIRE_VERSION, label, t, c, len(mid), window.seq, window.timestamp_ns
    )
    return header + mid + np.ascontiguousarray(window.data, dtype="<f4").tobytes()


def _check_shape(shape: tuple[int, int], expected: tuple[int, int] | None) -> None:
    if expected is not None and shape != expected:
        raise PayloadError(
            f"window shape {shape} (samples, channels) does not match the expected {expected}; "
            "publish windows of the length and channel count the model was trained on",
            kind="bad_shape",
        )


def decode_window(data: bytes, expected_shape: tuple[int, int] | None = None) -> Window:
    """Window from a binary frame; PayloadError (with .kind) on anything malformed."""
    n = len(data)
    if n > MAX_PAYLOAD_BYTES:
        raise PayloadError(
            f"window payload is {n} bytes, limit is {MAX_PAYLOAD_BYTES}", "too_large"
        )
    if n < HEADER.size:
        raise PayloadError(f"window payload is {n} bytes, shorter than the header", "truncated")
    magic, version, label, t, c, id_len, seq, ts = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise PayloadError(
            f"window payload starts with {bytes(magic)!r}, expected {MAGIC!r} (binary) or '{{' "
            "(JSON); check the publisher's format",
            kind="bad_magic",
        )
    if version != WIRE_VERSION:
        raise PayloadError(
            f"window payload version {version}, this build reads {WIRE_VERSION}; "
            f"upgrade the subscriber or publish with wire version {WIRE_VERSION}",
            kind="bad_version",
        )
    if not (1 <= t <= MAX_SAMPLES and 1 <= c <= MAX_CHANNELS and 1 <= id_len <= 64):
        raise PayloadError(
            f"window header has shape ({t}, {c}) and id length {id_len}; allowed are "
            f"1..{MAX_SAMPLES} samples, 1..{MAX_CHANNELS} channels, 1..64 id bytes",
            kind="bad_shape",
        )
    expected_len = HEADER.size + id_len + 4 * t * c
    if n != expected_len:
        raise PayloadError(
            f"window payload is {n} bytes but its header ({t}×{c}, id {id_len} B) "
            f"needs {expected_len}",
            kind="truncated" if n < expected_len else "bad_shape",
        )
    _check_shape((t, c), expected_shape)
    if label != NO_LABEL and not 0 <= label <= MAX_LABEL:
        raise PayloadError(f"window label {label} is not -1 or 0..{MAX_LABEL}", "bad_label")
    try:
        machine = bytes(data[HEADER.size : HEADER.size + id_len]).decode()
    except UnicodeDecodeError as exc:
        raise PayloadError(f"window machine id is not UTF-8: {exc}", kind="bad_id") from exc
    samples = np.frombuffer(data, dtype="<f4", count=t * c, offset=HEADER.size + id_len)
    samples = samples.reshape(t, c)
    _check_finite(samples)
    window = Window(machine, seq, ts, samples, None if label == NO_LABEL else label)
    object.__setattr__(window, "frame", data if type(data) is bytes else bytes(data))
    return window


def _json_rows(rows: object) -> npt.NDArray[np.float64]:
    """The 'data' field as a T×C float64 array: a list of equally long lists of numbers."""
    first = rows[0] if isinstance(rows, list) and rows else None
    width = len(first) if isinstance(first, list) else 0
    if not isinstance(rows, list) or not (
        1 <= len(rows) <= MAX_SAMPLES and 1 <= width <= MAX_CHANNELS
    ):
        raise PayloadError(
            f"JSON window 'data' must be a list of 1..{MAX_SAMPLES} samples, each a list of "
            f"1..{MAX_CHANNELS} numbers; got {short(rows)}",
            kind="bad_shape",
        )
    for i, row in enumerate(rows):
        if type(row) is not list or len(row) != width:
            raise PayloadError(
                f"JSON window 'data' row {i} is {short(row)}; every row needs {width} numbers",
                kind="bad_shape",
            )
        for value in row:
            if type(value) is not float and type(value) is not int:
                raise PayloadError(
                    f"JSON window 'data' row {i} holds {short(value)}; samples are numbers",
                    kind="bad_shape",
                )
    return np.array(rows, dtype=np.float64)


def window_from_json_obj(obj: Any, machine: str | None = None) -> Window:
    """Window from a decoded JSON object (see protocol/README.md for the fields)."""
    if not isinstance(obj, dict):
        raise PayloadError(f"JSON window must be an object, got {short(obj)}", kind="bad_json")
    unknown = set(obj) - _JSON_FIELDS
    if unknown:
        raise PayloadError(
            f"JSON window has unknown field(s) {short(sorted(unknown)[:5])}; "
            f"allowed are {sorted(_JSON_FIELDS)}"
        )
    version = obj.get("v", WIRE_VERSION)
    if type(version) is not int or version != WIRE_VERSION:
        raise PayloadError(
            f"JSON window version {short(version)}, this build reads {WIRE_VERSION}",
            "bad_version",
        )
    machine_id = obj.get("machine", machine)
    if machine_id is None:
        raise PayloadError("JSON window has no 'machine' and none could be taken from the topic")
    if machine is not None and machine_id != machine:
        raise PayloadError(
            f"JSON window machine {short(machine_id)} differs from the topic's {machine!r}",
            kind="bad_id",
        )
    check_id(machine_id)
    data = _json_rows(obj.get("data"))
    channels = obj.get("channels")
    if channels is not None and (
        not isinstance(channels, list)
        or len(channels) != data.shape[1]
        or not all(isinstance(c, str) and 0 < len(c) <= 64 for c in channels)
    ):
        raise PayloadError(
            "JSON window 'channels' must list one name (1..64 characters) per column of 'data'",
            "bad_shape",
        )
    with np.errstate(over="ignore"):
        samples = data.astype(np.float32)
    _check_finite(samples)
    label = obj.get("label")  # a class name (text), or an index (a number, as before)
    return Window(
        machine_id,
        need_int(obj.get("seq", 0), "JSON window field 'seq'", 0, MAX_SEQ),
        need_int(obj.get("ts_ns", 0), "JSON window field 'ts_ns'", MIN_TS_NS, MAX_TS_NS),
        samples,
        None if label is None else label,
    )


def decode_window_json(
    data: bytes, machine: str | None = None, expected_shape: tuple[int, int] | None = None
) -> Window:
    """Window from the JSON form; `machine` (from the topic) fills a missing id."""
    obj = loads(data, "JSON window", max_bytes=MAX_JSON_BYTES)
    window = window_from_json_obj(obj, machine)
    _check_shape(window.shape, expected_shape)
    return window


def decode_any(
    data: bytes, machine: str | None = None, expected_shape: tuple[int, int] | None = None
) -> Window:
    """Binary or JSON window, told apart by the first byte ('{' or whitespace = JSON)."""
    head = data[:1]
    if head in (b"{", b" ", b"\n", b"\t", b"\r"):
        return decode_window_json(data, machine, expected_shape)
    window = decode_window(data, expected_shape)
    if machine is not None and window.machine != machine:
        raise PayloadError(
            f"window machine {window.machine!r} differs from topic's {machine!r}", "bad_id"
        )
    return window


def window_to_json(
    window: Window,
    classes: tuple[str, ...] = CLASSES,
    channels: tuple[str, ...] | None = None,
) -> bytes:
    """The JSON form of `window` (for tools and docs; the simulator publishes binary); a label
    index is written as its name in `classes` (the machine type's; default: the default type's).
    """
    label = window.label
    if isinstance(label, int):
        if label >= len(classes):
            raise PayloadError(
                f"window label {label} names no class of {list(classes)}", "bad_label"
            )
        label = classes[label]
    obj: dict[str, Any] = {
        "v": WIRE_VERSION,
        "machine": window.machine,
        "seq": window.seq,
        "ts_ns": window.timestamp_ns,
        "label": label,
        "data": [[float(v) for v in row] for row in window.data],
    }
    if channels is None and window.shape == (WINDOW_LENGTH, NUM_CHANNELS):
        channels = CHANNELS
    if channels is not None:
        obj["channels"] = list(channels)
    return json.dumps(obj, separators=(",", ":")).encode()
