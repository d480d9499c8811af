"""The trainer is killed (-9) while drift batches stream in, and restarted.

It hangs for half a second first (SIGSTOP), so that batches are in flight to it, delivered but
unacknowledged, when it dies. Its MQTT session is persistent and a batch is acknowledged only
after the store committed it, so the broker keeps what arrived meanwhile and redelivers what
was in flight: every labeled window pi_edge classified must be stored, none twice.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from protocol import Topics
from scripts.broker import Broker

from ._kit import (
    Feeder,
    Nodes,
    Tally,
    Watcher,
    classified_labeled,
    delivered,
    poll,
    secs,
    settle,
    stored_labeled,
    wait_until,
)

pytestmark = [pytest.mark.broker, pytest.mark.tensorflow, pytest.mark.timeout(150)]

RATE_HZ = 60.0  # windows/s over 8 machines, all labeled: a batch every few windows
FROZEN_S = 0.5  # the trainer hangs this long before the kill, so batches are in flight to it
DOWN_S = 1.0  # between the kill and the restart; batches keep coming
DRAIN_TIMEOUT_S = 45.0


def test_trainer_kill9_while_batches_arrive_loses_and_duplicates_nothing(
    fault_broker: Broker, nodes: Nodes, site: Topics, tmp_path: Path
) -> None:
    broker, state, store = fault_broker, tmp_path / "edge", tmp_path / "trainer"
    watcher = Watcher(broker.address, site)
    feeder = Feeder(broker.address, site, labeled_every=1)
    try:
        t0 = time.monotonic()
        trainer = nodes.trainer(broker.address, store)
        watcher.wait_online("trainer-fault", t0, 60, model=1)
        edge = nodes.edge(broker.address, state)
        watcher.wait_online("pi-fault", t0, 60, model=1)
        feeder.wait_connected()
        feeder.stream(RATE_HZ)
        wait_until(lambda: len(stored_labeled(store)) >= 60, 30, "labeled windows being stored")

        trainer.freeze()  # batches keep arriving, unacknowledged: in flight at the kill
        time.sleep(FROZEN_S)
        trainer.kill9()
        at_kill = len(stored_labeled(store))
        time.sleep(DOWN_S)
        restart = time.monotonic()
        trainer = nodes.trainer(broker.address, store)
        online_s = watcher.wait_online("trainer-fault", restart, 60, model=1)
        time.sleep(2.0)
        feeder.stop_stream()
        classified = settle(lambda: len(classified_labeled(state)))

        caught_up = poll(lambda: delivered(state, store), DRAIN_TIMEOUT_S)
        recover_s = time.monotonic() - restart if caught_up is not None else DRAIN_TIMEOUT_S
        last = watcher.latest("trainer-fault", restart)
        resent = last.metrics.get("duplicates", 0) if last is not None else 0
        tally = Tally.of(
            "trainer kill -9",
            feeder.sent_labeled,
            classified_labeled(state),
            stored_labeled(store),
            recover_s=online_s,
            note=f"{at_kill} stored at the kill; trainer online {online_s:.1f} s after its "
            f"restart; store complete {secs(caught_up, DRAIN_TIMEOUT_S)} after the stream "
            f"ended ({recover_s:.1f} s after the restart); {resent:.0f} redelivered "
            "window(s) dropped as duplicates",
        )
        print(f"\n{tally.line()}")
        assert edge.alive and trainer.alive, "a node died"
        assert classified > at_kill and tally.stored > at_kill, "no batch after the kill: no fault"
        assert tally.lost == 0, f"{tally.lost} classified labeled window(s) never stored"
        assert tally.duplicated == 0
        assert caught_up is not None, "pi_edge's buffer did not drain to the trainer"
    finally:
        feeder.close()
        watcher.close()
