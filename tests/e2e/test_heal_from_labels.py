"""The loop heals from maintenance label events alone: the simulator sends no ground truth at
all; after a step drift a technician labels each machine once (class, from the onset, until
further notice), and a new model is accepted and served. Real broker, TensorFlow, LiteRT."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from jetson_trainer.keys import generate_keypair
from jetson_trainer.publish import publish_message
from jetson_trainer.serve import ServeConfig, TrainerDaemon
from pi_edge import EdgeConfig, EdgeService
from pi_edge.runtime import Classifier
from protocol import Command, Topics, decode_bundle, load_public_key
from protocol.labels import LabelEvent
from scripts.broker import Broker
from sensor_sim.dataset import write_datasets
from sensor_sim.fleet import FleetConfig
from sensor_sim.physics import generate
from sensor_sim.publisher import SimConfig, Simulator

from .test_closed_loop import wait_until

pytestmark = [pytest.mark.broker, pytest.mark.tensorflow, pytest.mark.timeout(300)]

# two machines per class, as a technician would find them
TRUTH = {
    "m01": "normal",
    "m02": "normal",
    "m03": "bearing_fault",
    "m04": "bearing_fault",
    "m05": "drive_wear",
    "m06": "drive_wear",
    "m07": "pump_fault",
    "m08": "pump_fault",
}


def test_step_drift_heals_from_label_events_with_in_band_labels_off(
    broker: Broker, topics: Topics, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    write_datasets(
        data, seed=5, sizes={"train": 2000, "infer": 400, "drift_train": 4, "drift_infer": 4}
    )
    private, public = generate_keypair(tmp_path / "keys")
    daemon = TrainerDaemon(
        ServeConfig(
            broker=broker.address,
            prefix=topics.prefix,
            store=tmp_path / "trainer",
            private_key=private,
            data=data,
            client_id="trainer-labels",
            initial_epochs=15,
            labels_needed=48,
            check_labels=24,
            finetune_epochs=20,
            replay_size=800,
        )
    ).start()
    threading.Thread(target=daemon.run_forever, daemon=True).start()
    edge = EdgeService(
        EdgeConfig(
            broker=broker.address,
            prefix=topics.prefix,
            node="pi-labels",
            public_key=public,
            state_dir=tmp_path / "edge",
            dashboard=False,
            status_interval_s=0.5,
        ),
        public_key=load_public_key(public),
    ).start()
    sim = Simulator(
        SimConfig(
            broker=broker.address,
            prefix=topics.prefix,
            node="sim-labels",
            hz=10.0,
            seed=13,
            fleet=FleetConfig(machines=len(TRUTH), label_fraction=0.0, mtbf_s=0.0),
        )
    )
    stop_sim = threading.Event()
    sim_thread = threading.Thread(target=lambda: sim.run(stop_sim), daemon=True)
    try:
        assert edge.wait_for_model(1, timeout=30), "pi_edge never got the initial model"
        wait_until(lambda: edge.broker_state == "connected", 10, "pi_edge connecting")
        sim.start()
        for machine, cls in TRUTH.items():
            if cls != "normal":
                sim.send_command(Command("fault", machines=(machine,), state=cls))
        sim_thread.start()
        time.sleep(8)
        assert edge.evidence.overall() == "ok", "drift reported on drift-free traffic"

        onset = time.time()
        sim.send_command(Command("drift", mode="step"))
        detected = wait_until(lambda: edge.evidence.overall() == "drift", 15, "drift detection")
        # the technician: one label per machine, from the onset, until further notice
        for machine, cls in TRUTH.items():
            event = LabelEvent(machine, cls, onset, source="technician", ts=time.time())
            publish_message(event.to_json(), broker.address, topics.labels, "label event")
        labeled_at = time.time()
        live = wait_until(lambda: edge.model_version == 2, 180, "model v2 reaching pi_edge")
        onset_to_live = time.time() - onset

        bundle = decode_bundle(
            (tmp_path / "edge" / "models" / "current.bundle").read_bytes(), load_public_key(public)
        )
        assert bundle.manifest.version == 2 and bundle.manifest.parent == 1
        used = bundle.manifest.extra["labels_used"]
        print(
            f"\nlabel events only: drift detected {detected:.1f} s after onset; "
            f"{len(TRUTH)} label events sent {labeled_at - onset:.1f} s after onset; v2 live "
            f"{live:.1f} s later (onset → live {onset_to_live:.1f} s), fine-tuned on {used} "
            "labeled windows"
        )
        assert sim.snapshot().labels_total == 0, "the simulator sent in-band labels"
        assert edge.labeler.stats()["events"] == len(TRUTH)
        assert 0 < used <= 60
        classifier = Classifier(bundle.model, bundle.manifest)
        rng = np.random.default_rng(99)
        y = np.repeat(np.arange(4), 100)
        for regime in ("drift", "standard"):
            acc = float((classifier.predict(generate(y, rng, regime)).argmax(axis=1) == y).mean())
            print(f"v2 accuracy on {regime} windows: {acc:.3f}")
            assert acc >= 0.95, f"v2 accuracy on {regime} windows is {acc:.3f}"
    finally:
        stop_sim.set()
        sim.close()
        edge.stop()
        daemon.stop()
