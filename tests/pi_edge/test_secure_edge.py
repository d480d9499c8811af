"""pi_edge, the simulator and the trainer's publish in the secure profile: each role logs in
with its own credentials over TLS, and a window is classified end to end."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from jetson_trainer.daemon.publish import publish_bundle
from nodekit.settings import resolve
from pi_edge.config import EdgeConfig
from pi_edge.service import EdgeService
from protocol import Topics
from scripts.broker import Broker
from scripts.secure_profile import SecureProfile
from sensor_sim import Simulator
from sensor_sim.config import resolve_sim

from .conftest import EdgeModels, Listener


@pytest.mark.broker
def test_edge_node_and_simulator_log_in_over_tls_and_a_window_is_classified(
    secure_broker: Broker,
    secure_profile: SecureProfile,
    models: EdgeModels,
    topics: Topics,
    tmp_path: Path,
) -> None:
    # the trainer's role publishes the signed model (only it may)
    publish_bundle(
        models.bundle(1, site=topics.prefix),
        secure_broker.address,
        prefix=topics.prefix,
        credentials=secure_profile.credentials("trainer"),
    )
    watcher = Listener(
        secure_broker.address,
        [topics.predictions()],
        f"operator-{time.time_ns()}",
        credentials=secure_profile.credentials("operator"),
    )
    common = {"broker": secure_broker.address, "prefix": topics.prefix}
    edge_cfg: EdgeConfig = resolve(  # the login from the environment, as systemd gives it
        EdgeConfig,
        env=secure_profile.env("edge"),
        flags={
            **common,
            "public_key": str(models.public_key_path),
            "state_dir": str(tmp_path / "edge"),
            "dashboard": False,
        },
    )
    assert edge_cfg.credentials().tls is not None and edge_cfg.mqtt_user == "edge"
    assert edge_cfg.node == "edge"  # an identity's name is its node id (its env file says so)
    sim_cfg = resolve_sim(
        env=secure_profile.env("sensor"),
        flags={**common, "machines": 2, "hz": 5.0, "dashboard": False, "duration_s": 30.0},
    )
    stop = threading.Event()
    service = EdgeService(edge_cfg, public_key=models.public_key).start()
    try:
        assert service.wait_for_model(1, timeout=20), service.broker_state
        with Simulator(sim_cfg) as sim:
            runner = threading.Thread(target=sim.run, args=(stop,), daemon=True)
            runner.start()
            assert watcher.wait_for(lambda msgs: len(msgs) >= 3, timeout=20), service.broker_state
            stop.set()
            runner.join(10)
        assert service.link is not None and service.link.connected
        assert service.kept.shipper.link is not None
        assert service.kept.shipper.link.state == "connected"
    finally:
        stop.set()
        service.stop()
        watcher.close()
    prediction = json.loads(watcher.messages[0][1])
    assert prediction["model_version"] == 1 and prediction["machine"] in {"m01", "m02"}
    log = secure_broker.log_path.read_text()
    assert "u'edge'" in log and "u'sensor'" in log and "u'trainer~cli'" in log  # publish: cli
    assert "u'edge~batches'" in log  # the node's shipper, on its own login
