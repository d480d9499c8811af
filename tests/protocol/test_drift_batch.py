"""Drift batch codec: round trip, identity for dedup, corrupt batches refused."""

from __future__ import annotations

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
