"""Fuzzing: every decoder raises only PayloadError, within 50 ms, for any input bytes.

Each decoder gets ≥ 10,000 generated payloads mixing raw bytes, JSON that has the right keys but
wrong values (wrong types, bools for ints, 400- and 5000-digit numbers, NaN, deep nesting),
mutations of valid encodings (flipped, cut, inserted and repeated bytes) and hand-made binary
headers. A decode may refuse anything, but only with the protocol's typed error, and may not
spend more than 50 ms of CPU on one payload. Regression tests for the exact findings of issue 11
follow at the end.
"""

from __future__ import annotations

import copy
import gc
import json
import math
import random
import struct
import time
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import (
    CLASSES,
    Command,
    PayloadError,
    Prediction,
    Status,
    Topics,
    Window,
    check_id,
    decode_any,
    decode_window,
    decode_window_json,
    encode_window,
)
from protocol.drift_batch import _HEAD, _RECORD, DriftBatch, Kept, decode_batch, encode_batch
from protocol.window import HEADER, MAGIC

MAX_DECODE_S = 0.050  # CPU time of one decode (robust to a loaded machine)
FUZZ = settings(
    max_examples=10_000,
    deadline=timedelta(milliseconds=250),  # wall clock, with headroom for a loaded 2-core box
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SLOWEST: dict[str, float] = {}  # decoder -> most CPU seconds one payload took (for reports)


def only_typed_errors(name: str, decode: Callable[[], object]) -> None:
    """Run one decode: PayloadError is fine, anything else fails the test, as does > 50 ms.

    The collector is off during the decode: a full collection of the garbage hypothesis leaves
    behind can take 100 ms and is no cost of the decoder's.
    """
    gc.disable()
    start = time.thread_time()
    try:
        decode()
    except PayloadError as exc:
        assert isinstance(exc.kind, str) and str(exc)
    finally:
        spent = time.thread_time() - start
        gc.enable()
    SLOWEST[name] = max(SLOWEST.get(name, 0.0), spent)
    assert spent <= MAX_DECODE_S, f"{name} spent {spent * 1e3:.1f} ms CPU on one payload"


# ---------------------------------------------------------------- JSON text with raw numbers


class Raw(str):
    """JSON text inserted verbatim (numbers json.dumps cannot write, deep nesting, bad bytes)."""


def dump(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dump(v) for v in value) + "]"
    return json.dumps(value)


def dumpb(value: Any) -> bytes:
    """UTF-8 JSON; lone surrogates in a Raw become the invalid bytes they stand for."""
    return dump(value).encode("utf-8", "surrogateescape")


seeds = st.integers(0, 2**32 - 1)
number_texts = st.one_of(
    st.integers(1, 5000).map(lambda n: "9" * n),
    st.integers(1, 500).map(lambda n: "-1" + "0" * n),
    st.integers(1, 3000).map(lambda n: "0." + "1" * n),
    st.integers(1, 400).map(lambda n: "1e" + "9" * n),
    st.sampled_from(
        [
            "NaN",
            "Infinity",
            "-Infinity",
            "1e999",
            "-1e999",
            "1e-999",
            "-0",
            "1E400",
            "2e308",
            str(2**64 - 1),
            str(2**64),
            str(2**63),
            str(-(2**63) - 1),
            "4294967296",
        ]
    ),
).map(Raw)

odd_strings = st.sampled_from(
    ["", "m1\n", "m/1", "+", "#", "all", "x" * 65, "online", "degraded", "normal", "\x00", "é"]
)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),  # json.dumps writes NaN and Infinity for the non-finite ones
    st.text(max_size=12),
    odd_strings,
    number_texts,
    st.just(Raw('"\udcff\udcfe"')),  # invalid UTF-8 inside a string
)
containers = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=8,
)
deep = st.tuples(st.integers(1, 3000) | st.just(100_000), st.integers(0, 2)).map(
    lambda nk: Raw(
        ("[" * nk[0] + "]" * nk[0], '{"a":' * nk[0] + "0" + "}" * nk[0], "[" * nk[0])[nk[1]]
    )
)
evil = st.one_of(leaves, containers, deep)


