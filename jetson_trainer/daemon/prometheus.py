"""The trainer's Prometheus metrics (`serve --metrics-port`): a pure function from one reading of
the daemon (`TrainerDaemon.state`, the store's counts and gate outcomes, the fault counts) to
metric families, read at scrape time; nothing is updated on the intake or policy threads.

>>> from jetson_trainer.daemon.serve import DaemonState
>>> from jetson_trainer.daemon.store import StoreCounts
>>> state = DaemonState("idle", "collecting", 3, True, 5, 2, 0, 0, 0, (), None,
...                     {"edge-a": {"state": "online"}}, started=0.0, acks=5, windows=40)
>>> fams = trainer_families(TrainerReading(
...     "edgeloop-trainer", "online", "0.1.0", state, StoreCounts(42, 30, {}, {0: 20, 2: 10}, {}),
...     {"accepted": 2, "rejected": 1}, {}, uptime_s=12.0))
>>> text = exposition(fams).decode()
>>> [ln for ln in text.splitlines() if ln.startswith("edgeloop_trainer_gate")]
['edgeloop_trainer_gate_decisions_total{outcome="accepted"} 2.0', \
'edgeloop_trainer_gate_decisions_total{outcome="rejected"} 1.0']
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client.core import Metric

from nodekit.metrics_server import counter, exposition, gauge, info, labeled, split_fault

if TYPE_CHECKING:
    from .serve import DaemonState, TrainerDaemon
    from .store import StoreCounts

__all__ = ["TrainerReading", "daemon_families", "exposition", "trainer_families"]

NODE_STATES = ("online", "degraded")
OUTCOMES = ("accepted", "rejected")


@dataclass(frozen=True, slots=True)
class TrainerReading:
    """What one scrape reads of the daemon, each part under its own lock."""

    node: str
    state: str  # online / degraded
    software_version: str
    daemon: DaemonState
    store: StoreCounts
    attempts: Mapping[str, int]  # WindowStore.attempt_counts()
    faults: Mapping[str, int]  # nodekit.guard.Faults.counts()
    uptime_s: float = 0.0


def daemon_families(daemon: TrainerDaemon) -> list[Metric]:
    """Read `daemon` once and return its metric families (the collector's `collect`)."""
    from nodekit.lifecycle import DEGRADED

    from .serve import _version

    state = daemon.state
    return trainer_families(
        TrainerReading(
            node=daemon.config.client_id,
            state=DEGRADED if daemon.dead_threads else "online",
            software_version=_version(),
            daemon=state,
            store=daemon.store.counts(),
            attempts=daemon.store.attempt_counts(),
            faults=daemon.faults.counts(),
            uptime_s=time.monotonic() - state.started,
        )
    )


def trainer_families(r: TrainerReading) -> list[Metric]:
    """Every trainer metric family from one reading."""
    s, store = r.daemon, r.store
    pis: dict[tuple[str, ...], float] = {}
    for seen in s.pis.values():
        key = (str(seen.get("state", "unknown")),)
        pis[key] = pis.get(key, 0.0) + 1.0
    fams: list[Metric] = [
        info(
            "edgeloop_build",
            "software version of this node",
            {"node": r.node, "version": r.software_version, "role": "trainer"},
        ),
        labeled(
            "edgeloop_node_state",
            "1 for the node's state: online, or degraded (a thread died; restart it)",
            ("state",),
            {(st,): float(r.state == st) for st in NODE_STATES},
        ),
        gauge("edgeloop_broker_connected", "1 while the MQTT session is up", float(s.connected)),
        gauge("edgeloop_uptime_seconds", "seconds since the daemon started", r.uptime_s),
        counter(
            "edgeloop_trainer_batches_received",
            "drift batches stored and acknowledged (duplicates included)",
            s.batches,
        ),
        counter("edgeloop_trainer_windows_stored", "new windows stored from batches", s.windows),
        counter(
            "edgeloop_trainer_duplicate_windows",
            "windows received again (already stored; acknowledged, not stored twice)",
            s.duplicates,
        ),
        counter(
            "edgeloop_trainer_bad_batches", "drift batches refused as malformed", s.bad_batches
        ),
        counter(
            "edgeloop_trainer_batches_refused",
            "drift batches naming another node than their topic's (not stored)",
            s.batches_refused,
        ),
        counter(
            "edgeloop_trainer_store_errors", "batches the store failed to write", s.store_errors
        ),
        counter("edgeloop_trainer_batch_acks", "batch acknowledgements published", s.acks),
        counter(
            "edgeloop_trainer_publish_refused",
            "publishes the broker refused (PUBACK ≥ 0x80: check the ACL)",
            s.publish_refused,
        ),
        labeled(
            "edgeloop_trainer_store_windows",
            "windows in the store, by whether they are labeled",
            ("labeled",),
            {("true",): store.labeled, ("false",): store.windows - store.labeled},
        ),
        labeled(
            "edgeloop_trainer_store_labeled_windows",
            "labeled windows in the store, by class index",
            ("class",),
            {(str(c),): float(n) for c, n in store.by_class.items()},
        ),
        counter(
            "edgeloop_trainer_store_rejected",
            "records refused on the way into the store",
            store.rejected,
        ),
        counter(
            "edgeloop_trainer_finetunes",
            "fine-tunes that reached the gate (recorded in the store)",
            sum(r.attempts.get(o, 0) for o in OUTCOMES),
        ),
        labeled(
            "edgeloop_trainer_gate_decisions",
            "gate decisions on challengers, by outcome",
            ("outcome",),
            {(o,): float(r.attempts.get(o, 0)) for o in OUTCOMES},
            kind="counter",
        ),
        gauge(
            "edgeloop_trainer_fine_tuning",
            "1 while a fine-tune is running",
            float(s.stage.name == "fine_tuning"),
        ),
        labeled(
            "edgeloop_trainer_pis",
            "edge nodes whose status the trainer has seen, by state",
            ("state",),
            pis,
        ),
        counter(
            "edgeloop_trainer_bundles_skipped",
            "bundles on disk that failed verification at start",
            len(s.skipped_bundles),
        ),
        labeled(
            "edgeloop_faults",
            "unexpected exceptions caught at a thread's outermost frame, by where and type",
            ("where", "type"),
            {split_fault(k): float(v) for k, v in r.faults.items()},
            kind="counter",
        ),
    ]
    if s.champion is not None:
        fams += [
            info(
                "edgeloop_trainer_champion",
                "the model the Pis should run",
                {"version": str(s.champion)},
            ),
            gauge("edgeloop_trainer_champion_version", "version of the champion", s.champion),
        ]
    return fams
