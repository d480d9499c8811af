"""The Pi's half of the loop: drift verdicts, kept windows shipped, prediction history."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pi_edge import EdgeService
from pi_edge.__main__ import main
from protocol import Status, Topics, Window, decode_batch, encode_window, window_id
from protocol.batch_ack import BatchAck
from sensor_sim.physics import generate

from ._model import EdgeModels
from .conftest import Listener, Publisher
from .test_service import _online, _wait_preds, service_factory  # noqa: F401

pytestmark = pytest.mark.broker


def _send(pub: Publisher, topics: Topics, windows: list[Window]) -> None:
    for w in windows:
        pub.publish(topics.window(w.machine), encode_window(w), qos=1)


def test_every_labeled_window_reaches_drift_batches_exactly_as_sent(
    service_factory: Callable[..., EdgeService],  # noqa: F811
    listen: Callable[..., Listener],
    publisher: Publisher,
    topics: Topics,
    models: EdgeModels,
) -> None:
    batches = listen(topics.all_drift_batches(), topics.statuses())
    svc = service_factory(model=models.bundle_path)
    _online(batches, topics, svc.config.node, 1)
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 60)
    x = generate(y, rng)
    sent = [
        Window("m01", i, time.time_ns(), x[i], int(y[i]) if i % 3 == 0 else None) for i in range(60)
    ]
    _send(publisher, topics, sent)
    labeled = {window_id(w): w for w in sent if w.label is not None}

    acked: set[bytes] = set()

    def got_all(msgs: list[tuple[str, bytes, bool]]) -> bool:
        """Acknowledge each new batch as the trainer does once stored; True when all came."""
        ids = set()
        for t, p, _ in msgs:
            if t != topics.drift_batches(svc.config.node):
                continue
            batch = decode_batch(p)
            ids |= {window_id(k.window) for k in batch.records if k.reason == "labeled"}
            if batch.batch_id not in acked:
                acked.add(batch.batch_id)
                ack = BatchAck(batch.batch_id, stored=len(batch.records))
                publisher.publish(topics.drift_acks(batch.node), ack.to_json())
        return set(labeled) <= ids

    # the broker's PUBACK deletes nothing: the rows wait for the trainer's acknowledgement
    assert batches.wait_for(
        lambda msgs: any(t == topics.drift_batches(svc.config.node) for t, _, _ in msgs), 20
    )
    time.sleep(0.5)
    assert svc.kept.buffer.counts().acknowledged == 0
    assert batches.wait_for(got_all, 20)
    received = {
        window_id(k.window): k
        for p in batches.on(topics.drift_batches(svc.config.node))
        for k in decode_batch(p).records
    }
    for wid, w in labeled.items():
        assert received[wid].window == w and received[wid].reason == "labeled"
    deadline = time.monotonic() + 10
    while svc.kept.buffer.counts().acknowledged < len(labeled) and time.monotonic() < deadline:
        time.sleep(0.1)
    counts = svc.kept.buffer.counts()
    assert counts.acknowledged >= len(labeled) and counts.pending + counts.inflight == 0


def test_step_drift_turns_predictions_and_status_to_drift(
    service_factory: Callable[..., EdgeService],  # noqa: F811
    listen: Callable[..., Listener],
    publisher: Publisher,
    topics: Topics,
    models: EdgeModels,
) -> None:
    listener = listen(topics.predictions(), topics.statuses())
    svc = service_factory(model=models.bundle_path)
    _online(listener, topics, svc.config.node, 1)
    rng = np.random.default_rng(4)
    y = rng.integers(0, 4, 40)
    _send(
        publisher,
        topics,
        [Window("m02", i, time.time_ns(), w) for i, w in enumerate(generate(y, rng, "standard"))],
    )
    before = _wait_preds(listener, topics, "m02", 40)
    assert {p.drift for p in before} == {"ok"}
    _send(
        publisher,
        topics,
        [
            Window("m02", 100 + i, time.time_ns(), w)
            for i, w in enumerate(generate(y, rng, "drift"))
        ],
    )
    after = _wait_preds(listener, topics, "m02", 80)[40:]
    assert after[-1].drift == "drift"
    assert sum(p.drift == "drift" for p in after) >= 30  # caught within a few windows

    def drifting(msgs: list[tuple[str, bytes, bool]]) -> bool:
        return any(
            t == topics.status(svc.config.node) and Status.from_json(p).drift == "drift"
            for t, p, _ in msgs
        )

    assert listener.wait_for(drifting, 10)


def test_export_writes_the_prediction_history_as_csv(
    service_factory: Callable[..., EdgeService],  # noqa: F811
    listen: Callable[..., Listener],
    publisher: Publisher,
    topics: Topics,
    models: EdgeModels,
    state_dir: Path,
    capsys: Any,
) -> None:
    listener = listen(topics.predictions(), topics.statuses())
    svc = service_factory(model=models.bundle_path)
    _online(listener, topics, svc.config.node, 1)
    windows = [Window("m03", i, time.time_ns(), models.x_test[i]) for i in range(25)]
    _send(publisher, topics, windows)
    _wait_preds(listener, topics, "m03", 25)
    time.sleep(1.0)  # the recorder thread writes the history in the background
    assert main(["export", "--since", "1h", "--format", "csv", "--state-dir", str(state_dir)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert sorted(int(r["seq"]) for r in rows if r["machine"] == "m03") == list(range(25))
    assert main(["export", "--since", "soon", "--state-dir", str(state_dir)]) == 2


def test_a_failing_buffer_write_is_counted_and_classification_goes_on(
    service_factory: Callable[..., EdgeService],  # noqa: F811
    listen: Callable[..., Listener],
    publisher: Publisher,
    topics: Topics,
    models: EdgeModels,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from nodekit.errors import StorageError

    listener = listen(topics.predictions(), topics.statuses())
    svc = service_factory(model=models.bundle_path)
    _online(listener, topics, svc.config.node, 1)

    def disk_full(*args: object, **kwargs: object) -> int:
        raise StorageError("could not write to the buffer: database or disk is full")

    monkeypatch.setattr(svc.kept.buffer, "add", disk_full)
    labeled = [
        Window("m04", i, time.time_ns(), models.x_test[i], int(models.y_test[i])) for i in range(20)
    ]
    _send(publisher, topics, labeled)
    preds = _wait_preds(listener, topics, "m04", 20)
    assert sorted(p.seq for p in preds) == list(range(20))
    assert svc.write_failures.counts()["buffer_failed"] == 20
    assert svc.status().detail["storage_errors"] == {"buffer_failed": 20}
