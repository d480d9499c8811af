"""Maintenance labels without a broker: the codec, the interval book, held windows, the file,
and the upgrade of a window kept unlabeled on the Pi and stored unlabeled by the trainer."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jetson_trainer.daemon.store import WindowStore
from pi_edge.loop.buffer import DurableBuffer
from pi_edge.loop.maintenance_labels import LABELS_FILE, LabelBook, Labeler, RecentWindows
from protocol import CLASSES, DriftBatch, Kept, PayloadError, Window
from protocol.labels import LabelEvent, parse_time, parse_when

T0 = 1_790_000_000.0


def _w(machine: str, i: int, label: int | None = None, t: float | None = None) -> Window:
    ts = T0 + i if t is None else t
    data = np.full((60, 4), i, np.float32)
    return Window(machine, i, int(ts * 1e9), data, label)


def _event(machine: str, cls: str, start: float, end: float | None = None, **kw: str) -> bytes:
    return LabelEvent(machine, cls, start, end, **kw).to_json()  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- the codec
def test_event_round_trips_and_reads_third_party_forms() -> None:
    e = LabelEvent("m01", "pump_fault", T0, T0 + 60, "wo-4711", "set", "anna", T0 + 61)
    assert LabelEvent.from_json(e.to_json()) == e
    minimal = LabelEvent.from_json(
        b'{"v":1,"machine":"m01","class":"drive_wear","from":"2026-11-24T09:00:00.25+01:00",'
        b'"to":null}'
    )
    assert minimal.start == parse_time("2026-11-24T08:00:00.25Z", "t")
    assert minimal.end is None and minimal.action == "set"
    assert minimal.label_id == f"m01@{round(minimal.start * 1000)}"
    assert minimal.covers(minimal.start) and minimal.covers(1e9 * 4)
    assert not minimal.covers(minimal.start - 0.001)


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (b'{"v":1,"machine":"m01","class":"normal"}', "bad_field"),  # no from
        (b'{"v":1,"machine":"m 1","class":"normal","from":1}', "bad_id"),
        (b'{"v":1,"machine":"m01","class":"normal","from":1,"extra":1}', "bad_field"),
        (b'{"v":1,"machine":"m01","class":"normal","from":-5}', "bad_field"),
        (b'{"v":1,"machine":"m01","class":"normal","from":1e300}', "bad_field"),
        (b'{"v":1,"machine":"m01","class":"normal","from":1,"action":"delete"}', "bad_field"),
        (b'{"v":1,"machine":"m01","class":"normal","from":1,"id":"a/b"}', "bad_field"),
        (b'{"v":1,"machine":"m01","class":"normal","from":1,"id":0}', "bad_field"),
        (b'{"v":1,"machine":"m01","class":"normal","from":1,"id":""}', "bad_field"),
        (b'{"v":1,"machine":"m01","class":"normal","from":1,"id":[]}', "too_deep"),
        (b'{"v":1,"machine":"m01","class":"normal","from":"2026-13-45T00:00Z"}', "bad_field"),
        (b'{"v":1,"machine":"m01","class":"normal","from":1,"to":1}', "bad_field"),
        (b'{"v":"1"}', "bad_version"),
        (b"\xff", "bad_utf8"),
        (b"x" * 4096, "too_large"),
        (b"{", "bad_json"),
    ],
)
def test_bad_events_are_refused_with_a_kind(payload: bytes, kind: str) -> None:
    with pytest.raises(PayloadError) as err:
        LabelEvent.from_json(payload)
    assert err.value.kind == kind


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_the_decoder_raises_only_payload_errors(payload: bytes) -> None:
    with contextlib.suppress(PayloadError):
        LabelEvent.from_json(payload)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["v", "id", "machine", "class", "from", "to", "action", "source", "ts"]),
        st.none() | st.integers() | st.floats() | st.text(max_size=20) | st.booleans(),
    )
)
def test_any_field_values_give_an_event_or_a_payload_error(obj: dict[str, object]) -> None:
    try:
        e = LabelEvent.from_json(json.dumps(obj))
    except PayloadError:
        return
    assert LabelEvent.from_json(e.to_json()) == e


def test_command_line_times() -> None:
    assert parse_when("now", T0) == T0
    assert parse_when("-90s", T0) == T0 - 90 == parse_when("now-90s", T0)
    assert parse_when("-1.5h", T0) == T0 - 5400
    assert parse_when("2026-11-24T08:00:00Z", 0) == parse_time("2026-11-24T08:00:00Z", "t")
    with pytest.raises(PayloadError):
        parse_when("yesterday", T0)


# ---------------------------------------------------------------------------- the book
def test_a_later_label_closes_the_open_one_and_cancel_withdraws() -> None:
    book = LabelBook()
    book.apply(LabelEvent("m01", "bearing_fault", 10.0))
    book.apply(LabelEvent("m01", "normal", 50.0, label_id="after-repair"))
    assert book.label_at("m01", 49.9) == 1 and book.label_at("m01", 50) == 0
    # a closed correction inside the bearing interval wins there only
    book.apply(LabelEvent("m01", "pump_fault", 20.0, 30.0, label_id="fix"))
    assert [book.label_at("m01", t) for t in (15, 20, 29.9, 30, 60)] == [1, 3, 3, 1, 0]
    book.apply(LabelEvent("m01", "pump_fault", 20.0, 30.0, label_id="fix", action="cancel"))
    assert book.label_at("m01", 25) == 1
    assert book.open_labels() == {"m01": "normal"}
    assert book.expire(before=49.0) == 0  # the bearing interval ends at 50
    assert book.expire(before=51.0) == 1
    assert book.label_at("m01", 15) is None


def test_the_book_is_bounded() -> None:
    book = LabelBook(max_labels=50)
    for i in range(500):
        book.apply(LabelEvent(f"m{i:03d}", "normal", 10.0, 20.0))
    assert len(book) == 50 and book.dropped == 450


# ---------------------------------------------------------------------------- held windows
def test_late_labels_reach_held_windows_and_win_over_in_band_labels() -> None:
    lab = Labeler(None, hold_windows=100, hold_s=600.0)
    ws = [_w("m01", i) for i in range(10)] + [_w("m02", i) for i in range(10)]
    ws[5] = _w("m01", 5, label=0)  # in-band: the technician's label wins over it
    ws[6] = _w("m01", 6, label=2)  # in-band and already the technician's class: unchanged
    lab.hold(ws, [2] * len(ws), [0.5] * len(ws), now=T0 + 10)
    lab.submit(_event("m01", "drive_wear", T0 + 3, T0 + 8))
    kept = lab.pump(now=T0 + 11)
    assert [k.window.seq for k in kept] == [3, 4, 5, 7]
    assert {(k.window.label, k.reason, k.predicted, k.score) for k in kept} == {
        (2, "labeled", 2, 0.5)
    }
    assert np.array_equal(kept[0].window.data, ws[3].data)
    # the same event again changes nothing; a correction relabels the same windows
    lab.submit(_event("m01", "drive_wear", T0 + 3, T0 + 8))
    assert lab.pump(now=T0 + 12) == []
    lab.submit(_event("m01", "pump_fault", T0 + 3, T0 + 8, label_id="m01@x"))
    assert [k.window.label for k in lab.pump(now=T0 + 12)] == [3, 3, 3, 3, 3]
    assert lab.stats()["windows_labeled"] == 9 and lab.stats()["events"] == 3


def test_open_labels_reach_new_windows_before_they_are_classified() -> None:
    lab = Labeler(None, hold_windows=0, hold_s=0.0)
    lab.submit(_event("m01", "bearing_fault", T0 + 5))
    assert lab.pump(now=T0) == []  # nothing held
    new = [_w("m01", 4), _w("m01", 5), _w("m02", 6), _w("m01", 7, label=0), _w("m01", 8, label=1)]
    out = lab.label_new(new)
    assert [w.label for w in out] == [None, 1, None, 1, 1]  # the maintenance label wins
    assert out[0] is new[0] and out[4] is new[4]


def test_held_windows_are_bounded_by_count_and_age_and_forget_evicted_machines() -> None:
    held = RecentWindows(max_windows=100, max_age_s=30.0)
    for i in range(300):
        held.add([_w("m01", i)], [0], [0.0], [None], now=T0 + i * 0.01)
    assert len(held) == 100
    held.add([_w("m02", 1)], [0], [0.0], [None], now=T0 + 100)
    assert len(held) == 1  # the m01 windows are older than 30 s
    held.forget(["m02"])
    assert len(held) == 0


def test_labels_survive_a_restart_and_a_corrupt_file_is_moved_aside(tmp_path: Path) -> None:
    lab = Labeler(tmp_path, hold_windows=10, hold_s=60.0)
    lab.submit(_event("m01", "pump_fault", T0, source="anna"))
    lab.pump(now=T0)
    again = Labeler(tmp_path, hold_windows=10, hold_s=60.0)
    assert again.book.open_labels() == {"m01": "pump_fault"}
    assert again.label_new([_w("m01", 1)])[0].label == CLASSES.index("pump_fault")
    (tmp_path / LABELS_FILE).write_text('{"v":1,"labels":[{"v":1,"machine":"m 01"}]}')
    fresh = Labeler(tmp_path, hold_windows=10, hold_s=60.0)
    assert len(fresh.book) == 0
    assert (tmp_path / f"{LABELS_FILE}.corrupt").exists()


def test_bad_events_are_counted_and_the_queue_is_bounded() -> None:
    lab = Labeler(None)
    with pytest.raises(PayloadError):
        lab.submit(b'{"v":1}')
    for i in range(1024):
        lab.submit(_event("m01", "normal", T0 + i))
    with pytest.raises(PayloadError) as err:
        lab.submit(_event("m01", "normal", T0))
    assert err.value.kind == "label_queue_full"
    assert lab.stats()["refused"] == 1 and lab.stats()["dropped"] == 1
    lab.pump(now=T0)
    assert lab.stats()["events"] == 1024 and lab.stats()["open"] == {"m01": "normal"}


# ---------------------------------------------------------------------------- the upgrades
def test_the_pi_buffer_upgrades_an_unlabeled_row_also_in_flight(tmp_path: Path) -> None:
    buf = DurableBuffer(tmp_path / "buffer.sqlite", 1000)
    try:
        assert buf.add([Kept(_w("m01", 1), "low_confidence", 2, 0.4)]) == 1
        assert buf.add([Kept(_w("m01", 1), "low_confidence", 2, 0.4)]) == 0  # a duplicate
        token, taken = buf.take_batch(10)
        assert [k.window.label for k in taken] == [None]
        assert buf.add([Kept(_w("m01", 1, label=1), "labeled", 2, 0.4)]) == 1
        assert buf.acknowledge(token) == 0  # the labeled row left the old batch
        _, again = buf.take_batch(10)
        assert [(k.window.label, k.reason) for k in again] == [(1, "labeled")]
        assert buf.counts().labeled == 1
    finally:
        buf.close()


def test_the_trainer_store_takes_a_label_for_a_window_it_stored_unlabeled(tmp_path: Path) -> None:
    store = WindowStore(tmp_path / "store.sqlite")
    try:
        unlabeled = DriftBatch(
            b"a" * 16, "pi-1", 1, (Kept(_w("m01", 1), "low_confidence", 2, 0.4),)
        )
        assert store.add_batch(unlabeled) == (1, 0)
        mark = store.latest_labeled_seqno()
        labeled = DriftBatch(
            b"b" * 16, "pi-1", 1, (Kept(_w("m01", 1, label=3), "labeled", 2, 0.4),)
        )
        assert store.add_batch(labeled) == (1, 0)
        assert store.add_batch(labeled) == (0, 1)  # the same label again: a duplicate
        assert store.labeled_after(mark) == 1  # counts as a new label for the policy
        assert store.counts().labeled == 1 and store.counts().windows == 1
    finally:
        store.close()
