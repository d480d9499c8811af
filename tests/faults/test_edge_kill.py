"""pi_edge is killed (-9) with N labeled windows in its durable buffer and nothing shipped.

The trainer is down (its persistent session stays with the broker) and pi_edge's shipper
cannot reach the broker (`ShipperGate` turns its connection away), so every labeled window
pi_edge classifies stays in buffer.sqlite. After the kill, pi_edge restarts with the same
state dir and the trainer comes back: all N must be stored, once each.
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
    ShipperGate,
    Tally,
    Watcher,
    buffered,
    key_of,
    poll,
    secs,
    stored_labeled,
    wait_until,
)

pytestmark = [pytest.mark.broker, pytest.mark.tensorflow, pytest.mark.timeout(150)]

N = 240  # labeled windows buffered when pi_edge is killed
DRAIN_TIMEOUT_S = 60.0


def test_edge_kill9_with_windows_buffered_ships_all_once_after_restart(
    fault_broker: Broker, nodes: Nodes, site: Topics, tmp_path: Path
) -> None:
    broker, state, store = fault_broker, tmp_path / "edge", tmp_path / "trainer"
    watcher = Watcher(broker.address, site)
    feeder = Feeder(broker.address, site, labeled_every=1)
    gate = ShipperGate(broker.port)
    try:
        # the trainer's first run: persistent session and retained v1; then it goes away
        t0 = time.monotonic()
        trainer = nodes.trainer(broker.address, store)
        watcher.wait_online("trainer-fault", t0, 60, model=1)
        assert trainer.stop() == 0

        edge = nodes.edge(gate.address, state)
        watcher.wait_online("pi-fault", t0, 60, model=1)
        feeder.wait_connected()
        feeder.send(N, per_s=200)
        assert len(feeder.sent_labeled) == N
        wait_until(
            lambda: sum(labeled for _, labeled, _ in buffered(state)) >= N,
            20,
            f"{N} labeled windows in pi_edge's buffer",
        )
        assert gate.refused >= 1, "the shipper never tried to connect: the gate proved nothing"
        assert not stored_labeled(store), "a window reached the trainer while it was down"

        edge.kill9()
        rows = buffered(state)
        kept = [key_of(wid) for wid, labeled, _ in rows if labeled]
        assert sorted(kept) == sorted(feeder.sent_labeled), "buffer ≠ the windows sent"
        gate.close()

        edge = nodes.edge(broker.address, state)  # same state dir, straight to the broker
        trainer = nodes.trainer(broker.address, store)
        done_s = poll(
            lambda: len(set(stored_labeled(store))) >= N and not buffered(state), DRAIN_TIMEOUT_S
        )
        tally = Tally.of(
            "pi_edge kill -9",
            feeder.sent_labeled,
            kept,
            stored_labeled(store),
            recover_s=done_s if done_s is not None else DRAIN_TIMEOUT_S,
            note=f"{len(kept)} buffered at the kill; all stored "
            f"{secs(done_s, DRAIN_TIMEOUT_S)} after pi_edge and the trainer restarted",
        )
        print(f"\n{tally.line()}")
        assert edge.alive and trainer.alive, "a restarted node died"
        assert tally.classified == N
        assert tally.lost == 0, f"{tally.lost} buffered labeled window(s) never stored"
        assert tally.duplicated == 0
        assert tally.stored == N
        assert done_s is not None, "pi_edge's buffer did not drain"
    finally:
        gate.close()
        feeder.close()
        watcher.close()
