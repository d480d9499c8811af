"""Window codec: round trips, the README's byte example, and every kind of corrupt frame."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from protocol import (
    CLASSES,
    PayloadError,
    Window,
    decode_any,
    decode_window,
    decode_window_json,
    encode_window,
)
from protocol.machine_type import DEFAULT_TYPE, Channel, MachineType
from protocol.window import HEADER, MAX_PAYLOAD_BYTES, window_to_json

README = Path(__file__).resolve().parents[2] / "protocol" / "README.md"

machine_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,20}", fullmatch=True)
finite_f32 = st.floats(allow_nan=False, allow_infinity=False, width=32)
windows = st.builds(
    Window,
    machine=machine_ids,
    seq=st.integers(0, 2**64 - 1),
    timestamp_ns=st.integers(-(2**63), 2**63 - 1),
    data=hnp.arrays(
        np.float32, st.tuples(st.integers(1, 70), st.integers(1, 6)), elements=finite_f32
    ),
    label=st.none() | st.integers(0, len(CLASSES) - 1),
)


def seed_window(**overrides: object) -> Window:
    rng = np.random.default_rng(0)
    fields: dict[str, object] = {
        "machine": "m01",
        "seq": 9,
        "timestamp_ns": 1_700_000_000_123_456_789,
        "data": rng.normal(50, 5, (60, 4)).astype(np.float32),
        "label": 3,
    }
    fields.update(overrides)
    return Window(**fields)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(windows)
def test_binary_round_trip_preserves_every_field(window: Window) -> None:
    assert decode_window(encode_window(window)) == window


@settings(max_examples=100, deadline=None)
@given(windows)
def test_json_round_trip_preserves_every_field(window: Window) -> None:
    # the JSON form names the label; the default type resolves the name to the same index
    assert DEFAULT_TYPE.resolve(decode_window_json(window_to_json(window))) == window


def test_decode_any_tells_binary_from_json() -> None:
    w = seed_window()
    assert decode_any(encode_window(w)) == w
    assert DEFAULT_TYPE.resolve(decode_any(window_to_json(w))) == w
    assert DEFAULT_TYPE.resolve(decode_any(b"  \n" + window_to_json(w))) == w


def test_readme_byte_example_decodes_to_the_documented_window() -> None:
    text = README.read_text()
    block = text.split("<!-- example-frame-hex -->", 1)[1].split("```")[1]
    frame = bytes.fromhex(re.sub(r"\s", "", block))
    w = decode_window(frame)
    assert (w.machine, w.seq, w.timestamp_ns, w.label) == ("m01", 1, 1_700_000_000 * 10**9, 1)
    expected = np.array([[50.0, 0.3, 11.0, 125.0], [51.5, 0.35, 10.9, 126.0]], np.float32)
    np.testing.assert_array_equal(w.data, expected)


def test_readme_json_example_decodes() -> None:
    text = README.read_text()
    block = text.split("## Window, JSON form", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    w = decode_window_json(block.encode())
    assert w.label == "bearing_fault" and w.shape == (2, 4)
    assert DEFAULT_TYPE.resolve(w).label == CLASSES.index("bearing_fault")


def test_sixty_by_four_frame_is_987_bytes() -> None:
    assert len(encode_window(seed_window())) == 987


@pytest.mark.parametrize(
    ("mutate", "kind"),
    [
        (lambda f: f[:10], "truncated"),
        (lambda f: f[:-1], "truncated"),
        (lambda f: f + b"\x00", "bad_shape"),
        (lambda f: b"XX" + f[2:], "bad_magic"),
        (lambda f: f[:2] + b"\x09" + f[3:], "bad_version"),
        (lambda f: f[:3] + struct.pack("<b", 64) + f[4:], "bad_label"),
        (lambda f: f[:4] + struct.pack("<H", 0) + f[6:], "bad_shape"),
        (lambda f: f[:4] + struct.pack("<H", 61) + f[6:], "truncated"),
        (lambda f: f + b"\x00" * (MAX_PAYLOAD_BYTES + 1), "too_large"),
        (lambda f: b"", "truncated"),
    ],
    ids=[
        "header-cut",
        "one-byte-short",
        "one-byte-long",
        "magic",
        "version",
        "label",
        "zero-T",
        "T-lies",
        "huge",
        "empty",
    ],
)
def test_corrupt_frames_raise_typed_error(mutate, kind: str) -> None:  # type: ignore[no-untyped-def]
    frame = encode_window(seed_window())
    with pytest.raises(PayloadError) as info:
        decode_window(mutate(frame))
    assert info.value.kind == kind
    assert str(info.value)


def test_nan_and_inf_samples_are_refused_on_both_sides() -> None:
    frame = bytearray(encode_window(seed_window()))
    offset = HEADER.size + 3 + 4 * 17
    frame[offset : offset + 4] = struct.pack("<f", float("nan"))
    with pytest.raises(PayloadError, match="NaN") as info:
        decode_window(bytes(frame))
    assert info.value.kind == "non_finite"
    data = np.zeros((60, 4), np.float32)
    data[5, 2] = np.inf
    with pytest.raises(PayloadError) as info:
        encode_window(seed_window(data=data))
    assert info.value.kind == "non_finite"


def test_ten_megabyte_payload_is_refused_without_parsing() -> None:
    with pytest.raises(PayloadError) as info:
        decode_any(b"EW" + b"\x00" * 10_000_000)
    assert info.value.kind == "too_large"
    with pytest.raises(PayloadError) as info:
        decode_any(b"{" + b" " * 10_000_000 + b"}")
    assert info.value.kind == "too_large"


def test_wrong_shape_is_refused_when_a_shape_is_expected() -> None:
    frame = encode_window(seed_window(data=np.zeros((59, 4), np.float32)))
    assert decode_window(frame).shape == (59, 4)
    with pytest.raises(PayloadError, match=r"\(59, 4\)") as info:
        decode_window(frame, expected_shape=(60, 4))
    assert info.value.kind == "bad_shape"


def test_machine_in_frame_must_match_topic() -> None:
    frame = encode_window(seed_window(machine="m02"))
    with pytest.raises(PayloadError, match="m02"):
        decode_any(frame, machine="m01")


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (b"{not json", "bad_json"),
        (b"[1, 2]", "bad_json"),
        (b'{"v": 1, "machine": "m01", "data": []}', "bad_shape"),
        (b'{"v": 1, "machine": "m01", "data": [[1, 2], [3]]}', "bad_shape"),
        (b'{"v": 1, "machine": "m01", "data": [["a", "b"]]}', "bad_shape"),
        (b'{"v": 1, "machine": "m01", "data": [[1e39, 0]]}', "non_finite"),
        (b'{"v": 1, "machine": "m01", "data": [[NaN, 0]]}', "non_finite"),
        (b'{"v": 2, "machine": "m01", "data": [[1, 0]]}', "bad_version"),
        (b'{"v": 1, "machine": "m01", "data": [[1, 0]], "label": ""}', "bad_label"),
        (b'{"v": 1, "machine": "m01", "data": [[1, 0]], "label": 64}', "bad_label"),
        (b'{"v": 1, "machine": "m01", "data": [[1, 0]], "label": true}', "bad_label"),
        (b'{"v": 1, "machine": "m/01", "data": [[1, 0]]}', "bad_id"),
        (b'{"v": 1, "machine": "m01", "data": [[1, 0]], "extra": 1}', "malformed"),
        (b'{"v": 1, "machine": "m01", "seq": "7", "data": [[1, 0]]}', "bad_field"),
        (b'{"v": 1, "data": [[1, 0]]}', "malformed"),
    ],
)
def test_malformed_json_windows_raise_typed_error(payload: bytes, kind: str) -> None:
    with pytest.raises(PayloadError) as info:
        decode_window_json(payload)
    assert info.value.kind == kind


def test_json_machine_defaults_to_topic() -> None:
    obj = {"data": [[50.0, 0.3, 11.0, 125.0]] * 60}
    w = decode_any(json.dumps(obj).encode(), machine="m05", expected_shape=(60, 4))
    assert (w.machine, w.seq, w.label) == ("m05", 0, None)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"v": 1, "machine": "m01", "data": [[1, 0]], "label": "broken"}',
        b'{"v": 1, "machine": "m01", "data": [[1, 0]], "label": 4}',
        b'{"v": 1, "machine": "m01", "data": [[1, 0]], "label": "3"}',
    ],
)
def test_a_label_the_machine_type_has_not_is_refused_naming_its_classes(payload: bytes) -> None:
    window = decode_window_json(payload)  # the codec knows no vocabulary: the type does
    with pytest.raises(PayloadError, match="normal, bearing_fault, drive_wear, pump_fault") as info:
        DEFAULT_TYPE.resolve(window)
    assert info.value.kind == "bad_label"


def test_a_class_named_3_is_a_name_never_an_index() -> None:
    kind = MachineType("gauge", (Channel("p"),), classes=("ok", "low", "3"))
    by_name = decode_window_json(b'{"v": 1, "machine": "g1", "data": [[1], [2]], "label": "3"}')
    by_index = decode_window_json(b'{"v": 1, "machine": "g1", "data": [[1], [2]], "label": 1}')
    assert kind.resolve(by_name).label == 2 and kind.resolve(by_index).label == 1
    frame = encode_window(Window("m01", 1, 0, np.zeros((60, 4), np.float32), label=7))
    with pytest.raises(PayloadError) as info:  # index 7 is carried; the default type has 4
        DEFAULT_TYPE.resolve(decode_window(frame))
    assert info.value.kind == "bad_label"
