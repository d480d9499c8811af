"""The trainer's store keeps each row to the node that sent it, and who gave every label
(issue 23: "node pi-9 sends pi-1's window id with another label and data"); no broker."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import numpy as np

from jetson_trainer.daemon.store import WindowStore
from protocol.drift_batch import DriftBatch

from .test_store_and_gate import make_batch


def _as(node: str, batch: DriftBatch, batch_id: bytes = bytes(16)) -> DriftBatch:
    return dataclasses.replace(batch, node=node, batch_id=batch_id)


def test_another_node_cannot_replace_or_relabel_a_stored_row(tmp_path: Path) -> None:
    store = WindowStore(tmp_path / "s.sqlite")
    assert store.add_batch(make_batch(range(4))) == (4, 0)  # pi-1's windows, labels s % 4
    forged = make_batch(range(4))
    forged = dataclasses.replace(
        forged,
        node="pi-9",
        records=tuple(
            dataclasses.replace(
                k,
                window=dataclasses.replace(
                    k.window, label=(k.window.label + 1) % 4, data=np.full((60, 4), 99, np.float32)
                ),
            )
            for k in forged.records
        ),
    )
    assert store.add_batch(forged) == (0, 0)  # neither added nor a duplicate: refused
    counts = store.counts()
    assert counts.foreign == 4 and counts.windows == 4
    x, y, _ = store.recent_labeled(10)
    assert y.tolist() == [0, 1, 2, 3] and float(x.max()) == 3.0  # pi-1's labels and data
    # pi-1 itself may still relabel its own window (a maintenance label arriving late)
    own = make_batch(range(1))
    relabel = dataclasses.replace(
        own,
        records=(
            dataclasses.replace(
                own.records[0], window=dataclasses.replace(own.records[0].window, label=3)
            ),
        ),
    )
    assert store.add_batch(relabel) == (1, 0)
    assert sorted(store.recent_labeled(10)[1].tolist()) == [1, 2, 3, 3]


def test_every_stored_label_names_its_node_batch_and_source(tmp_path: Path) -> None:
    store = WindowStore(tmp_path / "s.sqlite")
    store.add_batch(make_batch(range(3), batch_id=b"a" * 16))
    store.add_batch(_as("pi-2", make_batch(range(10, 12)), b"b" * 16))
    store.add_batch(make_batch(range(20, 25), labeled=False))  # unlabeled: no label source
    assert store.label_senders(0, 10**9) == {"pi-1": {"labeled": 3}, "pi-2": {"labeled": 2}}
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        rows = db.execute("SELECT node, batch, source FROM label_sources ORDER BY seqno").fetchall()
    assert (
        rows
        == [("pi-1", (b"a" * 16).hex(), "labeled")] * 3
        + [("pi-2", (b"b" * 16).hex(), "labeled")] * 2
    )


def test_a_store_of_before_label_sources_opens_with_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = WindowStore(path)
    store.add_batch(make_batch(range(3)))
    store.close()
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE label_sources")  # as an older trainer left it
    store = WindowStore(path)
    assert store.counts().windows == 3 and not store.moved_aside
    assert store.label_senders(0, 10**9) == {"pi-1": {"unrecorded": 3}}
