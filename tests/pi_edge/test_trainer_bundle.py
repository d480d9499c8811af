"""pi_edge accepts what jetson_trainer really ships: a bundle from `jetson_trainer.api`."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nodekit.settings import build
from pi_edge import EdgeConfig, EdgeService, Expected, vet_bundle
from pi_edge.__main__ import main
from protocol import (
    CHANNELS,
    CLASSES,
    Prediction,
    Status,
    Topics,
    Window,
    encode_window,
    load_public_key,
)

from .conftest import Publisher

# The site the trainer bundle is made for: the prefix of the node that takes it from MQTT
# (unique to this session, as every test's prefix is).
SITE = f"edgeloop-test/trainer-bundle-{os.getpid()}-{time.time_ns()}"


@dataclass(frozen=True)
class TrainerBundle:
    path: Path
    public_key_path: Path
    x: np.ndarray
    y: np.ndarray
    x_path: Path
    y_path: Path


@pytest.fixture(scope="session")
def trainer_bundle(tmp_path_factory: pytest.TempPathFactory) -> TrainerBundle:
    from jetson_trainer.api import build_bundle, generate_keypair
    from sensor_sim.dataset import make_split

    out = tmp_path_factory.mktemp("trainer_bundle")
    x, y = make_split("train", 400, np.random.default_rng(0))
    x_test, y_test = make_split("infer", 120, np.random.default_rng(1))
    priv, pub = generate_keypair(out / "keys")
    path = build_bundle(x, y, out / "bundle", epochs=2, private_key=priv, version=11, site=SITE)
    np.save(out / "x.npy", x_test)
    np.save(out / "y.npy", y_test)
    return TrainerBundle(path, pub, x_test, y_test, out / "x.npy", out / "y.npy")


def test_trainer_bundle_passes_vetting_and_its_golden_vectors(
    trainer_bundle: TrainerBundle,
) -> None:
    vetted = vet_bundle(
        trainer_bundle.path.read_bytes(),
        public_key=load_public_key(trainer_bundle.public_key_path),
        allow_unsigned=False,
        expected=Expected(CLASSES, CHANNELS, 60),
    )
    assert vetted.version == 11 and vetted.bundle.signed and vetted.bundle.manifest.site == SITE
    assert vetted.bundle.manifest.golden, "trainer bundles carry golden vectors"
    assert vetted.classifier.check_golden() == len(vetted.bundle.manifest.golden)
    probs = vetted.classifier.predict(trainer_bundle.x)
    assert (probs.argmax(axis=1) == trainer_bundle.y).mean() > 0.5  # 2 epochs on 400 windows


def test_evaluate_cli_on_a_trainer_bundle(
    trainer_bundle: TrainerBundle, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["evaluate", "--model", str(trainer_bundle.path), "--x", str(trainer_bundle.x_path)]
    argv += ["--y", str(trainer_bundle.y_path), "--public-key", str(trainer_bundle.public_key_path)]
    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model_version"] == 11 and out["n"] == len(trainer_bundle.y)
    assert main(argv) == 0  # the human-readable table
    text = capsys.readouterr().out
    assert "accuracy" in text and "confusion" in text


@pytest.fixture
def site_topics() -> Topics:
    return Topics(SITE)


@pytest.fixture
def waiting_service(
    broker: Any, site_topics: Topics, trainer_bundle: TrainerBundle, tmp_path: Path
) -> Iterator[EdgeService]:
    cfg = build(
        EdgeConfig,
        broker=broker.address,
        prefix=site_topics.prefix,
        node=f"edge-wait-{time.time_ns()}",
        public_key=trainer_bundle.public_key_path,
        state_dir=tmp_path / "state",
        dashboard=False,
        status_interval_s=0.3,
    )
    svc = EdgeService(cfg, public_key=load_public_key(trainer_bundle.public_key_path))
    yield svc
    svc.stop()


@pytest.mark.broker
def test_node_without_a_model_takes_the_retained_bundle_then_classifies(
    waiting_service: EdgeService,
    publisher: Publisher,
    listen: Any,
    site_topics: Topics,
    trainer_bundle: TrainerBundle,
) -> None:
    topics = site_topics
    lst = listen(topics.predictions(), topics.statuses())
    publisher.publish(topics.model_current, trainer_bundle.path.read_bytes(), retain=True)
    svc = waiting_service.start()
    assert svc.model_version is None  # empty state dir, no --model: waits for the retained one
    assert svc.wait_for_model(11, timeout=20)
    for seq in range(10):
        w = Window("t1", seq, time.time_ns(), trainer_bundle.x[seq], int(trainer_bundle.y[seq]))
        publisher.publish(topics.window("t1"), encode_window(w), qos=0)
    topic = topics.prediction("t1")
    assert lst.wait_for(lambda m: sum(t == topic for t, _, _ in m) >= 10, 15)
    preds = [Prediction.from_json(p) for p in lst.on(topic)]
    assert sorted(p.seq for p in preds) == list(range(10))
    assert {p.model_version for p in preds} == {11}
    assert svc.models.store.current_path.read_bytes() == trainer_bundle.path.read_bytes()
    status_topic = topics.status(svc.config.node)
    assert lst.wait_for(
        lambda m: any(
            t == status_topic and Status.from_json(p).model_version == 11 for t, p, _ in m
        ),
        5,
    )
