"""Prediction/status/control JSON and topic builders."""

from __future__ import annotations

import json

import pytest

from nodekit.mqtt import parse_address
from protocol import Command, PayloadError, Prediction, Status, Topics


def test_prediction_round_trip_keeps_latency_breakdown() -> None:
    p = Prediction(
        "m01",
        5,
        "pump_fault",
        0.9,
        (0.05, 0.03, 0.02, 0.9),
        2,
        truth="normal",
        timestamps_ns={"sensor": 1, "received": 2},
        latency_ms={"total": 0.7},
    )
    assert Prediction.from_json(p.to_json()) == p


def test_prediction_refuses_wrong_probability_count() -> None:
    with pytest.raises(PayloadError, match="3 probabilities"):
        Prediction("m01", 5, "normal", 0.9, (0.9, 0.05, 0.05), 2)


def test_status_round_trip_and_offline_will() -> None:
    s = Status("pi-1", "edge", "online", "0.1.0", 4, 1.5, {"windows_per_s": 10.0}, {"bad_json": 2})
    assert Status.from_json(s.to_json()) == s
    assert Status.from_json(Status.offline("pi-1", "edge", "0.1.0").to_json()).state == "offline"
    with pytest.raises(PayloadError, match="online"):
        Status("pi-1", "edge", "sleeping", "0.1.0")


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"drift please",
        b'{"v":1,"cmd":"explode"}',
        b'{"v":1,"cmd":"drift","mode":"sideways"}',
        b'{"v":1,"cmd":"drift","mode":"offset","params":{"a/b":1}}',
        b'{"v":1,"cmd":"drift","mode":"gain","params":{"power":0}}',
        b'{"v":1,"cmd":"drift","mode":"offset","params":{"power":NaN}}',
        b'{"v":1,"cmd":"drift","mode":"step","machines":["m/1"]}',
        b'{"v":1,"cmd":"fault","state":" on_fire"}',
        b'{"v":1,"cmd":"labels","params":{"fraction":2}}',
        b'{"v":9,"cmd":"repair"}',
        b'{"v":1,"cmd":"repair","colour":"red"}',
    ],
)
def test_malformed_control_commands_are_refused(payload: bytes) -> None:
    with pytest.raises(PayloadError):
        Command.from_json(payload)


def test_control_command_targets_named_machines_or_all() -> None:
    cmd = Command.from_json(b'{"v":1,"cmd":"drift","mode":"step","machines":"all"}')
    assert cmd.applies_to("m99")
    cmd = Command("fault", ("m01",), state="drive_wear")
    assert cmd.applies_to("m01") and not cmd.applies_to("m02")
    assert Command.from_json(cmd.to_json()) == cmd


@pytest.mark.parametrize(
    ("topic", "machine"),
    [
        ("edgeloop/v1/machines/m01/window", "m01"),
        ("edgeloop/v1/machines/m01/prediction", "m01"),
        ("edgeloop/v1/machines/m01/window/extra", None),
        ("other/v1/machines/m01/window", None),
        ("edgeloop/v1/nodes/pi/status", None),
    ],
)
def test_machine_of_matches_only_machine_topics(topic: str, machine: str | None) -> None:
    assert Topics().machine_of(topic) == machine


def test_topics_refuse_wildcards_in_ids_and_prefix() -> None:
    with pytest.raises(PayloadError):
        Topics().window("m+1")
    with pytest.raises(ValueError, match="prefix"):
        Topics("site/#")


def test_parse_address_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_address("localhost:http")


@pytest.mark.parametrize(
    "mode,params",
    [
        ("gain", {"temperature": 1e300}),
        ("gain", {"power": 0.0}),
        ("offset", {"pressure": -1e6}),
        ("ramp", {"duration_s": 1e12}),
    ],
)
def test_control_params_beyond_physical_bounds_are_refused(
    mode: str, params: dict[str, float]
) -> None:
    """A gain of 1e300 would make the simulator's samples infinite; it is refused at decode."""
    payload = json.dumps({"v": 1, "cmd": "drift", "mode": mode, "params": params}).encode()
    with pytest.raises(PayloadError) as info:
        Command.from_json(payload)
    assert info.value.kind == "bad_field"