def poke(obj: Any, seed: int, value: Any, op: str) -> Any:
    """A copy of `obj` with one place (chosen by `seed`) replaced, deleted or added to."""
    rng = random.Random(seed)
    picks = [rng.randrange(1 << 16) for _ in range(rng.randint(1, 4))]
    root = copy.deepcopy(obj)
    node = root
    for n, pick in enumerate(picks):
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        key = keys[pick % len(keys)]
        child = node[key]
        if n < len(picks) - 1 and isinstance(child, dict | list) and child:
            node = child
            continue
        if op == "set":
            node[key] = value
        elif op == "delete":
            del node[key]
        elif isinstance(node, dict):
            node[f"extra{pick}"] = value
        else:
            node.insert(key, value)
        break
    return root


def mutate_bytes(data: bytes, seed: int) -> bytes:
    """Flip, set, cut, insert, drop or repeat bytes of a valid encoding (1-4 edits by `seed`)."""
    rng = random.Random(seed)
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind, pos, byte = rng.randrange(6), rng.randrange(1 << 16), rng.randrange(256)
        at = pos % (len(buf) + 1)
        if kind == 0 and at < len(buf):
            buf[at] ^= 1 << (byte % 8)
        elif kind == 1 and at < len(buf):
            buf[at] = byte
        elif kind == 2:
            del buf[at:]
        elif kind == 3:
            buf[at:at] = bytes([byte]) * (1 + byte % 4)
        elif kind == 4:
            del buf[at : at + 1 + byte % 16]
        else:
            buf[at:at] = buf[at : at + 1 + byte * 4]
    return bytes(buf)


ops = st.sampled_from(["set", "set", "delete", "add"])


