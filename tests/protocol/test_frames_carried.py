"""A received window's frame travels with it: buffer, drift batch and trainer store re-use it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from pi_edge.loop.buffer import DurableBuffer
from protocol import Window
from protocol.drift_batch import DriftBatch, Kept, decode_batch, encode_batch
from protocol.machine_type import DEFAULT_TYPE
from protocol.window import decode_any, decode_window, encode_window, window_to_json


def frame() -> bytes:
    data = np.arange(240, dtype=np.float32).reshape(60, 4)
    return encode_window(Window("m01", 5, 123, data, label=1))


def test_a_decoded_window_encodes_to_the_very_bytes_it_came_in() -> None:
    raw = frame()
    window = decode_window(raw)
    assert window.frame is raw
    assert encode_window(window) is raw


def test_a_changed_window_is_encoded_afresh() -> None:
    window = decode_window(frame())
    relabeled = dataclasses.replace(window, label=3)
    assert relabeled.frame is None
    assert decode_window(encode_window(relabeled)).label == 3


def test_a_json_window_has_no_frame_until_it_is_encoded_once() -> None:
    named = decode_any(window_to_json(decode_window(frame())), "m01")  # its label is a name
    window = DEFAULT_TYPE.resolve(named)
    assert named.label == "bearing_fault" and window.label == 1
    assert window.frame is None
    assert encode_window(window) == frame()


def test_buffer_and_drift_batch_carry_the_received_frame(tmp_path: Path) -> None:
    raw = frame()
    buffer = DurableBuffer(tmp_path / "b.sqlite")
    buffer.add([Kept(decode_window(raw), "labeled", 1, 0.5)])
    _, records = buffer.take_batch(10)
    assert records[0].window.frame == raw
    payload = encode_batch(DriftBatch(b"0" * 16, "pi-1", 2, tuple(records)))
    assert raw in payload
    received = decode_batch(payload).records[0].window
    assert received.frame == raw and encode_window(received) is received.frame
    buffer.close()
