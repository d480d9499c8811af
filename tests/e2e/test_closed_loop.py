"""The whole loop on a real broker with real TensorFlow: drift in, better model out, nothing lost.

Trainer daemon, pi_edge and the simulator run in this process (threads) against one Mosquitto;
seed-000 step drift is injected on every machine.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from jetson_trainer.keys import generate_keypair
from jetson_trainer.serve import ServeConfig, TrainerDaemon
from pi_edge import EdgeConfig, EdgeService
from pi_edge.runtime import Classifier
from protocol import Command, Topics, decode_bundle, load_public_key
from scripts.broker import Broker
from sensor_sim.dataset import write_datasets
from sensor_sim.fleet import FleetConfig
from sensor_sim.physics import generate
from sensor_sim.publisher import SimConfig, Simulator

pytestmark = [pytest.mark.broker, pytest.mark.tensorflow, pytest.mark.timeout(300)]


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.1)
    return time.monotonic() - start


def test_step_drift_is_detected_and_healed_without_losing_a_label(
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
            client_id="trainer-e2e",
            initial_epochs=15,
            labels_needed=48,
            check_labels=24,
            finetune_epochs=20,
            replay_size=800,
        )
    ).start()
    policy_thread = threading.Thread(target=daemon.run_forever, daemon=True)
    policy_thread.start()
    edge = EdgeService(
        EdgeConfig(
            broker=broker.address,
            prefix=topics.prefix,
            node="pi-e2e",
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
            node="sim-e2e",
            hz=10.0,
            seed=11,
            fleet=FleetConfig(machines=16, label_fraction=0.05, mtbf_s=30.0, repair_s=30.0),
        )
    )
    stop_sim = threading.Event()
    sim_thread = threading.Thread(target=lambda: sim.run(stop_sim), daemon=True)
    try:
        assert edge.wait_for_model(1, timeout=30), "pi_edge never got the initial model"
        wait_until(lambda: edge.broker_state == "connected", 10, "pi_edge connecting")
        sim.start()
        sim_thread.start()
        time.sleep(12)
        assert edge.evidence.overall() == "ok", "drift reported on drift-free traffic"

        sim.send_command(Command("drift", mode="step"))
        detected = wait_until(lambda: edge.evidence.overall() == "drift", 15, "drift detection")
        live = wait_until(lambda: edge.model_version == 2, 180, "model v2 reaching pi_edge")
        print(f"\nstep drift: detected after {detected:.1f} s, v2 live {live:.1f} s later")

        bundle = decode_bundle(
            (tmp_path / "edge" / "models" / "current.bundle").read_bytes(), load_public_key(public)
        )
        assert bundle.manifest.version == 2 and bundle.manifest.parent == 1
        classifier = Classifier(bundle.model, bundle.manifest)
        rng = np.random.default_rng(99)
        y = np.repeat(np.arange(4), 100)
        for regime in ("drift", "standard"):
            acc = float((classifier.predict(generate(y, rng, regime)).argmax(axis=1) == y).mean())
            print(f"v2 accuracy on {regime} windows: {acc:.3f}")
            assert acc >= 0.95, f"v2 accuracy on {regime} windows is {acc:.3f}"
        assert bundle.manifest.extra["labels_used"] <= 50

        stop_sim.set()
        sim_thread.join(10)
        sent = sim.snapshot().labels_total
        buffer = edge.evidence.buffer
        wait_until(
            lambda: buffer.counts().pending + buffer.counts().inflight == 0,
            30,
            "pi_edge buffer draining",
        )
        wait_until(lambda: daemon.store.counts().labeled >= sent, 30, "labels stored")
        assert daemon.store.counts().labeled == sent, "labeled windows sent vs stored"
    finally:
        stop_sim.set()
        sim.close()
        edge.stop()
        daemon.stop()
