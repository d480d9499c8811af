"""Sparkplug B payloads: `Metric`s in, protobuf bytes out, and back (for the NCMD a node reads).

The wire format is Eclipse Tahu's `org.eclipse.tahu.protobuf.Payload` (sparkplug_b.proto, 3.0);
this module imports protobuf, so only pi_edge's `edge` extra needs it.

>>> from protocol.sparkplug import DataType, Metric
>>> data = encode_payload(
...     [Metric("state", DataType.String, "fault"), Metric("fault", DataType.Boolean, True),
...      Metric("confidence", DataType.Float, 0.75), Metric("model version", DataType.Int64, 3),
...      Metric("class", DataType.String, None)],
...     timestamp_ms=1_700_000_000_000, seq=4)
>>> p = decode_payload(data)
>>> p.timestamp_ms, p.seq, [(m.name, m.datatype.name, m.value) for m in p.metrics]
... # doctest: +NORMALIZE_WHITESPACE
(1700000000000, 4, [('state', 'String', 'fault'), ('fault', 'Boolean', True),
 ('confidence', 'Float', 0.75), ('model version', 'Int64', 3), ('class', 'String', None)])
>>> rebirth_requested(decode_payload(encode_payload(
...     [Metric("Node Control/Rebirth", DataType.Boolean, True)], timestamp_ms=1)))
True
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from ..errors import PayloadError
from . import REBIRTH, DataType, Metric, Value
from .sparkplug_b_pb2 import Payload as _Payload

__all__ = ["MAX_PAYLOAD_BYTES", "Decoded", "decode_payload", "encode_payload", "rebirth_requested"]

MAX_PAYLOAD_BYTES = 64 * 1024  # a command edgeloop reads is a few dozen bytes
_U64 = (1 << 64) - 1
_INTS = (DataType.Int32, DataType.Int64, DataType.UInt32, DataType.UInt64)


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded payload: its timestamp (ms), seq (None if absent) and metrics."""

    timestamp_ms: int | None
    seq: int | None
    metrics: tuple[Metric, ...]


def _set_value(pb: _Payload.Metric, datatype: DataType, value: Value) -> None:
    if value is None:
        pb.is_null = True
    elif datatype is DataType.String:
        pb.string_value = str(value)
    elif datatype is DataType.Boolean:
        pb.boolean_value = bool(value)
    elif datatype is DataType.Float:
        pb.float_value = float(value)
    elif datatype is DataType.Double:
        pb.double_value = float(value)
    elif datatype in (DataType.Int32, DataType.UInt32):
        pb.int_value = int(value) & 0xFFFF_FFFF  # Sparkplug: signed values two's complement
    else:
        pb.long_value = int(value) & _U64


def encode_payload(
    metrics: Iterable[Metric], *, timestamp_ms: int, seq: int | None = None
) -> bytes:
    """One Sparkplug payload: `timestamp_ms` (ms since the epoch), `seq` (None: left out, as
    in an NDEATH) and `metrics`, names always included (edgeloop uses no aliases)."""
    payload = _Payload()
    payload.timestamp = timestamp_ms
    if seq is not None:
        payload.seq = seq
    for metric in metrics:
        pb = payload.metrics.add()
        pb.name = metric.name
        pb.datatype = int(metric.datatype)
        pb.timestamp = timestamp_ms if metric.timestamp_ms is None else metric.timestamp_ms
        _set_value(pb, metric.datatype, metric.value)
    return bytes(payload.SerializeToString())


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value >> (bits - 1) else value


def _value(pb: _Payload.Metric, datatype: DataType | None) -> Value:
    if pb.is_null:
        return None
    kind = pb.WhichOneof("value")
    if kind == "string_value":
        return pb.string_value
    if kind == "boolean_value":
        return pb.boolean_value
    if kind == "float_value":
        return pb.float_value
    if kind == "double_value":
        return pb.double_value
    if kind == "int_value":
        return _signed(pb.int_value, 32) if datatype is DataType.Int32 else pb.int_value
    if kind == "long_value":
        return _signed(pb.long_value, 64) if datatype is DataType.Int64 else pb.long_value
    return None  # a type edgeloop does not read (bytes, data set, template): treated as null


def decode_payload(data: bytes) -> Decoded:
    """Parse a Sparkplug payload; PayloadError (kind `bad_sparkplug`) if it is not one.

    Metrics of data types edgeloop does not use keep their name and read as null Strings.
    """
    if len(data) > MAX_PAYLOAD_BYTES:
        raise PayloadError(
            f"Sparkplug payload of {len(data)} bytes is over the {MAX_PAYLOAD_BYTES} this node "
            "reads; send a command with only the metrics it needs",
            "bad_sparkplug",
        )
    payload = _Payload()
    try:
        payload.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise PayloadError(
            f"not a Sparkplug B payload ({len(data)} bytes): {exc}; encode it with "
            "sparkplug_b.proto (Eclipse Tahu)",
            "bad_sparkplug",
        ) from exc
    metrics = []
    for pb in payload.metrics:
        try:
            datatype: DataType | None = DataType(pb.datatype)
        except ValueError:
            datatype = None
        ts = pb.timestamp if pb.HasField("timestamp") else None
        if datatype is None:
            metrics.append(Metric(pb.name, DataType.String, None, ts))
        else:
            metrics.append(Metric(pb.name, datatype, _value(pb, datatype), ts))
    return Decoded(
        payload.timestamp if payload.HasField("timestamp") else None,
        payload.seq if payload.HasField("seq") else None,
        tuple(metrics),
    )


def rebirth_requested(payload: Decoded) -> bool:
    """Whether an NCMD asks for new births: a `Node Control/Rebirth` metric that is true."""
    return any(m.name == REBIRTH and m.value is True for m in payload.metrics)
