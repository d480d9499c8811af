"""One trainer daemon per machine type: `serve --site-file F --machine-type fan` trains the
fan's first model from its data, publishes it retained on the fan's own model topic, stores and
acknowledges the fans' drift batches and leaves another type's batches to that type's trainer
(unacknowledged, so the Pi keeps them)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np

from jetson_trainer.daemon.serve import ServeConfig, TrainerDaemon
from nodekit.mqtt import connect, make_client
from protocol import Topics, decode_bundle
from protocol.batch_ack import BatchAck
from protocol.drift_batch import DriftBatch, Kept, encode_batch
from protocol.window import Window
from scripts.broker import Broker
from sensor_sim.dataset import write_datasets

SITE = """
[[types]]
builtin = "default"
machines = ["m*"]

[[types]]
name = "fan"
channels = [{name = "vib_x", unit = "g", sample_hz = 1000.0},
            {name = "vib_y", unit = "g", sample_hz = 1000.0},
            {name = "current", unit = "A", sample_hz = 1000.0}]
sample_hz = 1000.0
window_length = 128
hop = 128
classes = ["ok", "imbalance", "misalignment", "looseness"]
normal = "ok"
machines = ["fan-*"]
"""


def _wait(pred, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _batch(kind: str, node: str, shape: tuple[int, int], n: int) -> DriftBatch:
    rng = np.random.default_rng(n)
    records = tuple(
        Kept(
            Window(
                f"{'fan' if kind == 'fan' else 'm'}-{i}",
                i,
                1_000 + i,
                rng.normal(size=shape).astype(np.float32),
                label=i % 2,
            ),
            "labeled",
            0,
            0.5,
        )
        for i in range(n)
    )
    return DriftBatch(os.urandom(16), node, 1, records, kind)


def test_a_type_daemon_keeps_its_own_lineage(
    keypair: tuple[Path, Path], broker: Broker, topics: Topics, tmp_path: Path
) -> None:
    data = tmp_path / "fan-data"
    write_datasets(data, 7, {"train": 400, "infer": 100, "drift_train": 8, "drift_infer": 8}, "fan")
    site = tmp_path / "site.toml"
    site.write_text(SITE)
    daemon = TrainerDaemon(
        ServeConfig(
            broker=broker.address,
            prefix=topics.prefix,
            store=tmp_path / "trainer-fan",
            private_key=keypair[0],
            data=data,
            client_id=f"trainer-fan-{time.time_ns()}",
            dashboard=False,
            tick_s=0.2,
            initial_epochs=10,
            site_file=site,
            machine_type="fan",
        )
    )
    seen: dict[str, bytes] = {}
    acks: list[BatchAck] = []
    got = threading.Event()
    client = make_client(f"watch-{time.time_ns()}")

    def on_message(c, u, msg):  # type: ignore[no-untyped-def]
        if msg.topic.startswith(topics.drift_acks("pi-mixed")):
            acks.append(BatchAck.from_json(msg.payload))
        elif msg.payload:
            seen[msg.topic] = msg.payload
        got.set()

    subscribed = threading.Event()
    wanted = [
        (topics.model_of("fan"), 1),
        (topics.model_current, 1),
        (topics.drift_acks("pi-mixed"), 1),
    ]

    def on_connect(c, u, flags, rc, props=None):  # type: ignore[no-untyped-def]
        c.subscribe(wanted)  # on every connect: a subscribe before it is lost

    client.on_message = on_message
    client.on_connect = on_connect
    client.on_subscribe = lambda *a: subscribed.set()
    connect(client, broker.address)
    client.loop_start()
    assert subscribed.wait(20), "the watcher did not subscribe"
    try:
        daemon.start()
        _wait(lambda: topics.model_of("fan") in seen, "the fan model on its own topic", 300)
        bundle = decode_bundle(seen[topics.model_of("fan")], None, allow_unsigned=True)
        assert bundle.manifest.type_name == "fan" and bundle.manifest.input_shape == (128, 3)
        assert topics.model_current not in seen  # the built-in type's topic is not this lineage
        assert daemon.champion is not None and daemon.champion.manifest.type_name == "fan"
        fans = _batch("fan", "pi-mixed", (128, 3), 6)
        seeds = _batch("default", "pi-mixed", (60, 4), 5)
        client.publish(
            topics.drift_batches("pi-mixed"), encode_batch(seeds), qos=1
        ).wait_for_publish(5)
        client.publish(
            topics.drift_batches("pi-mixed"), encode_batch(fans), qos=1
        ).wait_for_publish(5)
        _wait(lambda: len(acks) >= 1, "the fan batch's acknowledgement")
        time.sleep(1.0)  # the other type's batch is not acknowledged by this trainer
        assert [a.batch_id for a in acks] == [fans.batch_id]
        assert acks[0].stored == 6
        counts = daemon.intake.counts()
        assert counts.other_type == 1 and counts.windows == 6
    finally:
        daemon.stop()
        client.publish(topics.model_of("fan"), b"", qos=1, retain=True).wait_for_publish(5)
        client.loop_stop()
        client.disconnect()
