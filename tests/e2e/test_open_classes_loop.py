"""Open classes round the loop, live (issue 24 items 3–4): a fan type whose site file declares
its healthy class only and `open_classes = true` starts with an anomaly model (the trainer
daemon's, from normal running); a technician's label event names `imbalance`, a class nobody
declared; the node takes it into the type's class table and ships the labeled windows in drift
batches that carry that table (version 3); the trainer appends the name to its own table, grows
the anomaly model into a classifier [ok, imbalance] gated on the healthy holdout, signs and
publishes it on the fan's model topic; the node learns the new name from the verified bundle
and predicts it on windows nobody labeled. Real Mosquitto, real TensorFlow, real LiteRT."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jetson_trainer.build.keys import generate_keypair
from jetson_trainer.daemon.serve import ServeConfig, TrainerDaemon
from nodekit.settings import build
from pi_edge import EdgeConfig, EdgeService
from protocol import Topics, Window, decode_bundle, encode_window, load_public_key
from protocol.drift_batch import DriftBatch, decode_batch
from protocol.labels import LabelEvent
from scripts.broker import Broker
from sensor_sim.dataset import write_datasets
from sensor_sim.kinds import FAN

from ..pi_edge.conftest import Listener, Publisher
from ._loop import wait_until

pytestmark = [pytest.mark.broker, pytest.mark.tensorflow, pytest.mark.timeout(600)]

SITE = """
[[types]]
name = "fan"
channels = [{name = "vib_x", unit = "g", sample_hz = 1000.0},
            {name = "vib_y", unit = "g", sample_hz = 1000.0},
            {name = "current", unit = "A", sample_hz = 1000.0}]
