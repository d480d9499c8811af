"""Machine state and event JSON: round trips, the exact wire form, refusals (PayloadError only)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import PayloadError, Topics
from protocol.machine_state import MAX_STATE_BYTES, MachineEvent, MachineState

STATE = MachineState(
    "m01", "pi-1", "fault", "bearing_fault", 0.97, 1700000000.5, "ok", 3, 1700000001.0
)
START = MachineEvent(
    "m01", "pi-1", "fault_start", "bearing_fault", "normal", 0.95, 1700000001.0, 60.0, 3
)


def _obj(msg: MachineState | MachineEvent) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(msg.to_json())
    return obj


def _kind(decode: Any, obj: object) -> str:
    with pytest.raises(PayloadError) as err:
        decode(json.dumps(obj).encode())
    return err.value.kind


def test_state_has_exactly_the_documented_fields_in_order() -> None:
    assert list(_obj(STATE)) == [
        "v",
        "machine",
        "node",
        "state",
        "class",
        "confidence",
        "since",
        "drift",
        "model_version",
        "ts",
    ]
    assert _obj(STATE)["class"] == "bearing_fault" and _obj(STATE)["v"] == 1


def test_event_has_exactly_the_documented_fields_in_order() -> None:
    assert list(_obj(START)) == [
        "v",
        "machine",
        "node",
        "event",
        "class",
        "previous_class",
        "confidence",
        "ts",
        "duration_s",
        "model_version",
    ]


@pytest.mark.parametrize(
    "msg",
    [
        STATE,
        MachineState("m01", "pi-1", "normal", "normal", 1.0, 0.0, "drift", 0, 0.0),
        MachineState("m01", "pi-1", "unknown", None, None, 5.0, "suspect", 1, 6.0),
    ],
    ids=["fault", "normal", "unknown"],
)
def test_state_round_trips(msg: MachineState) -> None:
    assert MachineState.from_json(msg.to_json()) == msg
    assert MachineState.from_json(msg.to_json().decode()) == msg


@pytest.mark.parametrize(
    "msg",
    [
        START,
        MachineEvent("m01", "pi-1", "fault_start", "pump_fault", None, 0.9, 5.0, None, 1),
        MachineEvent("m01", "pi-1", "fault_end", "normal", "pump_fault", 0.9, 5.0, 2.5, 1),
        MachineEvent("m01", "pi-1", "fault_change", "drive_wear", "pump_fault", 0.9, 5.0, 0, 1),
    ],
    ids=["start", "first-start", "end", "change"],
)
def test_event_round_trips(msg: MachineEvent) -> None:
    assert MachineEvent.from_json(msg.to_json()) == msg


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        ({"v": 2}, "bad_version"),
        ({"v": True}, "bad_version"),
        ({"extra": 1}, "bad_field"),
        ({"state": "broken"}, "bad_field"),
        ({"state": "normal"}, "bad_field"),  # the class says fault
        ({"state": "unknown"}, "bad_field"),  # an unknown state has no class
        ({"class": ""}, "bad_field"),
        ({"class": "x" * 65}, "bad_field"),
        ({"class": "bad\nclass"}, "bad_field"),
        ({"confidence": 1.5}, "bad_field"),
        ({"confidence": True}, "bad_field"),
        ({"confidence": None}, "bad_field"),
        ({"since": -1}, "bad_field"),
        ({"ts": 2.0**33}, "bad_field"),
        ({"drift": "DRIFT"}, "bad_field"),
        ({"model_version": -1}, "bad_field"),
        ({"model_version": 2**32}, "bad_field"),
        ({"machine": "m/01"}, "bad_id"),
        ({"node": ""}, "bad_id"),
    ],
)
def test_state_refusals(change: dict[str, Any], kind: str) -> None:
    assert _kind(MachineState.from_json, {**_obj(STATE), **change}) == kind


def test_state_missing_field_is_refused() -> None:
    obj = _obj(STATE)
    del obj["drift"]
    assert _kind(MachineState.from_json, obj) == "bad_field"


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        ({"event": "fault_stop"}, "bad_field"),
        ({"event": "fault_end"}, "bad_field"),  # to a fault class is no end
        ({"event": "fault_change"}, "bad_field"),  # from normal is a start
        ({"class": "normal"}, "bad_field"),  # a start into normal
        ({"previous_class": "bearing_fault"}, "bad_field"),  # a start from the same fault
        ({"previous_class": None}, "bad_field"),  # null previous needs a null duration
        ({"duration_s": None}, "bad_field"),
        ({"duration_s": -0.5}, "bad_field"),
        ({"confidence": -0.1}, "bad_field"),
        ({"ts": "now"}, "bad_field"),
        ({"model_version": 1.0}, "bad_field"),
    ],
)
def test_event_refusals(change: dict[str, Any], kind: str) -> None:
    assert _kind(MachineEvent.from_json, {**_obj(START), **change}) == kind


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (b"", "bad_json"),
        (b"[]", "bad_json"),
        (b"\xff", "bad_utf8"),
        (b'{"v":1,"x":{"y":1}}', "too_deep"),
        (b'{"v":1,"confidence":NaN}', "non_finite"),
        (b" " * (MAX_STATE_BYTES + 1), "too_large"),
    ],
)
def test_malformed_bytes_are_refused_by_both(payload: bytes, kind: str) -> None:
    for decode in (MachineState.from_json, MachineEvent.from_json):
        with pytest.raises(PayloadError) as err:
            decode(payload)
        assert err.value.kind == kind


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=70),
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(list(_obj(START)) + list(_obj(STATE))), _values))
def test_any_json_object_is_decoded_or_refused_with_payload_error(obj: dict[str, Any]) -> None:
    for base, decode in (
        (_obj(STATE), MachineState.from_json),
        (_obj(START), MachineEvent.from_json),
    ):
        with contextlib.suppress(PayloadError):
            decode(json.dumps({**base, **obj}).encode())


def test_topic_builders() -> None:
    t = Topics("site/a")
    assert t.machine_state("m01", "pi-1") == "site/a/machines/m01/state/pi-1"
    assert t.machine_event("m01") == "site/a/machines/m01/event"
    assert t.machine_of(t.machine_event("m01")) == "m01"
    assert t.state_source(t.machine_state("m01", "pi-1")) == ("m01", "pi-1")
    assert t.state_source(t.legacy_machine_state("m01")) == ("m01", "")
    for bad in ("site/a/machines/m01/state/pi/x", "site/a/machines/m01/event", "site/b/x"):
        assert t.state_source(bad) is None
    with pytest.raises(PayloadError):
        t.machine_state("m01", "pi/1")
    with pytest.raises(PayloadError):
        t.machine_event("m/01")


def test_a_machine_of_another_type_names_its_type_and_healthy_class() -> None:
    state = MachineState(
        "fan-1", "pi-1", "normal", "ok", 0.9, 1.0, "ok", 2, 2.0, machine_type="fan", normal="ok"
    )
    assert b'"type":"fan","normal":"ok"' in state.to_json()
    assert MachineState.from_json(state.to_json()) == state
    with pytest.raises(PayloadError, match="'normal' exactly when the class is 'ok'"):
        MachineState("fan-1", "pi-1", "fault", "ok", 0.9, 1.0, "ok", 2, 2.0, "fan", "ok")
    half = json.loads(state.to_json())
    del half["normal"]
    with pytest.raises(PayloadError) as info:  # type and normal come together
        MachineState.from_json(json.dumps(half))
    assert info.value.kind == "bad_field"


def test_the_built_in_type_reads_and_writes_as_before_machine_types() -> None:
    state = MachineState("m01", "pi-1", "fault", "bearing_fault", 0.97, 1.0, "ok", 3, 2.0)
    assert b'"type"' not in state.to_json() and b'"normal"' not in state.to_json()


def test_an_anomaly_model_s_states_and_events() -> None:
    start = MachineEvent(
        "fan-1", "pi-1", "anomaly_start", "anomaly", "ok", 0.8, 5.0, 4.0, 1, "fan", "ok"
    )
    assert MachineEvent.from_json(start.to_json()) == start
    end = MachineEvent(
        "fan-1", "pi-1", "anomaly_end", "ok", "anomaly", 0.9, 9.0, 4.0, 1, "fan", "ok"
    )
    assert MachineEvent.from_json(end.to_json()) == end
    state = MachineState("fan-1", "pi-1", "anomaly", "anomaly", 0.8, 5.0, "ok", 1, 6.0, "fan", "ok")
    assert MachineState.from_json(state.to_json()).state == "anomaly"
    with pytest.raises(PayloadError):  # a fault event for an anomaly
        MachineEvent("fan-1", "pi-1", "fault_start", "anomaly", "ok", 0.8, 5.0, 4.0, 1, "fan", "ok")
