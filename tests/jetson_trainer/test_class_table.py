"""The trainer's class table (daemon/class_table.py): labels of a drift batch are translated by
name into the classes its store indexes; an open type's new names are appended and survive a
restart, a closed type's unknown names are refused and counted, and the table stops at 64."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from jetson_trainer.daemon.class_table import ClassTable
from jetson_trainer.daemon.store import WindowStore
from protocol.drift_batch import DriftBatch, Kept, decode_batch, encode_batch
from protocol.machine_type import Channel, MachineType
from protocol.window import Window

FAN = MachineType(
    "fan", (Channel("vib"),), window_length=4, classes=("ok", "loose"), open_classes=True
)
CLOSED = MachineType("fan", (Channel("vib"),), window_length=4, classes=("ok", "loose"))


def _batch(labels: list[int | None], classes: tuple[str, ...] | None, seq0: int = 0) -> DriftBatch:
    records = tuple(
        Kept(
            Window("fan-1", seq0 + i, 10 + i, np.full((4, 1), i, np.float32), label=label),
            "labeled" if label is not None else "out_of_distribution",
            0,
            0.5,
        )
        for i, label in enumerate(labels)
    )
    batch = DriftBatch(os.urandom(16), "pi-1", 3, records, "fan", classes)
    return decode_batch(encode_batch(batch))  # as the intake meets it


def test_an_open_type_appends_a_new_name_after_its_classes_and_keeps_it_across_a_restart(
    tmp_path: Path,
) -> None:
    table = ClassTable.beside(tmp_path, FAN)
    # the node's table: its declared classes in another order, and a name nobody declared
    out, refused = table.translate(_batch([2, 1, None, 0], ("ok", "loose", "seal leak")))
    assert refused == [] and out is not None and out.classes is None
    assert table.classes == ("ok", "loose", "seal leak")
    assert [k.window.label for k in out.records] == [2, 1, None, 0]
    out, _ = table.translate(_batch([1, 2], ("ok", "3", "loose")))  # "3" is a name
    assert list(table.classes) == ["ok", "loose", "seal leak", "3"]
    assert out is not None and [k.window.label for k in out.records] == [3, 1]
    assert [k.predicted for k in out.records] == [0, 0]  # "ok" is 0 in both tables
    again = ClassTable.beside(tmp_path, FAN)
    assert again.classes == ("ok", "loose", "seal leak", "3")
    # a version 2 batch indexes the declared classes, whatever the table holds
    out, _ = again.translate(_batch([1], None))
    assert out is not None and out.records[0].window.label == 1
    assert again.kind.open_classes and again.kind.normal == "ok"


def test_the_store_takes_translated_labels_and_reads_the_new_class_back(tmp_path: Path) -> None:
    table = ClassTable.beside(tmp_path, FAN)
    store = WindowStore(tmp_path / "windows.sqlite")
    try:
        out, _ = table.translate(_batch([2, 2, 0], ("ok", "loose", "seal leak")))
        assert out is not None
        added, dups = store.add_batch(out, n_classes=len(table.classes))
        assert (added, dups) == (3, 0)
        _, y, _ = store.recent_labeled(10)
        assert [table.classes[i] for i in y.tolist()] == ["seal leak", "seal leak", "ok"]
    finally:
        store.close()


def test_a_closed_type_refuses_a_name_it_does_not_have_and_counts_it(tmp_path: Path) -> None:
    table = ClassTable.beside(tmp_path, CLOSED)
    out, refused = table.translate(_batch([2, 1], ("ok", "loose", "seal leak")))
    assert out is not None and [k.window.label for k in out.records] == [1]
    assert len(refused) == 1 and "is not one of machine type fan's classes: ok, loose" in refused[0]
    assert table.classes == ("ok", "loose") and table.refused == 1
    assert not (tmp_path / "classes.json").exists()
    out, refused = table.translate(_batch([2], ("ok", "loose", "seal leak")))
    assert out is None and table.refused == 2


def test_an_open_type_stops_at_64_classes(tmp_path: Path) -> None:
    names = ("ok", "loose", *(f"made-up {i}" for i in range(62)))
    table = ClassTable.beside(tmp_path, FAN, learned=lambda: names)  # a champion knows them
    out, refused = table.translate(_batch(list(range(64)), names))
    assert len(table.classes) == 64 and refused == [] and out is not None
    out, refused = table.translate(_batch([1, 2], ("ok", "one too many", "loose")))
    assert out is not None and [k.window.label for k in out.records] == [1]
    assert len(refused) == 1 and "64 classes already" in refused[0]


def test_a_corrupt_table_file_is_moved_aside_and_the_declared_classes_serve(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "classes.json").write_text("{not json")
    table = ClassTable.beside(tmp_path, FAN)
    assert table.classes == ("ok", "loose")
    assert (tmp_path / "classes.json.corrupt").exists()
    assert "could not read the class table" in caplog.text


def test_new_names_wait_for_the_champion_at_most_16_at_a_time(tmp_path: Path) -> None:
    """One login that sends made-up names cannot fill the table for good: past 16 names the
    champion has not learned, a new one is refused and counted until growth learns some."""
    learned: list[str] = ["ok", "loose"]
    table = ClassTable.beside(tmp_path, FAN, learned=lambda: learned)
    names = ("ok", "loose", *(f"made-up {i}" for i in range(16)))
    out, refused = table.translate(_batch(list(range(18)), names))
    assert refused == [] and out is not None and len(table.classes) == 18
    flood = ("ok", "loose", "made-up 16", "made-up 0")
    out, refused = table.translate(_batch([2, 3, 1], flood))
    assert out is not None and [k.window.label for k in out.records] == [2, 1]  # known names
    assert len(refused) == 1 and "no model has learned yet" in refused[0]
    assert table.refused == 1 and "made-up 16" not in table.classes
    learned.append("made-up 0")  # class growth learned one: room for one more
    out, refused = table.translate(_batch([2], flood))
    assert refused == [] and table.classes[-1] == "made-up 16"
    assert ClassTable.beside(tmp_path, FAN).classes == table.classes
