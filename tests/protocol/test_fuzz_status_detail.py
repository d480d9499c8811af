"""Fuzzing the status-detail codecs (protocol/status_detail) as test_fuzz_decoders.py fuzzes the
messages: every part's `from_obj` raises only PayloadError, within 50 ms of CPU, for any JSON a
status may carry (raw bytes through the bounded reader, valid parts with one value replaced,
deleted or added, mutated encodings, garbage); valid parts round-trip unchanged; and
`DetailReader`, which the roles call on paho's thread, raises nothing at all."""

from __future__ import annotations

import json
import time
from functools import partial
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import PayloadError, Status
from protocol._json import loads
from protocol.messages import MAX_MESSAGE_BYTES
from protocol.status_detail import (
    PARTS,
    ROLES,
    DetailReader,
    Part,
    RecentMachines,
    Rollbacks,
    SimMachines,
)

from ._status_details import detail_obj, part_obj
from .test_fuzz_decoders import (
    FUZZ,
    MAX_DECODE_S,
    dumpb,
    evil,
    json_payloads,
    mutate_bytes,
    only_typed_errors,
    seeds,
)


def _from_json(part: type[Part], payload: bytes) -> object:
    """What a reader does with a part: the status's bounded JSON reader, then the codec."""
    return part.from_obj(loads(payload, "status detail", max_bytes=MAX_MESSAGE_BYTES))


def _payloads(part: type[Part]) -> st.SearchStrategy[bytes]:
    """`json_payloads` of the part's valid values; a text part (no object or list to poke
    into) gets garbage, mutated encodings and any JSON value instead."""
    valid = seeds.map(partial(part_obj, part))
    if isinstance(part_obj(part, 0), str):
        return st.one_of(
            st.binary(max_size=300),
            valid.map(dumpb),
            st.builds(mutate_bytes, valid.map(dumpb), seeds),
            evil.map(dumpb),
        )
    return json_payloads(valid)


EXAMPLES = 4000
PART_PAYLOADS = tuple(_payloads(part) for part in PARTS)
DETAIL_PAYLOADS = tuple(json_payloads(seeds.map(partial(detail_obj, role))) for role in ROLES)


@settings(FUZZ, max_examples=EXAMPLES)
@given(st.tuples(*PART_PAYLOADS), st.tuples(*DETAIL_PAYLOADS), seeds)
def test_every_part_raises_only_typed_errors_and_a_reader_nothing(
    parts: tuple[bytes, ...], details: tuple[bytes, ...], seed: int
) -> None:
    """One example: one payload per part, one detail per role, one round trip per part
    (EXAMPLES of each: 17 decodes an example keep the test within a minute)."""
    for part, payload in zip(PARTS, parts, strict=True):
        only_typed_errors(part.__name__, lambda: _from_json(part, payload))  # noqa: B023
    for role, payload in zip(ROLES, details, strict=True):
        try:
            detail = loads(payload, "status detail", max_bytes=MAX_MESSAGE_BYTES)
        except PayloadError:
            continue  # the status decoder refuses it before any part is read
        bad: list[PayloadError] = []
        start = time.thread_time()
        reader = DetailReader(detail, role, bad.append)  # never raises: no try here
        for part in PARTS:
            reader.get(part)
        reader.rollbacks()
        assert time.thread_time() - start <= 3 * MAX_DECODE_S
        assert all(isinstance(e.kind, str) for e in bad)
    for part in PARTS:
        valid = part_obj(part, seed)
        typed = part.from_obj(loads(json.dumps(valid), "detail", max_bytes=MAX_MESSAGE_BYTES))
        assert typed.to_json_obj() == valid and part.from_obj(typed.to_json_obj()) == typed


def _status_bytes(detail: dict[str, Any]) -> bytes:
    return Status("pi-1", "edge", "online", "0.1.0", detail=detail).to_json()


@pytest.mark.parametrize(
    ("part", "value"),
    [
        (RecentMachines, [f"{i:04d}" + "m" * 59 for i in range(900)]),  # 900 ids of 63
        (
            SimMachines,
            {f"m{i:04d}": {"state": "normal", "drift": "off", "labels": i} for i in range(1200)},
        ),
        (
            Rollbacks,
            [{"from": 2**31 - 1, "to": None, "reason": "r" * 200, "ts": 1.5, "auto": True}] * 8,
        ),
    ],
)
def test_the_largest_parts_a_status_can_carry_decode_within_50_ms(
    part: type[Part], value: Any
) -> None:
    payload = _status_bytes({"v": 1, part.KEY: value})
    assert len(payload) <= MAX_MESSAGE_BYTES
    status = Status.from_json(payload)
    start = time.thread_time()
    got = DetailReader(status.detail, part.ROLE).get(part)
    spent = time.thread_time() - start
    assert got is not None and spent <= MAX_DECODE_S, f"{spent * 1e3:.1f} ms"
