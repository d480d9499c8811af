"""A node whose state dir holds a corrupt buffer and history starts, says so, and classifies."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pi_edge import EdgeService
from protocol import Topics, Window, decode_batch, encode_window, window_id
from protocol.batch_ack import BatchAck

from ._model import EdgeModels
from .conftest import Listener, Publisher
from .test_service import _online, _status_where, _wait_preds, service_factory  # noqa: F401

pytestmark = pytest.mark.broker


def test_a_node_on_a_corrupt_state_dir_moves_the_files_aside_and_classifies(
    service_factory: Callable[..., EdgeService],  # noqa: F811
    listen: Callable[..., Listener],
    publisher: Publisher,
    topics: Topics,
    models: EdgeModels,
    state_dir: Path,
) -> None:
    state_dir.mkdir(parents=True)
    rotten_buffer = b"SQLite format 3\x00" + b"\x5a" * 9000
    (state_dir / "buffer.sqlite").write_bytes(rotten_buffer)
    (state_dir / "history.sqlite").write_bytes(b"\x00" * 4096 + b"junk")
    listener = listen(topics.predictions(), topics.statuses(), topics.all_drift_batches())
    svc = service_factory(model=models.bundle_path)
    node = svc.config.node
    _online(listener, topics, node, 1)

    seqs = [*range(20), 2**63, 2**64 - 1]  # the largest seqs the wire allows, too
    sent = [
        Window("m07", s, time.time_ns(), models.x_test[i], int(models.y_test[i]))
        for i, s in enumerate(seqs)
    ]
    for w in sent:
        publisher.publish(topics.window(w.machine), encode_window(w), qos=1)
    preds = _wait_preds(listener, topics, "m07", len(sent))
    assert sorted(p.seq for p in preds) == seqs

    acked: set[bytes] = set()

    def all_shipped(msgs: list[tuple[str, bytes, bool]]) -> bool:
        ids = set()
        for t, p, _ in msgs:
            if t != topics.drift_batches(node):
                continue
            batch = decode_batch(p)
            ids |= {window_id(k.window) for k in batch.records}
            if batch.batch_id not in acked:  # as the trainer does once stored: frees the slot
                acked.add(batch.batch_id)
                ack = BatchAck(batch.batch_id, stored=len(batch.records))
                publisher.publish(topics.drift_acks(batch.node), ack.to_json())
        return {window_id(w) for w in sent} <= ids

    assert listener.wait_for(all_shipped, 15), "the fresh buffer did not ship every window"
    deadline = time.monotonic() + 10
    while svc.history.history.count() < len(sent) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sorted(r[2] for r in svc.history.history.rows()) == seqs
    assert svc.write_failures.counts() == {}

    status = _status_where(
        listener,
        topics,
        node,
        lambda s: bool(s.detail.get("storage", {}).get("buffer_moved_aside")),
    )
    storage = status.detail["storage"]
    (aside,) = storage["buffer_moved_aside"]
    assert Path(aside).read_bytes() == rotten_buffer  # kept for recovery
    assert storage["history_moved_aside_count"] == 1
