"""Cold start in the trainer daemon (issue 24 item 4): `serve` with normal running only trains
and publishes an anomaly model; drift batches whose labels name a class that model does not know
grow the class list — a classifier [normal, that fault], then the next fault in the type's
order — each gated on the old classes' holdout, signed and published retained for the Pis."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np

from jetson_trainer.daemon.serve import ServeConfig, TrainerDaemon
from nodekit.mqtt import connect, make_client
from protocol import CLASSES, Topics, decode_bundle, load_public_key
from protocol.drift_batch import DriftBatch, Kept, encode_batch
from protocol.window import Window
from scripts.broker import Broker
from sensor_sim.dataset import write_datasets


def _wait(pred, what: str, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _labeled(x: np.ndarray, cls: int, seq0: int) -> DriftBatch:
    records = tuple(
        Kept(
            Window(f"m{i % 4:02d}", seq0 + i, 10**9 + seq0 + i, w, label=cls), "labeled", None, 2.0
        )
        for i, w in enumerate(x)
    )
    return DriftBatch(os.urandom(16), "pi-cold", 1, records)


def test_labels_of_new_faults_grow_an_anomaly_champion_into_a_classifier_in_the_types_order(
    keypair: tuple[Path, Path], broker: Broker, topics: Topics, tmp_path: Path
) -> None:
    full, data = tmp_path / "full", tmp_path / "normal-only"
    write_datasets(full, 5, {"train": 1200, "infer": 400, "drift_train": 8, "drift_infer": 8})
    data.mkdir()
    x, y = np.load(full / "train_data.npy"), np.load(full / "train_labels.npy")
    np.save(data / "train_data.npy", x[y == 0])
    np.save(data / "train_labels.npy", y[y == 0])
    for f in ("infer_data.npy", "infer_labels.npy", "classes.json"):  # the gate's holdout
        (data / f).write_bytes((full / f).read_bytes())
    xi, yi = np.load(full / "infer_data.npy"), np.load(full / "infer_labels.npy")
    daemon = TrainerDaemon(
        ServeConfig(
            broker=broker.address,
            prefix=topics.prefix,
            store=tmp_path / "trainer",
            private_key=keypair[0],
            data=data,
            client_id=f"trainer-cold-{time.time_ns()}",
            dashboard=False,
            tick_s=0.2,
        )
    )
    models: list[bytes] = []
    client = make_client(f"watch-{time.time_ns()}")
    subscribed = threading.Event()
    client.on_message = lambda c, u, msg: msg.payload and models.append(msg.payload)
    client.on_connect = lambda c, *a: c.subscribe([(topics.model_current, 1)])
    client.on_subscribe = lambda *a: subscribed.set()
    connect(client, broker.address)
    client.loop_start()
    assert subscribed.wait(20), "the watcher did not subscribe"
    public = load_public_key(keypair[1])
    try:
        daemon.start().start_policy()
        _wait(lambda: len(models) >= 1, "the anomaly model", 300)
        v1 = decode_bundle(models[-1], public)
        assert v1.manifest.task == "anomaly" and v1.manifest.classes == ("normal",)
        time.sleep(1.0)
        assert len(models) == 1  # no labels yet: nothing grows
        pump, wear = CLASSES.index("pump_fault"), CLASSES.index("drive_wear")
        few = _labeled(xi[yi == wear][:3], wear, 50)  # 3 labels: too few to grow by drive_wear
        client.publish(topics.drift_batches("pi-cold"), encode_batch(few), qos=1).wait_for_publish(
            5
        )
        batch = _labeled(xi[yi == pump][:6], pump, 0)
        client.publish(
            topics.drift_batches("pi-cold"), encode_batch(batch), qos=1
        ).wait_for_publish(5)
        _wait(lambda: len(models) >= 2, "the grown model", 300)
        v2 = decode_bundle(models[-1], public)
        assert v2.manifest.task == "classify" and v2.manifest.parent == v1.manifest.version
        assert v2.manifest.classes == ("normal", "pump_fault")
        assert v2.manifest.version > v1.manifest.version
        bearing = CLASSES.index("bearing_fault")
        batch = _labeled(xi[yi == bearing][:6], bearing, 100)
        client.publish(
            topics.drift_batches("pi-cold"), encode_batch(batch), qos=1
        ).wait_for_publish(5)
        _wait(lambda: len(models) >= 3, "the model grown again", 300)
        v3 = decode_bundle(models[-1], public)
        assert v3.manifest.classes == ("normal", "bearing_fault", "pump_fault")  # the type's order
        assert v3.manifest.parent == v2.manifest.version
        assert daemon.champion is not None and daemon.champion.version == v3.manifest.version
        assert v3.manifest.anomaly is not None and "anomaly_head" in v3.manifest.extra
        _later_versions_keep_the_head(daemon.champion, xi, yi, x[y == 0], keypair, tmp_path)
    finally:
        daemon.stop()
        client.publish(topics.model_current, b"", qos=1, retain=True).wait_for_publish(5)
        client.loop_stop()
        client.disconnect()


def _vetted_headed(path: Path, public_key: Path) -> None:
    """The bundle at `path` as a node vets it: verified, golden outputs of both heads pass."""
    from pi_edge.model.vetting import Expected, build_model, verify_bundle

    bundle = verify_bundle(
        path.read_bytes(), public_key=load_public_key(public_key), allow_unsigned=False
    )
    vetted = build_model(bundle, expected=Expected(None, None, None))
    assert vetted.head is not None, "the node serves it without its anomaly head"


def _later_versions_keep_the_head(  # type: ignore[no-untyped-def]
    champion, xi: np.ndarray, yi: np.ndarray, x_normal: np.ndarray, keypair, tmp_path: Path
) -> None:
    """A grown lineage keeps its anomaly head: a reference update re-issues the two-output
    network with the head's manifest fields (a node refused it without them), and an accepted
    fine-tune is headed again."""
    from jetson_trainer.daemon.reference import renew_reference
    from jetson_trainer.daemon.retrain import RetrainConfig, retrain
    from jetson_trainer.versions.gate import GateConfig

    known = np.isin(yi, [CLASSES.index(c) for c in champion.manifest.classes])
    index = {CLASSES[k]: i for i, k in enumerate(sorted(set(yi[known].tolist())))}
    xk = xi[known]
    yk = np.asarray([index[CLASSES[k]] for k in yi[known]], np.int64)
    path, manifest = renew_reference(
        champion,
        xk[:60],
        np.full(60, -1, np.int64),
        replay=(xk[60:260], yk[60:260]),
        original_holdout=(xk, yk),
        out_dir=tmp_path / "renewed",
        private_key=keypair[0],
        version=champion.version + 1,
        reason="test: the champion handles it",
        labels_used=0,
    )
    assert manifest.anomaly is not None and manifest.anomaly["golden"]
    _vetted_headed(path, keypair[1])
    drifted = (xk * np.asarray([1.0, 2.5, 1.0, 1.0], np.float32)).astype(np.float32)
    lenient = GateConfig(margin=0.5, f1_margin=0.5, anchor_margin=0.9, min_loss_gain=0.0)
    attempt = retrain(
        champion,
        drifted[:48],
        yk[:48],
        replay=(xk[60:260], yk[60:260]),
        original_holdout=(xk, yk),
        out_dir=tmp_path / "tuned",
        private_key=keypair[0],
        config=RetrainConfig(gate=lenient),
        version=champion.version + 2,
    )
    assert attempt.challenger is not None, f"the fine-tune was refused: {attempt.decision}"
    assert attempt.challenger.manifest.anomaly is not None
    assert attempt.challenger.path is not None
    _vetted_headed(attempt.challenger.path, keypair[1])
