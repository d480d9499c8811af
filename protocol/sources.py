r"""Plant sources in the signals file: OPC UA subscriptions and Modbus TCP register polls.

Beside `[[signal]]` (MQTT topics), a signals file may name servers that pi_edge reads itself;
each of their points is one machine's one channel, with `scale`/`offset` like a signal:

    [[opcua]]
    url = "opc.tcp://plc1.plant:4840"       # security mode None, anonymous
    name = "plc1"                           # optional: in logs and status (default: the url)
    sampling_s = 0.1                        # optional: the server's sampling interval
                                            #   (default: 1 / sample_hz)
    stale_s = 30.0                          # optional: a value with no data change for this
                                            #   long is stale (default: held while connected)
    timeout_s = 5.0                         # optional: connect and request timeout
    [[opcua.node]]
    node_id = "ns=2;s=Press3.Temperature"   # [ns=N;|nsu=URI;](i|s|g|b)=ID
    machine = "press3"
    channel = "temperature"
    scale = 1.0                             # optional: value * scale + offset
    offset = 0.0

    [[modbus]]
    host = "10.0.0.20"
    port = 502                              # optional (502)
    unit = 1                                # optional: unit (slave) id 0..255 (1)
    poll_s = 0.5                            # optional: default 1 / sample_hz
    timeout_s = 1.0                         # optional
    [[modbus.register]]
    machine = "press3"
    channel = "pressure"
    table = "holding"                       # holding | input | coil | discrete
    address = 0                             # 0-based protocol address (register 40001 is 0)
    data_type = "float32"                   # int16 uint16 int32 uint32 int64 uint64 float32
                                            #   float64; a coil or discrete input is "bool"
    word_order = "big"                      # big: the first register holds the high word
    byte_order = "big"                      # big: Modbus's own order inside a register
    scale = 0.1

This module is pure: it checks the sections and decodes registers. pi_edge's shells
(pi_edge/intake/sources/) connect, subscribe, poll and feed the readings to the same assembler
as MQTT readings.

>>> src = ModbusSource.from_dict({"host": "10.0.0.20", "register": [
...     {"machine": "m1", "channel": "t", "address": 4, "data_type": "float32",
...      "word_order": "little", "scale": 2.0}]}, 0)
>>> reg = src.registers[0]
>>> reg.width, reg.point.machine, src.name
(2, 'm1', 'modbus 10.0.0.20:502 unit 1')
>>> reg.value([0x0000, 0x4241])  # 48.25 as a float32, low word first; * 2.0
96.5
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._json import short
from .errors import PayloadError
from .topics import check_id

__all__ = [
    "BIT_TABLES",
    "DATA_TYPES",
    "MAX_POINTS",
    "MAX_SOURCES",
    "TABLES",
    "ModbusRegister",
    "ModbusSource",
    "OpcUaNode",
    "OpcUaSource",
    "Point",
    "Source",
    "decode_words",
]

MAX_SOURCES = 16  # servers in one file
MAX_POINTS = 256  # node ids and registers in one file, all sources together
MAX_TIMEOUT_S = 60.0
MAX_INTERVAL_S = 3600.0
TABLES = ("holding", "input", "coil", "discrete")
BIT_TABLES = frozenset({"coil", "discrete"})
# data type → (registers, struct format, big-endian)
DATA_TYPES: dict[str, tuple[int, str]] = {
    "int16": (1, "h"),
    "uint16": (1, "H"),
    "int32": (2, "i"),
    "uint32": (2, "I"),
    "float32": (2, "f"),
    "int64": (4, "q"),
    "uint64": (4, "Q"),
    "float64": (4, "d"),
}
ORDERS = ("big", "little")
_NODE_ID = re.compile(r"(?:ns=\d{1,5};|nsu=[^;]{1,200};)?[isgb]=.{1,200}", re.DOTALL)
_OPCUA_KEYS = frozenset({"url", "name", "node", "sampling_s", "stale_s", "timeout_s"})
_NODE_KEYS = frozenset({"node_id", "machine", "channel", "scale", "offset"})
_MODBUS_KEYS = frozenset({"host", "port", "unit", "name", "register", "poll_s", "timeout_s"})
_REGISTER_KEYS = frozenset(
    {
        "machine",
        "channel",
        "table",
        "address",
        "data_type",
        "word_order",
        "byte_order",
        "scale",
        "offset",
    }
)


def decode_words(
    words: Sequence[int], data_type: str, word_order: str = "big", byte_order: str = "big"
) -> float:
    """The number that `words` (16-bit registers as read, first address first) hold.

    `word_order` "little": the first register is the lowest word (many PLCs' "swapped" float);
    `byte_order` "little": the two bytes inside each register are swapped.

    >>> decode_words([0x4241, 0x0000], "float32")
    48.25
    >>> decode_words([0x0000, 0x4241], "float32", "little")
    48.25
    >>> decode_words([0x4142, 0x0000], "float32", "big", "little")
    48.25
    >>> decode_words([0xFFFF], "int16"), decode_words([0xFFFF], "uint16")
    (-1, 65535)
    >>> decode_words([0x0001, 0x0000], "uint32", "little"), decode_words([0, 0, 0, 7], "int64")
    (1, 7)
    """
    n, fmt = DATA_TYPES[data_type]
    if len(words) != n:
        raise ValueError(f"{data_type} needs {n} register(s), got {len(words)}")
    ordered = list(words) if word_order == "big" else list(reversed(words))
    raw = b"".join((w & 0xFFFF).to_bytes(2, "big") for w in ordered)
    if byte_order == "little":
        raw = bytes(b for i in range(0, len(raw), 2) for b in (raw[i + 1], raw[i]))
    value: float = struct.unpack(">" + fmt, raw)[0]
    return value


def _text(value: object, what: str, limit: int = 256) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= limit or not value.isprintable():
        raise ValueError(
            f"{what} must be printable text of 1..{limit} characters, got {short(value)}"
        )
    return value


def _number(value: object, what: str, lo: float, hi: float, *, open_low: bool = False) -> float:
    ok = type(value) in (int, float) and math.isfinite(float(value))  # type: ignore[arg-type]
    number = float(value) if ok else math.nan  # type: ignore[arg-type]
    if not ok or number > hi or number < lo or (open_low and number == lo):
        span = f"({lo:g}, {hi:g}]" if open_low else f"[{lo:g}, {hi:g}]"
        raise ValueError(f"{what} must be a number in {span}, got {short(value)}")
    return number


def _integer(value: object, what: str, lo: int, hi: int) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise ValueError(f"{what} must be an integer in [{lo}, {hi}], got {short(value)}")
    return value


def _choice(value: object, what: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(f"{what} must be one of {list(allowed)}, got {short(value)}")
    return str(value)


def _keys(entry: object, allowed: frozenset[str], what: str) -> Mapping[str, Any]:
    if not isinstance(entry, dict):
        raise ValueError(f"{what} must be a table")
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ValueError(f"{what} has unknown key(s) {unknown}; allowed are {sorted(allowed)}")
    return entry


def _optional(entry: Mapping[str, Any], key: str, what: str, hi: float) -> float | None:
    value = entry.get(key)
    return None if value is None else _number(value, f"{what} {key}", 0.0, hi, open_low=True)


@dataclass(frozen=True, slots=True)
class Point:
    """Where one source reading goes: a machine's channel, after `value * scale + offset`.

    >>> Point("m1", "temperature", 0.1, -40.0).scaled(650)
    25.0
    """

    machine: str
    channel: str
    scale: float = 1.0
    offset: float = 0.0

    def __post_init__(self) -> None:
        try:
            check_id(self.machine)
        except PayloadError as exc:
            raise ValueError(str(exc)) from exc

    def scaled(self, raw: float) -> float:
        return raw * self.scale + self.offset

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any], what: str) -> Point:
        for key in ("machine", "channel"):
            if key not in entry:
                raise ValueError(f"{what} has no '{key}'")
        return cls(
            _text(entry["machine"], f"{what} machine", 64),
            _text(entry["channel"], f"{what} channel"),
            _number(entry.get("scale", 1.0), f"{what} scale", -1e12, 1e12),
            _number(entry.get("offset", 0.0), f"{what} offset", -1e12, 1e12),
        )


@dataclass(frozen=True, slots=True)
class OpcUaNode:
    """One `[[opcua.node]]`: a variable's node id and its point."""

    node_id: str
    point: Point


@dataclass(frozen=True, slots=True)
class OpcUaSource:
    """One `[[opcua]]` server: its url and the variables subscribed to."""

    url: str
    nodes: tuple[OpcUaNode, ...]
    name: str
    sampling_s: float | None = None
    stale_s: float | None = None
    timeout_s: float = 5.0
    kind = "opcua"

    @property
    def points(self) -> tuple[Point, ...]:
        return tuple(n.point for n in self.nodes)

    @classmethod
    def from_dict(cls, entry: object, i: int) -> OpcUaSource:
        what = f"[[opcua]] #{i + 1}"
        obj = _keys(entry, _OPCUA_KEYS, what)
        if "url" not in obj:
            raise ValueError(f"{what} has no 'url' (opc.tcp://HOST:PORT)")
        url = _text(obj["url"], f"{what} url")
        if not url.startswith("opc.tcp://") or len(url) <= len("opc.tcp://"):
            raise ValueError(f"{what} url {short(url)} must start with opc.tcp://HOST")
        entries = obj.get("node")
        if not isinstance(entries, list) or not entries:
            raise ValueError(f"{what} has no [[opcua.node]] entries; add one per variable")
        nodes = []
        for j, node in enumerate(entries):
            nwhat = f"{what} [[opcua.node]] #{j + 1}"
            nobj = _keys(node, _NODE_KEYS, nwhat)
            if "node_id" not in nobj:
                raise ValueError(f"{nwhat} has no 'node_id' (e.g. 'ns=2;s=Press3.Temperature')")
            node_id = _text(nobj["node_id"], f"{nwhat} node_id")
            if not _NODE_ID.fullmatch(node_id):
                raise ValueError(
                    f"{nwhat} node_id {short(node_id)} is not an OPC UA node id: "
                    "[ns=N;|nsu=URI;] then i=NUMBER, s=STRING, g=GUID or b=BASE64"
                )
            nodes.append(OpcUaNode(node_id, Point.from_entry(nobj, nwhat)))
        ids = [n.node_id for n in nodes]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{what} subscribes to a node id twice: {sorted(ids)}")
        return cls(
            url,
            tuple(nodes),
            _text(obj.get("name", url[:64]), f"{what} name", 64),
            _optional(obj, "sampling_s", what, MAX_INTERVAL_S),
            _optional(obj, "stale_s", what, 86_400.0),
            _optional(obj, "timeout_s", what, MAX_TIMEOUT_S) or 5.0,
        )


@dataclass(frozen=True, slots=True)
class ModbusRegister:
    """One `[[modbus.register]]`: where a number is (table, address, type) and its point."""

    table: str
    address: int
    data_type: str
    word_order: str
    byte_order: str
    point: Point

    @property
    def width(self) -> int:
        """Registers (or bits) read: 1, 2 or 4."""
        return 1 if self.table in BIT_TABLES else DATA_TYPES[self.data_type][0]

    def value(self, words: Sequence[int | bool]) -> float:
        """The scaled value of this register's words (or bit) as read."""
        if self.table in BIT_TABLES:
            return self.point.scaled(1.0 if words[0] else 0.0)
        ints = [int(w) for w in words]
        raw = decode_words(ints, self.data_type, self.word_order, self.byte_order)
        return self.point.scaled(float(raw))

    @classmethod
    def from_dict(cls, entry: object, what: str) -> ModbusRegister:
        obj = _keys(entry, _REGISTER_KEYS, what)
        if "address" not in obj:
            raise ValueError(f"{what} has no 'address' (0-based: register 40001 is 0)")
        table = _choice(obj.get("table", "holding"), f"{what} table", TABLES)
        if table in BIT_TABLES:
            data_type = _choice(obj.get("data_type", "bool"), f"{what} data_type", ("bool",))
            width = 1
        else:
            data_type = _choice(obj.get("data_type", "uint16"), f"{what} data_type", [*DATA_TYPES])
            width = DATA_TYPES[data_type][0]
        address = _integer(obj["address"], f"{what} address", 0, 65536 - width)
        return cls(
            table,
            address,
            data_type,
            _choice(obj.get("word_order", "big"), f"{what} word_order", ORDERS),
            _choice(obj.get("byte_order", "big"), f"{what} byte_order", ORDERS),
            Point.from_entry(obj, what),
        )


@dataclass(frozen=True, slots=True)
class ModbusSource:
    """One `[[modbus]]` server (a TCP device or gateway, one unit id) and its registers."""

    host: str
    registers: tuple[ModbusRegister, ...]
    name: str
    port: int = 502
    unit: int = 1
    poll_s: float | None = None
    timeout_s: float = 1.0
    kind = "modbus"

    @property
    def points(self) -> tuple[Point, ...]:
        return tuple(r.point for r in self.registers)

    @classmethod
    def from_dict(cls, entry: object, i: int) -> ModbusSource:
        what = f"[[modbus]] #{i + 1}"
        obj = _keys(entry, _MODBUS_KEYS, what)
        if "host" not in obj:
            raise ValueError(f"{what} has no 'host'")
        host = _text(obj["host"], f"{what} host", 253)
        if any(c in host for c in "/ "):
            raise ValueError(f"{what} host {short(host)} must be a host name or address")
        port = _integer(obj.get("port", 502), f"{what} port", 1, 65535)
        unit = _integer(obj.get("unit", 1), f"{what} unit", 0, 255)
        entries = obj.get("register")
        if not isinstance(entries, list) or not entries:
            raise ValueError(f"{what} has no [[modbus.register]] entries; add one per value")
        registers = tuple(
            ModbusRegister.from_dict(r, f"{what} [[modbus.register]] #{j + 1}")
            for j, r in enumerate(entries)
        )
        return cls(
            host,
            registers,
            _text(obj.get("name", f"modbus {host[:32]}:{port} unit {unit}"), f"{what} name", 64),
            port,
            unit,
            _optional(obj, "poll_s", what, MAX_INTERVAL_S),
            _optional(obj, "timeout_s", what, MAX_TIMEOUT_S) or 1.0,
        )


Source = OpcUaSource | ModbusSource
