"""The loop heals from maintenance label events alone: the simulator sends no ground truth at
all; after a step drift a technician labels each machine once (class, from the onset, until
further notice), and a new model is accepted and served. Real broker, TensorFlow, LiteRT."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from jetson_trainer.daemon.publish import publish_message
from protocol import Command, Topics
from protocol.labels import LabelEvent
from scripts.broker import Broker
from sensor_sim.fleet import FleetConfig
from sensor_sim.publisher import SimConfig, Simulator

from ._loop import served_v2, start_loop, wait_until

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
    daemon, edge, public = start_loop(broker, topics, tmp_path, "labels")
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
        assert edge.drift.overall() == "ok", "drift reported on drift-free traffic"

        onset = time.time()
        sim.send_command(Command("drift", mode="step"))
        detected = wait_until(lambda: edge.drift.overall() == "drift", 15, "drift detection")
        # the technician: one label per machine, from the onset, until further notice
        for machine, cls in TRUTH.items():
            event = LabelEvent(machine, cls, onset, source="technician", ts=time.time())
            publish_message(event.to_json(), broker.address, topics.labels, "label event")
        labeled_at = time.time()
        live = wait_until(lambda: edge.model_version == 2, 180, "model v2 reaching pi_edge")
        onset_to_live = time.time() - onset

        bundle = served_v2(tmp_path, public)
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
    finally:
        stop_sim.set()
        sim.close()
        edge.stop()
        daemon.stop()