sample_hz = 1000.0
window_length = 128
classes = ["ok"]
open_classes = true
machines = ["fan-*"]
"""
NODE = "pi-open"


def _send(
    pub: Publisher, topics: Topics, machine: str, xs: np.ndarray, seq0: int, t0: float
) -> None:
    for i, x in enumerate(xs):
        w = Window(machine, seq0 + i, int((t0 + i) * 1e9), np.asarray(x, np.float32))
        pub.publish(topics.window(machine), encode_window(w), qos=1)


def test_a_label_of_a_class_nobody_declared_grows_the_model_and_the_node_predicts_it(
    broker: Broker, topics: Topics, tmp_path: Path
) -> None:
    full, data = tmp_path / "full", tmp_path / "data"
    write_datasets(
        full, 7, {"train": 1200, "infer": 400, "drift_train": 8, "drift_infer": 8}, "fan"
    )
    data.mkdir()
    for split in ("train", "infer"):  # normal running only: no fault history at all
        x, y = np.load(full / f"{split}_data.npy"), np.load(full / f"{split}_labels.npy")
        np.save(data / f"{split}_data.npy", x[y == 0])
        np.save(data / f"{split}_labels.npy", y[y == 0])
    xi, yi = np.load(full / "infer_data.npy"), np.load(full / "infer_labels.npy")
    imbalance = xi[yi == FAN.kind.classes.index("imbalance")]
    healthy = xi[yi == 0]
    assert len(imbalance) >= 40
    site = tmp_path / "site.toml"
    site.write_text(SITE)
    private, public = generate_keypair(tmp_path / "keys")
    daemon = TrainerDaemon(
        ServeConfig(
            broker=broker.address,
            prefix=topics.prefix,
            store=tmp_path / "trainer",
            private_key=private,
            data=data,
            client_id=f"trainer-open-{time.time_ns()}",
            dashboard=False,
            tick_s=0.2,
            site_file=site,
            machine_type="fan",
        )
    )
    edge = EdgeService(
        build(
            EdgeConfig,
            broker=broker.address,
            prefix=topics.prefix,
            node=NODE,
            public_key=public,
            state_dir=tmp_path / "edge",
            dashboard=False,
            status_interval_s=0.5,
            site=site,
            types=("fan",),
            batch_wait_ms=1.0,
            label_requests_per_min=0,
        ),
        public_key=load_public_key(public),
    )
    pub = Publisher(broker.address, f"pub-{time.time_ns()}")
    lst = Listener(
        broker.address, [topics.predictions(), topics.drift_batches(NODE)], f"lst-{time.time_ns()}"
    )
    try:
        daemon.start().start_policy()
        edge.start()
        lane, fan = edge.lanes.lanes[0], edge.lane_loops["fan"]
        wait_until(lambda: lane.manager.version == 1, 300, "the fan's anomaly model on the node")
        served = lane.manager.model
        assert served is not None and served.bundle.manifest.task == "anomaly"
        assert served.bundle.manifest.classes == ("ok",)

        # the technician: fan-2 has an imbalance from now on (a class the site does not list)
        t0 = time.time() - 600.0
        event = LabelEvent("fan-2", "imbalance", t0, t0 + 100.0, source="tech, work order 12")
        pub.publish(topics.labels, event.to_json())
        wait_until(
            lambda: fan.kind is not None and "imbalance" in fan.kind.classes,
            10,
            "the open type taking the new class name",
        )
        assert fan.kind is not None and fan.kind.classes == ("ok", "imbalance")
        _send(pub, topics, "fan-2", imbalance[:8], 0, t0 + 1.0)  # inside the label's interval

        # the labeled windows go to the trainer in batches that carry the type's class table
        def labeled_batches() -> list[DriftBatch]:
            batches = [decode_batch(p) for p in lst.on(topics.drift_batches(NODE))]
            return [b for b in batches if any(r.window.label is not None for r in b.records)]

        wait_until(lambda: len(labeled_batches()) > 0, 30, "a labeled drift batch")
        batches = labeled_batches()
        assert {b.classes for b in batches} == {("ok", "imbalance")}
        assert {b.machine_type for b in batches} == {"fan"}
        assert {
            r.window.label for b in batches for r in b.records if r.window.label is not None
        } == {1}

        # the trainer appends the name, grows the model and publishes it; the node learns it
        wait_until(lambda: lane.manager.version == 2, 400, "the grown model on the node")
        assert daemon.classes.classes == ("ok", "imbalance")
        assert json.loads((tmp_path / "trainer" / "classes.json").read_text())["classes"] == [
            "ok",
            "imbalance",
        ]
        grown = decode_bundle(
            (tmp_path / "edge" / "types" / "fan" / "models" / "current.bundle").read_bytes(),
            load_public_key(public),
        )
        m = grown.manifest
        assert (m.version, m.parent, m.task, m.classes) == (2, 1, "classify", ("ok", "imbalance"))
        assert lane.machine_type is not None and lane.machine_type.classes == ("ok", "imbalance")

        # windows nobody labeled: the node predicts the new class by name
        later = time.time() - 60.0
        _send(pub, topics, "fan-3", imbalance[8:40], 1000, later)
        _send(pub, topics, "fan-4", healthy[:32], 1000, later)

        def preds(machine: str) -> list[dict[str, Any]]:
            return [
                p
                for b in lst.on(topics.prediction(machine))
                if (p := json.loads(b))["model_version"] == 2
            ]

        wait_until(
            lambda: len(preds("fan-3")) == 32 and len(preds("fan-4")) == 32, 30, "predictions"
        )
        sick, well = preds("fan-3"), preds("fan-4")
        # grown from the anomaly model: the new class, and `anomaly` from its head for a fault
        # it does not know (jetson_trainer/build/anomaly_head.py)
        assert {tuple(p["classes"]) for p in sick + well} == {("ok", "imbalance", "anomaly")}
        hits = sum(p["label"] == "imbalance" for p in sick)
        calm = sum(p["label"] == "ok" for p in well)
        print(f"\nopen class 'imbalance' live on pi_edge v2: {hits}/32 flagged, {calm}/32 ok")
        assert hits >= 28, f"the grown model calls {hits} of 32 imbalance windows imbalance"
        assert calm >= 28, f"the grown model calls {calm} of 32 healthy windows ok"
    finally:
        lst.close()
        pub.close()
        edge.stop()
        daemon.stop()
