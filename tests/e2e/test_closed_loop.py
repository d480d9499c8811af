"""The whole loop on a real broker with real TensorFlow: drift in, better model out, nothing lost.

Trainer daemon, pi_edge and the simulator run in this process (threads) against one Mosquitto;
seed-000 step drift is injected on every machine.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from protocol import Command, Topics
from scripts.broker import Broker
from sensor_sim.fleet import FleetConfig
from sensor_sim.publisher import SimConfig, Simulator

from ._loop import served_v2, start_loop, wait_until

pytestmark = [pytest.mark.broker, pytest.mark.tensorflow, pytest.mark.timeout(300)]


def test_step_drift_is_detected_and_healed_without_losing_a_label(
    broker: Broker, topics: Topics, tmp_path: Path
) -> None:
    daemon, edge, public = start_loop(broker, topics, tmp_path, "e2e")
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
        assert edge.drift.overall() == "ok", "drift reported on drift-free traffic"

        sim.send_command(Command("drift", mode="step"))
        detected = wait_until(lambda: edge.drift.overall() == "drift", 15, "drift detection")
        live = wait_until(lambda: edge.model_version == 2, 180, "model v2 reaching pi_edge")
        print(f"\nstep drift: detected after {detected:.1f} s, v2 live {live:.1f} s later")

        bundle = served_v2(tmp_path, public)
        assert bundle.manifest.extra["labels_used"] <= 50

        stop_sim.set()
        sim_thread.join(10)
        sent = sim.snapshot().labels_total
        buffer = edge.kept.buffer
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
