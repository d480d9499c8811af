"""Open classes on the node (issue 24 items 3–4): a type with `open_classes` takes a label
event's class name it does not list yet — appended to its class table, kept across a restart
with the labels and kept windows that use it, bounded against a flood of made-up names — and a
closed type still refuses an unknown name with an error listing its classes. Pure: no broker."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from pi_edge.loop.buffer import DurableBuffer
from pi_edge.loop.class_table import MAX_UNLEARNED
from pi_edge.loop.config import LoopConfig
from pi_edge.loop.lane_loop import LaneLoop
from pi_edge.report.dashboard import MachineRow, Snapshot, render
from protocol import PayloadError, Window
from protocol.drift_batch import DriftBatch, Kept, decode_batch, encode_batch
from protocol.labels import LabelEvent
from protocol.machine_type import Channel, MachineType

CLOSED = MachineType(
    "press", (Channel("force"),), window_length=8, classes=("ok", "crack"), machines=("p-*",)
)
OPEN = dataclasses.replace(CLOSED, open_classes=True)


def _loop(kind: MachineType, state_dir: Path | None = None) -> LaneLoop:
    return LaneLoop("press", kind, config=LoopConfig(), state_dir=state_dir, kept=None)


def _window(seq: int, t: float = 12.0) -> Window:
    return Window("p-1", seq, int(t * 1e9), np.zeros((8, 1), np.float32))


def test_a_closed_type_refuses_a_class_it_does_not_list_naming_its_classes() -> None:
    lane = _loop(CLOSED)
    with pytest.raises(PayloadError) as err:
        lane.submit(LabelEvent("p-1", "seal leak", 10.0))
    assert err.value.kind == "bad_label"
    assert (
        str(err.value) == "class 'seal leak' is not one of machine type press's classes: ok, crack"
    )
    assert lane.stats()["refused"] == 1 and lane.wire_classes() is None


def test_an_open_type_takes_a_new_name_labels_with_it_and_ships_its_class_table() -> None:
    lane = _loop(OPEN)
    lane.submit(LabelEvent("p-1", "3", 10.0))  # "3" is a name, never an index
    lane.pump(now=11.0)
    assert lane.kind is not None and lane.kind.classes == ("ok", "crack", "3")
    assert [w.label for w in lane.label_new([_window(1)])] == [2]
    assert lane.wire_classes() == ("ok", "crack", "3")
    # the table its batches carry names the label unambiguously (protocol.drift_batch v3)
    labeled = dataclasses.replace(_window(1), label=2)
    batch = DriftBatch(
        bytes(16), "pi-1", 1, (Kept(labeled, "labeled"),), "press", ("ok", "crack", "3")
    )
    back = decode_batch(encode_batch(batch))
    assert back.classes is not None and back.classes[back.records[0].window.label or 0] == "3"


@pytest.mark.parametrize(
    ("name", "kind"),
    [("a/b", "bad_field"), ("x" * 65, "bad_field"), (" x", "bad_field"), ("bell\x07", "bad_field")],
)
def test_a_label_event_with_a_malformed_name_is_refused_before_any_type_sees_it(
    name: str, kind: str
) -> None:
    with pytest.raises(PayloadError) as err:
        LabelEvent("p-1", name, 10.0)
    assert err.value.kind == kind


def test_an_open_type_refuses_the_reserved_anomaly_and_keeps_its_table() -> None:
    lane = _loop(OPEN)
    with pytest.raises(PayloadError, match="anomaly model's verdict"):
        lane.submit(LabelEvent("p-1", "anomaly", 10.0))
    assert lane.kind is not None and lane.kind.classes == ("ok", "crack")


def test_a_flood_of_made_up_names_is_refused_and_counted_once_the_bound_is_reached() -> None:
    lane = _loop(OPEN)
    for i in range(MAX_UNLEARNED):
        lane.submit(LabelEvent("p-1", f"made-up {i}", 10.0 + i))
    refused = 0
    for i in range(200):
        try:
            lane.submit(LabelEvent("p-1", f"flood {i}", 100.0 + i))
        except PayloadError as exc:
            assert exc.kind == "too_many_classes"
            refused += 1
    assert refused == 200 and lane.stats()["refused"] == 200
    assert lane.kind is not None and len(lane.kind.classes) == 2 + MAX_UNLEARNED
    lane.submit(LabelEvent("p-1", "made-up 3", 400.0))  # a name it has is still taken
    # a model that learned some of them frees room for new ones
    grown = OPEN.with_classes(("ok", "made-up 0", "made-up 1"))
    lane.learn(grown)
    lane.submit(LabelEvent("p-1", "seal leak", 500.0))
    lane.submit(LabelEvent("p-1", "bearing", 501.0))
    with pytest.raises(PayloadError):
        lane.submit(LabelEvent("p-1", "one more", 502.0))


def test_an_open_type_stops_at_64_classes() -> None:
    many = OPEN.with_classes(("ok", *(f"c{i}" for i in range(62))))
    lane = _loop(many)
    lane.submit(LabelEvent("p-1", "the 64th", 10.0))
    with pytest.raises(PayloadError) as err:
        lane.submit(LabelEvent("p-1", "the 65th", 11.0))
    assert err.value.kind == "too_many_classes" and "64 classes" in str(err.value)


def test_a_grown_model_s_new_names_go_after_the_ones_labels_index_already() -> None:
    lane = _loop(OPEN)
    lane.submit(LabelEvent("p-1", "seal leak", 10.0))
    lane.pump(now=11.0)
    # the trainer grew the model by another new name first, and by seal leak
    got = lane.learn(OPEN.with_classes(("ok", "bearing", "seal leak")))
    assert got is not None and got.classes == ("ok", "crack", "seal leak", "bearing")
    assert [w.label for w in lane.label_new([_window(2)])] == [2]  # seal leak's index stays


def test_a_restart_keeps_the_new_name_its_labels_and_its_kept_windows(tmp_path: Path) -> None:
    lane = _loop(OPEN, tmp_path)
    lane.submit(LabelEvent("p-1", "seal leak", 10.0))
    lane.pump(now=11.0)
    labeled = lane.label_new([_window(1)])
    assert [w.label for w in labeled] == [2]
    buffer = DurableBuffer(tmp_path / "buffer.sqlite", 100)
    buffer.add([Kept(labeled[0], "labeled")])
    buffer.close()
    # the node restarts: the site file still lists ok, crack only
    again = _loop(OPEN, tmp_path)
    assert again.kind is not None and again.kind.classes == ("ok", "crack", "seal leak")
    assert [w.label for w in again.label_new([_window(3, 13.0)])] == [2]  # the open label
    assert again.wire_classes() == ("ok", "crack", "seal leak")
    buffer = DurableBuffer(tmp_path / "buffer.sqlite", 100)
    try:
        _, records = buffer.take_batch(10)
        assert [r.window.label for r in records] == [2]
    finally:
        buffer.close()


def test_a_new_class_name_is_shown_as_text_never_as_markup() -> None:
    snap = Snapshot(
        "pi-1", 2, 3.0, "connected", 0, 8, 0, 10.0,
        machines=(MachineRow("p-1", "[bold red]seal[/] leak", 0.9, 1.0, 1.0, 1.0),),
    )  # fmt: skip
    console = Console(file=io.StringIO(), width=120, color_system=None, force_terminal=False)
    console.print(render(snap))
    assert "[bold red]seal[/] leak" in console.file.getvalue()  # type: ignore[attr-defined]