def json_payloads(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """Raw bytes, valid objects, objects with one wrong value, mutated encodings, garbage."""
    return st.one_of(
        st.binary(max_size=300),
        valid.map(dumpb),
        st.builds(poke, valid, seeds, number_texts, ops).map(dumpb),
        st.builds(poke, valid, seeds, evil, ops).map(dumpb),
        st.builds(poke, valid, seeds, evil, ops).map(dumpb),
        st.builds(mutate_bytes, valid.map(dumpb), seeds),
        evil.map(dumpb),
    )


# ---------------------------------------------------------------- valid objects per message

# Valid objects come from one drawn seed each (not a draw per field): hypothesis spends its
# draws on the wrong values, and 10,000 examples per decoder stay fast.
IDS = ("m01", "pi-1", "M.x_2", "a", "m" * 64)


def make_rows(rng: random.Random) -> list[list[float]]:
    t, c = rng.randint(1, 6), rng.randint(1, 4)
    return [[round(rng.gauss(50, 20), rng.randrange(8)) for _ in range(c)] for _ in range(t)]


def window_obj(seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    obj: dict[str, Any] = {
        "v": 1,
        "machine": rng.choice(IDS),
        "seq": rng.choice([0, 1, 2**64 - 1, rng.randrange(2**64)]),
        "data": make_rows(rng),
    }
    if rng.random() < 0.5:
        obj["ts_ns"] = rng.randrange(-(2**63), 2**63)
    if rng.random() < 0.5:
        obj["label"] = rng.choice([None, *CLASSES, 0, 3])
    if rng.random() < 0.2:
        obj["channels"] = ["c"] * len(obj["data"][0])
    return obj


def prediction_obj(seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    k = rng.randrange(len(CLASSES))
    probabilities = [0.01] * len(CLASSES)
    probabilities[k] = 0.97
    return {
        "v": 1,
        "machine": rng.choice(IDS),
        "seq": rng.randrange(2**64),
        "label": CLASSES[k],
        "confidence": 0.97,
        "probabilities": probabilities,
        "model_version": rng.randrange(2**32),
        "classes": list(CLASSES),
        "truth": rng.choice([None, *CLASSES]),
        "drift": rng.choice(["ok", "warning", "drift"]),
        "ood": rng.random() < 0.5,
        "ood_score": rng.random() * 10,
        "timestamps_ns": {"sensor": rng.randrange(2**63), "received": rng.randrange(2**63)},
        "latency_ms": {"queue": rng.random(), "total": rng.random() * 5},
    }


def status_obj(seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    return {
        "v": 1,
        "node": rng.choice(IDS),
        "role": rng.choice(["edge", "trainer", "simulator"]),
        "state": rng.choice(["online", "offline", "degraded"]),
        "software_version": "0.1.0",
        "model_version": rng.choice([None, rng.randrange(2**32)]),
        "timestamp": rng.random() * 2e9,
        "metrics": {"drops": float(rng.randrange(9)), "uptime_s": rng.random() * 1e4},
        "errors": {"bad_json": rng.randrange(99), "fault:edge-worker:ValueError": 1},
        "drift": rng.choice([None, "ok", "drift"]),
        "detail": {"phase": "idle", "machines": ["m01", "m02"], "drift": {"m01": {"x": 0.5}}},
        **({"reason": "worker thread died"} if rng.random() < 0.3 else {}),
    }


def command_obj(seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    machines = rng.choice(["all", ["m01"], ["m01", "pi-1", "a"]])
    return rng.choice(
        [
            {
                "v": 1,
                "cmd": "drift",
                "mode": "offset",
                "machines": machines,
                "params": {"temperature": rng.gauss(0, 5), "power": 1.0},
            },
            {"v": 1, "cmd": "drift", "mode": "gain", "params": {"vibration": 2.0}},
            {"v": 1, "cmd": "drift", "mode": "ramp", "params": {"duration_s": 30}},
            {"v": 1, "cmd": "drift", "mode": "regime", "params": {"load": 2.0}},
            {"v": 1, "cmd": "fault", "state": rng.choice(CLASSES), "machines": machines},
            {"v": 1, "cmd": "labels", "params": {"fraction": rng.random()}},
            {"v": 1, "cmd": "repair", "machines": machines},
        ]
    )


window_objs = seeds.map(window_obj)
prediction_objs = seeds.map(prediction_obj)
status_objs = seeds.map(status_obj)
command_objs = seeds.map(command_obj)


# ---------------------------------------------------------------- binary encodings


def make_window(seed: int) -> Window:
    obj = window_obj(seed)
    label = obj.get("label")
    return Window(
        obj["machine"],
        obj["seq"],
        obj.get("ts_ns", 0),
        np.array(obj["data"], np.float32),
        CLASSES.index(label) if isinstance(label, str) else label,
    )


valid_windows = seeds.map(make_window)
valid_frames = valid_windows.map(encode_window)


def craft_frame(
    fields: tuple[int, int, int, int, int, int],
    seq: int,
    ts: int,
    mid: bytes,
    body: bytes,
    exact: bool,
) -> bytes:
    """A header with chosen fields; `exact` makes its length match the header's claims."""
    version, label, t, c, id_len, _ = fields
    head = HEADER.pack(MAGIC, version, label, t, c, id_len, seq, ts)
    if exact:
        need = id_len + 4 * t * c
        return head + (mid + body * (need // max(len(body), 1) + 1))[:need].ljust(need, b"\0")
    return head + mid + body


header_fields = st.tuples(
    st.sampled_from([1, 1, 1, 0, 2]),
    st.integers(-128, 127),
    st.sampled_from([0, 1, 2, 3, 4096, 4097, 65535]),
    st.sampled_from([0, 1, 2, 4, 16, 17, 255]),
    st.sampled_from([0, 1, 3, 64, 65, 255]),
    st.just(0),
)
id_bytes = st.sampled_from(
    [b"m01", b"m1\n", b"m/1", b"\xff\xfe", b"\xc3", b"", b"m" * 64, b"e\xcc\x81"]
)
sample_bytes = st.one_of(
    st.binary(max_size=64),
    st.sampled_from([struct.pack("<f", math.nan), struct.pack("<f", math.inf), b"\x00" * 4]),
)
crafted_frames = st.builds(
    craft_frame,
    header_fields,
    st.integers(0, 2**64 - 1),
    st.integers(-(2**63), 2**63 - 1),
    id_bytes,
    sample_bytes,
    st.booleans(),
)
binary_window_payloads = st.one_of(
    st.binary(max_size=200),
    valid_frames,
    st.builds(mutate_bytes, valid_frames, seeds),
    crafted_frames,
    crafted_frames,
)


def make_batch(
    node: str,
    version: int,
    kept: list[tuple[Window, int, int | None, float]],
    classes: tuple[str, ...] | None = None,
) -> bytes:
    from protocol.drift_batch import REASONS

    records = tuple(Kept(w, REASONS[r % len(REASONS)], p, s) for w, r, p, s in kept)
    kind = "default" if classes is None else "fan"
    return encode_batch(DriftBatch(bytes(range(16)), node, version, records, kind, classes))


def craft_batch(
    count: int, node: bytes, version: int, recs: list[tuple[int, int, float, bytes]], trail: bytes
) -> bytes:
    """A batch assembled field by field: any reason, prediction, score (NaN too) and frame."""
    parts = [_HEAD.pack(b"ED", 1, 0, count, bytes(16), len(node)), node, struct.pack("<I", version)]
    for reason, predicted, score, frame in recs:
        parts.append(_RECORD.pack(reason, predicted, 0, score, len(frame)))
        parts.append(frame)
    return b"".join(parts) + trail


def valid_batch(seed: int) -> bytes:
    rng = random.Random(seed)
    kept = [
        (
            make_window(rng.randrange(2**32)),
            rng.randrange(4),
            rng.choice([None, 0, 3]),
            rng.random(),
        )
        for _ in range(rng.randint(1, 3))
    ]
    tables = [None, (*CLASSES, "seal leak", "3")]  # version 1, or 3 with a grown class table
    return make_batch(rng.choice(IDS), rng.randrange(2**32), kept, rng.choice(tables))


valid_batches = seeds.map(valid_batch)
crafted_batches = st.builds(
    craft_batch,
    st.sampled_from([0, 1, 2, 3, 4096, 4097, 65535]),
    id_bytes,
    st.integers(0, 2**32 - 1),
    st.lists(
        st.tuples(
            st.integers(0, 255),
            st.integers(-128, 127),
            st.floats(),  # NaN and ±inf included
            valid_frames | binary_window_payloads,
        ),
        max_size=3,
    ),
    st.binary(max_size=4),
)
batch_payloads = st.one_of(
    st.binary(max_size=200),
    valid_batches,
    st.builds(mutate_bytes, valid_batches, seeds),
    crafted_batches,
    crafted_batches,
)

window_json_payloads = json_payloads(window_objs)
shapes = st.sampled_from([None, None, (60, 4), (2, 3)])
topic_machines = st.sampled_from([None, None, "m01"])

# name -> (strategy of arguments, decoder called with them); also used by ad-hoc measurements
TARGETS: dict[str, tuple[st.SearchStrategy[Any], Callable[..., object]]] = {
    "decode_window": (st.tuples(binary_window_payloads), decode_window),
    "decode_window_json": (st.tuples(window_json_payloads, topic_machines), decode_window_json),
    "decode_any": (
        st.tuples(window_json_payloads | binary_window_payloads, topic_machines, shapes),
        decode_any,
    ),
    "Command.from_json": (st.tuples(json_payloads(command_objs)), Command.from_json),
    "Prediction.from_json": (st.tuples(json_payloads(prediction_objs)), Prediction.from_json),
    "Status.from_json": (st.tuples(json_payloads(status_objs)), Status.from_json),
    "decode_batch": (st.tuples(batch_payloads), decode_batch),
}


@FUZZ
@given(st.tuples(*(strategy for strategy, _ in TARGETS.values())))
def test_every_decoder_raises_only_typed_errors(payloads: tuple[tuple[Any, ...], ...]) -> None:
    """One example feeds one payload to each decoder: 10,000 examples, 10,000 per decoder
    (hypothesis' fixed cost per example is shared, which keeps the test within a minute)."""
    for (name, (_, decoder)), args in zip(TARGETS.items(), payloads, strict=True):
        only_typed_errors(name, lambda: decoder(*args))  # noqa: B023 (called at once)


# ---------------------------------------------------------------- the findings of issue 11


def kind_of(decode: Callable[[], object]) -> str:
    with pytest.raises(PayloadError) as info:
        decode()
    return info.value.kind


def test_a_400_digit_sample_in_a_json_window_is_a_bad_number() -> None:
    payload = b'{"data":[[' + b"9" * 400 + b",0,0,0]]}"
    assert kind_of(lambda: decode_any(payload, "m01", (1, 4))) == "bad_number"
    assert kind_of(lambda: decode_window_json(payload, "m01")) == "bad_number"


def test_a_5000_digit_number_anywhere_in_a_status_is_a_bad_number() -> None:
    good = json.loads(Status("pi-1", "edge", "online", "0.1.0").to_json())
    for where in ("timestamp", "model_version", "detail"):
        obj = {**good, where: Raw("9" * 5000)}
        assert kind_of(partial(Status.from_json, dumpb(obj))) == "bad_number"
    nested = {**good, "detail": {"drift": {"m01": [Raw("-" + "9" * 5000)]}}}
    assert kind_of(lambda: Status.from_json(dumpb(nested))) == "bad_number"


def test_seq_2_pow_64_minus_1_is_accepted_and_2_pow_64_refused() -> None:
    window = {"machine": "m01", "data": [[1.0, 2.0]]}
    assert decode_window_json(dumpb({**window, "seq": 2**64 - 1})).seq == 2**64 - 1
    assert kind_of(lambda: decode_window_json(dumpb({**window, "seq": 2**64}))) == "bad_field"
    assert kind_of(lambda: decode_window_json(dumpb({**window, "seq": -1}))) == "bad_field"
    top = Window("m01", 2**64 - 1, 0, np.ones((1, 1), dtype=np.float32))
    assert decode_window(encode_window(top)).seq == 2**64 - 1
    prediction = prediction_obj(1)
    assert Prediction.from_json(dumpb({**prediction, "seq": 2**64 - 1})).seq == 2**64 - 1
    assert kind_of(lambda: Prediction.from_json(dumpb({**prediction, "seq": 2**64}))) == "bad_field"


@pytest.mark.parametrize("score", [math.nan, math.inf, -math.inf])
def test_a_non_finite_score_in_a_drift_batch_is_refused(score: float) -> None:
    window = Window("m01", 1, 2, np.zeros((60, 4), np.float32), label=1)
    good = encode_batch(DriftBatch(bytes(16), "pi-1", 3, (Kept(window, "labeled", 1, 0.5),)))
    at = _HEAD.size + len("pi-1") + 4 + 4  # reason u8, predicted i8, reserved u16, then score
    bad = good[:at] + struct.pack("<d", score) + good[at + 8 :]
    assert decode_batch(good).records[0].score == 0.5
    assert kind_of(lambda: decode_batch(bad)) == "non_finite"


def test_an_id_ending_in_a_newline_is_refused_everywhere() -> None:
    assert kind_of(lambda: check_id("m1\n")) == "bad_id"
    assert kind_of(lambda: check_id("pi-1\n", "node id")) == "bad_id"
    assert Topics().machine_of("edgeloop/v1/machines/m1\n/window") is None
    frame = craft_frame((1, -1, 1, 1, 3, 0), 1, 0, b"m1\n", b"\0\0\0\0", exact=True)
    assert kind_of(lambda: decode_window(frame)) == "bad_id"
    json_window = b'{"machine": "m1\\n", "data": [[1]]}'
    assert kind_of(lambda: decode_window_json(json_window)) == "bad_id"
    status = dumpb({**status_obj(1), "node": "pi-1\n"})
    assert kind_of(lambda: Status.from_json(status)) == "bad_id"


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (b"[" * 100_000, "too_deep"),
        (b'{"data":' + b"[" * 40 + b"1" + b"]" * 40 + b"}", "too_deep"),
        (b'{"machine":"m\xff","data":[[1]]}', "bad_utf8"),
        (b'\xff\xfe{\x00"\x00d\x00"\x00', "bad_utf8"),  # UTF-16 is not guessed
        (b'{"seq":true,"machine":"m01","data":[[1]]}', "bad_field"),
        (b'{"machine":"m01","data":[[true]]}', "bad_shape"),
        (b'{"machine":"m01","data":[["1.5"]]}', "bad_shape"),
        (b'{"machine":"m01","data":[[1e999]]}', "non_finite"),
        (b'{"machine":"m01","data":[[Infinity]]}', "non_finite"),
        (b'{"machine":"m01","data":[[0.' + b"1" * 50 + b"]]}", "bad_number"),
        (b'{"v":true,"machine":"m01","data":[[1]]}', "bad_version"),
        (b'{"machine":["m01"],"data":[[1]]}', "bad_id"),
    ],
)
def test_json_windows_are_refused_by_kind(payload: bytes, kind: str) -> None:
    assert kind_of(lambda: decode_window_json(payload)) == kind


def test_wrong_types_in_messages_are_bad_fields() -> None:
    prediction, status = prediction_obj(2), status_obj(2)
    for field, value in [
        ("confidence", 1.5),
        ("confidence", True),
        ("probabilities", "abcd"),
        ("probabilities", [0.5, 0.5, 0.5, None]),
        ("classes", "normal"),
        ("ood", 1),
        ("timestamps_ns", {"sensor": 2**63}),
        ("latency_ms", {"total": "1"}),
        ("model_version", -1),
    ]:
        bad = dumpb({**prediction, field: value})
        assert kind_of(partial(Prediction.from_json, bad)) in {"bad_field", "bad_shape"}
    for field, value in [
        ("metrics", {"drops": "3"}),
        ("errors", {"bad_json": -1}),
        ("errors", {"bad_json": 1.5}),
        ("timestamp", -1.0),
        ("state", "sleeping"),
        ("role", "edge/x"),
        ("detail", []),
        ("reason", "x" * 201),
        ("software_version", ""),
    ]:
        bad = dumpb({**status, field: value})
        assert kind_of(partial(Status.from_json, bad)) in {"bad_field", "bad_id"}
    for command in [
        b'{"cmd":"drift","mode":"offset","params":{"power":' + b"9" * 400 + b"}}",
        b'{"cmd":"drift","mode":"offset","params":{"power":true}}',
        b'{"cmd":"drift","mode":["offset"]}',
        b'{"cmd":"labels","params":[0.5]}',
        b'{"cmd":"repair","machines":[]}',
    ]:
        assert kind_of(partial(Command.from_json, command)) in {"bad_field", "bad_number"}


def test_a_degraded_status_carries_its_reason_and_old_statuses_still_read() -> None:
    degraded = Status("pi-1", "edge", "degraded", "0.1.0", reason="edge-worker died")
    assert Status.from_json(degraded.to_json()) == degraded
    online = Status("pi-1", "edge", "online", "0.1.0", 3, 1.7e9, {"drops": 0.0})
    assert "reason" not in json.loads(online.to_json())
    old = b'{"v":1,"node":"pi-1","role":"edge","state":"online","software_version":"0.1.0"}'
    assert Status.from_json(old).reason is None


@pytest.mark.parametrize(
    ("decode", "payload"),
    [
        (decode_window_json, b"[" * (128 * 1024)),
        (decode_window_json, b'"' * (128 * 1024)),
        (decode_window_json, b'{"machine":"m01","data":[[' + b"1," * 65_500 + b"1]]}"),
        (decode_window_json, b'{"machine":"m01","data":[' + b"[1.5]," * 21_800 + b"[1]]}"),
        (Status.from_json, b'{"v":1,"detail":{"x":[' + b'"\\\\\\"[",' * 8_150 + b"0]}}"),
        (Status.from_json, b'{"v":1,"detail":{"x":[' + b"0," * 32_700 + b"0]}}"),
        (Prediction.from_json, b'{"v":1,"x":[' + b"[1.5]," * 10_900 + b"0]}"),
        (Command.from_json, b'{"machines":[' + b'"m01",' * 2700 + b'"m01"],"cmd":"repair"}'),
        (decode_window, b"\x00" * (1 << 20)),
    ],
)
def test_the_largest_payloads_allowed_decode_within_50_ms(
    decode: Callable[[bytes], object], payload: bytes
) -> None:
    only_typed_errors(decode.__qualname__, lambda: decode(payload))
