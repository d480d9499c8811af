"""Drift batch codec: round trip, identity for dedup, corrupt batches refused."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from protocol import PayloadError, Window
from protocol.drift_batch import DriftBatch, Kept, decode_batch, encode_batch, window_id


def batch(n: int = 5) -> DriftBatch:
    rng = np.random.default_rng(1)
    records = tuple(
        Kept(
            Window(
                f"m{i % 3:02d}",
                i,
                1_000 + i,
                rng.normal(size=(60, 4)).astype(np.float32),
                label=i % 4 if i % 2 else None,
            ),
            "labeled" if i % 2 else "low_confidence",
            i % 4,
            0.125 * i,
        )
        for i in range(n)
    )
    return DriftBatch(bytes(range(16)), "pi-7", 12, records)


def test_batch_round_trip_keeps_windows_labels_and_reasons() -> None:
    b = batch()
    out = decode_batch(encode_batch(b))
    assert out == b
    assert [window_id(k.window) for k in out.records][:2] == ["m00:0:1000", "m01:1:1001"]


@pytest.mark.parametrize(
    ("mutate", "kind"),
    [
        (lambda d: d[:-1], "truncated"),
        (lambda d: d + b"\x00", "malformed"),
        (lambda d: b"XX" + d[2:], "bad_magic"),
        (lambda d: d[:2] + b"\x05" + d[3:], "bad_version"),
        (lambda d: d[:10], "truncated"),
    ],
)
def test_corrupt_batches_raise_typed_errors(mutate, kind: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PayloadError) as info:
        decode_batch(mutate(encode_batch(batch())))
    assert info.value.kind == kind


def test_empty_batch_and_unknown_reason_are_refused() -> None:
    with pytest.raises(PayloadError, match=r"1\.\.4096"):
        DriftBatch(bytes(16), "pi", 1, ())
    with pytest.raises(PayloadError, match="reason"):
        Kept(batch().records[0].window, "because")


def _grown(classes: tuple[str, ...] = ("ok", "loose", "seal leak")) -> DriftBatch:
    b = batch(4)
    return DriftBatch(b.batch_id, b.node, b.model_version, b.records[:3], "fan", classes)


def test_a_version_3_batch_carries_the_class_table_its_labels_index() -> None:
    grown = _grown(("ok", "loose", "seal leak", "3"))
    raw = encode_batch(grown)
    assert raw[2] == 3
    out = decode_batch(raw)
    assert out == grown and out.classes == ("ok", "loose", "seal leak", "3")
    assert [k.window.label for k in out.records] == [None, 1, None]
    # versions 1 and 2 carry none: their labels index the type's declared classes
    assert decode_batch(encode_batch(batch())).classes is None


@pytest.mark.parametrize(
    ("classes", "why"),
    [
        (("ok",), "beyond its class table"),  # a label 1 and predictions 1, 2 name no class
        (("ok", "ok", "x"), "twice"),
        (("ok", "anomaly", "x"), "anomaly"),
        (("ok", "a/b", "x"), "printable"),
        (tuple(f"c{i}" for i in range(65)), "1..64"),
        ((), "1..64"),
    ],
)
def test_a_class_table_that_cannot_name_its_records_is_refused(
    classes: tuple[str, ...], why: str
) -> None:
    with pytest.raises(PayloadError, match=why):
        _grown(classes)


def test_a_corrupt_class_table_on_the_wire_is_refused_typed() -> None:
    raw = bytearray(encode_batch(_grown()))
    head = raw.index(b"fan") + 3  # n_classes follows the machine type
    assert raw[head] == 3
    cases: tuple[tuple[Callable[[bytes], bytes], str], ...] = (
        (lambda d: d[:head] + b"\x00" + d[head + 1 :], "bad_field"),  # no names
        (lambda d: d[:head] + b"\x41" + d[head + 1 :], "bad_field"),  # 65 names
        (lambda d: d[: head + 4], "truncated"),
        (lambda d: d[: head + 3] + b"\xff" + d[head + 4 :], "bad_utf8"),
        (lambda d: d[: head + 3] + b"\x07k" + d[head + 5 :], "bad_label"),  # not printable
    )
    for mutate, kind in cases:
        with pytest.raises(PayloadError) as info:
            decode_batch(bytes(mutate(bytes(raw))))
        assert info.value.kind == kind
