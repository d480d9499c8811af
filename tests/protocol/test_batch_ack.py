"""Batch acknowledgements: the codec round-trips, and 10,000 generated payloads — right keys with
wrong values, hostile numbers, raw bytes, mutations of a valid ack — raise only PayloadError,
each within 50 ms of CPU."""

from __future__ import annotations

import gc
import json
import time
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.batch_ack import MAX_ACK_BYTES, BatchAck
from protocol.errors import PayloadError

GOOD = BatchAck(bytes(range(16)), stored=60, duplicates=4, refused=0).to_json()
FUZZ = settings(
    max_examples=10_000,
    deadline=timedelta(milliseconds=250),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

hostile_numbers = st.sampled_from(
    ["9" * 400, "9" * 5000, "1e999", "NaN", "-Infinity", "-1", "4097", "1.5", "true", "null"]
)
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=40),
    st.binary(min_size=16, max_size=16).map(lambda b: b.hex()),
    st.lists(st.integers(), max_size=3),
)


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["fields", "raw", "mutated", "number"]))
    if kind == "raw":
        return draw(st.binary(max_size=2 * MAX_ACK_BYTES))
    if kind == "mutated":
        data = bytearray(GOOD)
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(data) - 1))
            op = draw(st.sampled_from(["flip", "cut", "insert"]))
            if op == "flip":
                data[i] ^= draw(st.integers(1, 255))
            elif op == "cut":
                del data[i:]
                if not data:
                    break
            else:
                data[i:i] = draw(st.binary(min_size=1, max_size=8))
        return bytes(data)
    obj: dict[str, Any] = json.loads(GOOD)
    if kind == "number":
        key = draw(st.sampled_from(sorted(obj)))
        text = json.dumps(obj).replace(f'"{key}": {json.dumps(obj[key])}', f'"{key}": X')
        return text.replace("X", draw(hostile_numbers)).encode()
    for key in draw(st.lists(st.sampled_from([*obj, "node", "extra"]), max_size=3)):
        if draw(st.booleans()):
            obj.pop(key, None)
        else:
            obj[key] = draw(values)
    return json.dumps(obj).encode()


@FUZZ
@given(payloads())
def test_any_payload_gives_an_ack_or_a_payload_error_quickly(data: bytes) -> None:
    gc.disable()
    start = time.thread_time()
    try:
        ack = BatchAck.from_json(data)
    except PayloadError as exc:
        assert exc.kind and str(exc)
    else:
        assert BatchAck.from_json(ack.to_json()) == ack
    finally:
        spent = time.thread_time() - start
        gc.enable()
    assert spent <= 0.050, f"{spent * 1e3:.1f} ms CPU on one payload"


def test_an_ack_round_trips_and_names_its_batch_in_hex() -> None:
    ack = BatchAck.from_json(GOOD)
    assert ack.batch_id == bytes(range(16)) and (ack.stored, ack.duplicates) == (60, 4)
    assert json.loads(GOOD)["batch"] == "000102030405060708090a0b0c0d0e0f"


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (GOOD.replace(b'"v":1', b'"v":2'), "bad_version"),
        (GOOD.replace(b'"refused":0', b'"refused":0,"node":"pi-1"'), "bad_field"),
        (GOOD.replace(b'"stored":60', b'"stored":true'), "bad_field"),
        (GOOD.replace(b'"stored":60', b'"stored":4097'), "bad_field"),
        (GOOD.replace(b"000102", b"00010G"), "bad_field"),
        (GOOD.replace(b"0f", b"0F"), "bad_field"),  # lowercase only: one spelling per id
        (GOOD.replace(b'"stored":60', b'"stored":' + b"9" * 5000), "too_large"),
        (b"[" + GOOD + b"]", "too_deep"),
    ],
)
def test_a_bad_ack_is_refused_with_its_kind(payload: bytes, kind: str) -> None:
    with pytest.raises(PayloadError) as info:
        BatchAck.from_json(payload)
    assert info.value.kind == kind
