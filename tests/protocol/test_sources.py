"""The signals file's [[opcua]] and [[modbus]] sections (protocol/sources.py, SignalMap): what is
accepted, what is refused with which message, how registers decode and readings are indexed —
no network."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest

from protocol import CHANNELS, ConfigError
from protocol.signals import SignalMap
from protocol.sources import ModbusRegister, ModbusSource, OpcUaSource, Point, decode_words


def _node(machine: str, channel: str, node_id: str | None = None, **kw: Any) -> dict[str, Any]:
    return {"node_id": node_id or f"ns=2;s={machine}.{channel}", "machine": machine,
            "channel": channel, **kw}  # fmt: skip


def _reg(machine: str, channel: str, address: int, **kw: Any) -> dict[str, Any]:
    return {"machine": machine, "channel": channel, "address": address, **kw}


def _file(**kw: Any) -> dict[str, Any]:
    """press3: temperature/vibration by OPC UA, pressure/power by Modbus."""
    doc: dict[str, Any] = {
        "sample_hz": 10.0,
        "opcua": [
            {
                "url": "opc.tcp://plc1:4840",
                "node": [_node("press3", "temperature"), _node("press3", "vibration")],
            }
        ],
        "modbus": [
            {
                "host": "10.0.0.20",
                "register": [
                    _reg("press3", "pressure", 0, data_type="float32"),
                    _reg("press3", "power", 2),
                ],
            }
        ],
    }
    doc.update(kw)
    return doc


def test_a_file_of_sources_only_maps_every_channel_and_indexes_points_in_file_order() -> None:
    m = SignalMap.from_dict(_file())
    assert m.signals == () and m.filters() == []
    assert [s.kind for s in m.sources] == ["opcua", "modbus"]
    assert m.reading_indices(0) == range(0, 2) and m.reading_indices(1) == range(2, 4)
    assert [CHANNELS[c] for c in m.columns] == ["temperature", "vibration", "pressure", "power"]
    ua, mb = m.sources
    assert isinstance(ua, OpcUaSource) and isinstance(mb, ModbusSource)
    assert (ua.name, ua.timeout_s, ua.sampling_s, ua.stale_s) == (
        "opc.tcp://plc1:4840",
        5.0,
        None,
        None,
    )
    assert (mb.port, mb.unit, mb.poll_s, mb.name) == (502, 1, None, "modbus 10.0.0.20:502 unit 1")
    assert [r.width for r in mb.registers] == [2, 1]


def test_sources_and_mqtt_signals_share_the_channels_of_a_machine() -> None:
    """vibration from an MQTT sensor box for every machine; the rest from the PLC."""
    doc = _file(signal=[{"topic": "plant/{machine}/vibration", "channel": "vibration"}])
    doc["opcua"][0]["node"].pop()  # press3's vibration now comes by MQTT
    m = SignalMap.from_dict(doc)
    assert m.filters() == ["plant/+/vibration"]
    assert [CHANNELS[c] for c in m.columns] == ["vibration", "temperature", "pressure", "power"]
    assert m.reading_indices(0) == range(1, 2)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["opcua"][0]["node"].pop(), "machine 'press3' has no source point and no"),
        (
            lambda d: d["opcua"][0]["node"].append(_node("press3", "vibration", "i=5")),
            "channel(s) ['vibration'] from more than one source point",
        ),
        (
            lambda d: d["opcua"][0]["node"].append(_node("press3", "humidity")),
            "unknown channel(s) ['humidity']",
        ),
        (
            lambda d: d["opcua"][0]["node"][0].update(node_id="Press3.Temperature"),
            "is not an OPC UA node id",
        ),
        (
            lambda d: d["opcua"][0]["node"][1].update(node_id="ns=2;s=press3.temperature"),
            "subscribes to a node id twice",
        ),
        (lambda d: d["opcua"][0]["node"][0].update(machine="press/3"), "machine id 'press/3'"),
        (lambda d: d["opcua"][0].update(url="http://plc1"), "must start with opc.tcp://"),
        (lambda d: d["opcua"][0].update(timeout_s=0), "timeout_s must be a number in (0, 60]"),
        (lambda d: d["opcua"][0].update(secure=True), "unknown key(s) ['secure']"),
        (lambda d: d["opcua"][0].pop("node"), "has no [[opcua.node]] entries"),
        (lambda d: d["modbus"][0]["register"][0].update(table="holdings"), "table must be one of"),
        (lambda d: d["modbus"][0]["register"][0].update(data_type="float16"), "data_type must be"),
        (
            lambda d: d["modbus"][0]["register"][0].update(table="coil", data_type="float32"),
            "data_type must be one of ['bool']",
        ),
        (
            lambda d: d["modbus"][0]["register"][0].update(address=65535),
            "address must be an integer in [0, 65534]",
        ),
        (lambda d: d["modbus"][0]["register"][0].update(address=1.0), "address must be an integer"),
        (lambda d: d["modbus"][0]["register"][0].update(word_order="middle"), "word_order must be"),
        (lambda d: d["modbus"][0].update(unit=256), "unit must be an integer in [0, 255]"),
        (lambda d: d["modbus"][0].update(port=True), "port must be an integer"),
        (lambda d: d["modbus"][0].update(host="plc 1"), "must be a host name or address"),
        (lambda d: d["modbus"][0].update(name="opc.tcp://plc1:4840"), "two sources share a name"),
        (lambda d: d.update(modbus={"host": "x"}), "'modbus' must be an array of tables"),
        (lambda d: d.update(opcua=[], modbus=[]), "no [[signal]] entries"),
    ],
)
def test_a_wrong_source_section_is_refused_naming_what_to_fix(change: Any, message: str) -> None:
    doc = _file()
    change(doc)
    with pytest.raises(ConfigError, match="signals file signals: .*" + _re(message)):
        SignalMap.from_dict(doc)


def _re(text: str) -> str:
    import re

    return re.escape(text)


def test_a_file_without_sources_still_needs_every_channel_from_mqtt() -> None:
    doc = {"signal": [{"topic": "p/{machine}/t", "channel": "temperature"}]}
    with pytest.raises(ConfigError, match="not mapped"):
        SignalMap.from_dict(doc)


@pytest.mark.parametrize(
    ("data_type", "value"),
    [
        ("int16", -12345),
        ("uint16", 54321),
        ("int32", -123456789),
        ("uint32", 3_000_000_000),
        ("int64", -(2**40) - 3),
        ("uint64", 2**63 + 5),
        ("float32", 48.25),
        ("float64", -1.0e-300),
    ],
)
@pytest.mark.parametrize("word_order", ["big", "little"])
@pytest.mark.parametrize("byte_order", ["big", "little"])
def test_registers_decode_every_type_in_every_order(
    data_type: str, value: float, word_order: str, byte_order: str
) -> None:
    fmt = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "int64": "q",
           "uint64": "Q", "float32": "f", "float64": "d"}[data_type]  # fmt: skip
    raw = struct.pack(">" + fmt, value)  # the device's big-endian number...
    if byte_order == "little":  # ...with the bytes of each register swapped...
        raw = b"".join(raw[i + 1 : i + 2] + raw[i : i + 1] for i in range(0, len(raw), 2))
    words = [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
    if word_order == "little":  # ...and/or its low word first
        words.reverse()
    assert decode_words(words, data_type, word_order, byte_order) == value


def test_a_register_scales_and_a_bit_is_zero_or_one() -> None:
    p = Point("m1", "power", 10.0, 1.0)
    assert ModbusRegister("input", 3, "int16", "big", "big", p).value([0xFFF9]) == -69.0
    assert ModbusRegister("coil", 3, "bool", "big", "big", p).value([True]) == 11.0
    assert ModbusRegister("discrete", 3, "bool", "big", "big", p).value([False]) == 1.0
    nan = struct.unpack(">HH", struct.pack(">f", math.nan))
    assert math.isnan(ModbusRegister("holding", 0, "float32", "big", "big", p).value(nan))
    with pytest.raises(ValueError, match="needs 2 register"):
        decode_words([1], "float32")


def test_the_documented_examples_parse() -> None:
    """pi_edge/README.md's "Plant sources" file, and deploy/signals.example.toml with its
    commented plant sources switched on."""
    import tomllib
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    readme = (repo / "pi_edge" / "README.md").read_text()
    section = readme[readme.index("### Plant sources") :]
    start = section.index("```toml\n") + 8
    block = section[start : section.index("\n```", start)]
    m = SignalMap.from_dict(tomllib.loads(block))
    assert [(s.kind, len(s.points)) for s in m.sources] == [("opcua", 2), ("modbus", 2)]
    text = (repo / "deploy" / "signals.example.toml").read_text()
    head, tail = text.split("# Plant sources", 1)
    tail = tail[tail.index("# [[opcua]]") :]
    body = "\n".join(line[2:] if line.startswith("# ") else "" for line in tail.splitlines())
    m = SignalMap.from_dict(tomllib.loads(head + body))
    assert [s.name for s in m.sources] == ["plc1", "drive7"]
    assert {p.machine for p in m.points} == {"press7"}
