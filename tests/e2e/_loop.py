"""What the closed-loop tests share: a trainer daemon and a pi_edge node on one broker, and the
check of the model the node ends up serving."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from jetson_trainer.build.keys import generate_keypair
from jetson_trainer.daemon.serve import ServeConfig, TrainerDaemon
from nodekit.settings import build
from pi_edge import EdgeConfig, EdgeService
from pi_edge.model.classifier import Classifier
from protocol import Bundle, Topics, decode_bundle, load_public_key
from scripts.broker import Broker
from sensor_sim.dataset import write_datasets
from sensor_sim.physics import generate


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.1)
    return time.monotonic() - start


def start_loop(
    broker: Broker, topics: Topics, tmp_path: Path, name: str
) -> tuple[TrainerDaemon, EdgeService, Path]:
    """A trainer (seed-style data, 48 labels per fine-tune) and a node `pi-<name>`, both
    started; returns them and the trainer's public key."""
    data = tmp_path / "data"
    write_datasets(
        data, seed=5, sizes={"train": 2000, "infer": 400, "drift_train": 4, "drift_infer": 4}
    )
    private, public = generate_keypair(tmp_path / "keys")
    daemon = (
        TrainerDaemon(
            ServeConfig(
                broker=broker.address,
                prefix=topics.prefix,
                store=tmp_path / "trainer",
                private_key=private,
                data=data,
                client_id=f"trainer-{name}",
                initial_epochs=15,
                labels_needed=48,
                check_labels=24,
                finetune_epochs=20,
                replay_size=800,
            )
        )
        .start()
        .start_policy()
    )
    edge = EdgeService(
        build(
            EdgeConfig,
            broker=broker.address,
            prefix=topics.prefix,
            node=f"pi-{name}",
            public_key=public,
            state_dir=tmp_path / "edge",
            dashboard=False,
            status_interval_s=0.5,
        ),
        public_key=load_public_key(public),
    )
    try:
        edge.start()
    except BaseException:
        daemon.stop()
        raise
    return daemon, edge, public


def served_v2(tmp_path: Path, public: Path) -> Bundle:
    """The bundle the node serves: v2, child of v1, ≥ 0.95 on drifted and standard windows."""
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
    return bundle
