"""Mosquitto is killed (-9) mid-stream and restarted on the same port with the same persistence.

Every labeled window pi_edge classified must reach the trainer's store exactly once, predictions
must flow again within 5 s of the broker being back, and afterwards the retained model and the
nodes' retained statuses must be right.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from protocol import Status, Topics, decode_bundle, load_public_key
from scripts.broker import Broker

from ._kit import (
    Feeder,
    Nodes,
    Tally,
    Watcher,
    buffered,
    classified_labeled,
    delivered,
    poll,
    retained,
    secs,
    settle,
    stored_labeled,
    wait_until,
)

pytestmark = [pytest.mark.broker, pytest.mark.tensorflow, pytest.mark.timeout(150)]

RATE_HZ = 40.0  # windows/s over 8 machines, every other one labeled
# Broker down this long: past paho's backoff steps (1, 2, 4 s …) up to its cap, as after a
# slow restart or a host reboot; a shorter outage only measures where in a step it ended.
OUTAGE_S = 9.0
RESUME_LIMIT_S = 5.0
DRAIN_TIMEOUT_S = 45.0
QUEUED = 120  # labeled windows shipped while the trainer is away


def test_broker_kill9_mid_stream_loses_no_classified_label_and_recovers(
    fault_broker: Broker, nodes: Nodes, site: Topics, tmp_path: Path
) -> None:
    broker, state, store = fault_broker, tmp_path / "edge", tmp_path / "trainer"
    watcher = Watcher(broker.address, site)
    feeder = Feeder(broker.address, site)
    try:
        t0 = time.monotonic()
        trainer = nodes.trainer(broker.address, store)
        watcher.wait_online("trainer-fault", t0, 60, model=1)
        edge = nodes.edge(broker.address, state)
        watcher.wait_online("pi-fault", t0, 60, model=1)
        feeder.wait_connected()
        feeder.stream(RATE_HZ)
        wait_until(lambda: len(stored_labeled(store)) >= 20, 30, "labeled windows being stored")
        time.sleep(1.0)

        broker.kill9()
        time.sleep(OUTAGE_S)
        broker.start()  # same port, same persistence dir
        back = time.monotonic()
        wall_back = time.time()
        wait_until(
            lambda: watcher.first_prediction_after(back) is not None,
            30,
            "predictions after the broker restart",
        )
        resume_s = (watcher.first_prediction_after(back) or back) - back
        time.sleep(3.0)
        feeder.stop_stream()
        settle(lambda: len(classified_labeled(state)))
        drain_s = poll(lambda: delivered(state, store), DRAIN_TIMEOUT_S)
        tally = Tally.of(
            "broker kill -9",
            feeder.sent_labeled,
            classified_labeled(state),
            stored_labeled(store),
            recover_s=resume_s,
            note=f"predictions resumed {resume_s:.1f} s after the broker was back "
            f"(down {OUTAGE_S:.0f} s); store complete {secs(drain_s, DRAIN_TIMEOUT_S)} after "
            "the stream ended",
        )
        print(f"\n{tally.line()}")
        assert edge.alive and trainer.alive, "a node died while the broker was away"
        assert tally.classified > 0
        assert tally.lost == 0, f"{tally.lost} classified labeled window(s) never stored"
        assert tally.duplicated == 0

        bundle, is_retained = retained(broker.address, site.model_current)
        assert is_retained, "the model on model/current is not retained"
        assert decode_bundle(bundle, load_public_key(nodes.kit.public_key)).manifest.version == 1
        for node, role in (("pi-fault", "edge"), ("trainer-fault", "trainer")):
            payload, is_retained = retained(broker.address, site.status(node))
            status = Status.from_json(payload)
            assert is_retained and status.role == role and status.model_version == 1
            assert status.state == "online", f"{node}'s retained status says {status.state}"
            assert status.timestamp > wall_back, f"{node}'s retained status predates the restart"
            if role == "edge":
                assert status.detail.get("broker") == "connected", status.detail.get("broker")

        assert resume_s <= RESUME_LIMIT_S, (
            f"predictions resumed {resume_s:.1f} s after the broker was back "
            f"(limit {RESUME_LIMIT_S:.0f} s): pi_edge waits out paho's reconnect backoff"
        )
    finally:
        feeder.close()
        watcher.close()


def test_broker_kill9_with_batches_queued_for_an_offline_trainer_loses_none(
    fault_broker: Broker, nodes: Nodes, site: Topics, tmp_path: Path
) -> None:
    """The same crash while the trainer is away (a Jetson reboot): pi_edge's batches wait in
    the broker for the trainer's persistent session, and pi_edge has deleted them on PUBACK."""
    broker, state, store = fault_broker, tmp_path / "edge", tmp_path / "trainer"
    watcher = Watcher(broker.address, site)
    feeder = Feeder(broker.address, site, labeled_every=1)
    try:
        t0 = time.monotonic()
        trainer = nodes.trainer(broker.address, store)
        watcher.wait_online("trainer-fault", t0, 60, model=1)
        assert trainer.stop() == 0  # its session and queue stay with the broker
        nodes.edge(broker.address, state)
        watcher.wait_online("pi-fault", t0, 60, model=1)
        feeder.wait_connected()
        feeder.send(QUEUED, per_s=200)
        # the rows stay in pi_edge's buffer until the trainer acknowledges them: wait until all
        # are there and some are in flight (the broker has them queued for the trainer)
        wait_until(
            lambda: (
                len(classified_labeled(state)) >= QUEUED
                and sum(labeled for _, labeled, _ in buffered(state)) >= QUEUED
                and any(token > 0 for _, _, token in buffered(state))
            ),
            20,
            "pi_edge classifying every window and shipping batches of them",
            poll=0.02,
        )
        time.sleep(0.3)  # the broker's PUBACKs
        broker.kill9()  # at once: what the broker acknowledged since its last autosave
        broker.start()
        back = time.monotonic()
        nodes.trainer(broker.address, store)
        done_s = poll(lambda: delivered(state, store), 30)
        tally = Tally.of(
            "broker kill -9, trainer offline",
            feeder.sent_labeled,
            classified_labeled(state),
            stored_labeled(store),
            recover_s=time.monotonic() - back,
            note=f"{QUEUED} batches' windows queued in the broker for the trainer; "
            f"store complete {secs(done_s, 30)} after the broker restart",
        )
        print(f"\n{tally.line()}")
        assert tally.classified == QUEUED
        assert tally.lost == 0, (
            f"{tally.lost} of {QUEUED} classified labeled windows lost: pi_edge deleted them "
            "on the broker's PUBACK, and the broker had not saved them when it was killed"
        )
        assert tally.duplicated == 0
    finally:
        feeder.close()
        watcher.close()
