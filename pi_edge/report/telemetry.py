"""The node's own figures: rates, latencies, per-machine rows and error counts, under one lock.

The worker adds each batch's outputs, the paho thread and the model manager count errors, and
the status thread and the dashboard read; `status()` and `snapshot()` assemble what they show.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nodekit.proc import ProcSampler
from protocol import Status
from protocol.status_detail import DETAIL_VERSION, RecentMachines

from ..intake.machine_cap import DEFAULT_MAX_MACHINES, STATUS_MACHINES, MachineTracker
from .dashboard import MachineRow, Snapshot
from .outputs import HistoryRow
from .running_stats import KindCounter, LatencyWindow, RateMeter

__all__ = ["ModelInfo", "NodeTelemetry"]

_NOT_PAYLOAD = frozenset({"publish_failed", "inference_failed"})  # error kinds that aren't input


class _MachineStats:
    __slots__ = ("confidence", "last_class", "last_seen", "latency", "rate", "windows")

    def __init__(self) -> None:
        self.last_class = "-"
        self.confidence = 0.0
        self.rate = RateMeter(5)
        self.latency = LatencyWindow(512)
        self.last_seen = 0.0
        self.windows = 0


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the status shows of the serving model and of the last refused bundle."""

    version: int | None = None
    runtime: str | None = None
    reallocations: int | None = None
    source: str | None = None
    age_s: float | None = None
    created: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None


@dataclass(frozen=True, slots=True)
class Queue:
    """The inbox as the status shows it."""

    depth: int
    capacity: int
    drops: int


class NodeTelemetry:
    """Counters and statistics of one node; every method may be called from any thread.

    Per-machine rows are kept for at most `max_machines` machines (least recently seen go
    first: `add_batch` returns them so that the node's other per-machine state forgets them
    too), and a status names at most `status_machines` of them.
    """

    def __init__(
        self,
        node: str,
        role: str,
        software_version: str,
        log_interval_s: float,
        *,
        max_machines: int = DEFAULT_MAX_MACHINES,
        status_machines: int = STATUS_MACHINES,
    ) -> None:
        self.node = node
        self.role = role
        self.software_version = software_version
        self._lock = threading.Lock()
        self._errors = KindCounter(log_interval_s)
        self._rate = RateMeter(5)
        self._latency = LatencyWindow(2048)
        self._machines: dict[str, _MachineStats] = {}
        self._tracker = MachineTracker(max_machines)
        self._status_machines = status_machines
        self._classified = 0
        self._batches = 0
        self._started = time.monotonic()
        self._proc = ProcSampler()  # cpu_percent (since the last status) and rss_mb

    def count_error(self, kind: str, n: int = 1) -> tuple[bool, int]:
        """Count `n` errors of `kind`; (whether to log now, how many went unlogged before)."""
        with self._lock:
            should_log = self._errors.count(kind, time.monotonic(), n)
            return should_log, self._errors.suppressed(kind)

    def add_batch(self, rows: list[HistoryRow], latencies_ms: list[float]) -> list[str]:
        """One classified batch: its predictions update the node and per-machine figures.

        Returns the machines evicted by the cap (already forgotten here).
        """
        now = time.monotonic()
        with self._lock:
            self._classified += len(rows)
            self._batches += 1
            self._rate.add(len(rows), now)
            for row in rows:
                st = self._machines.get(row.machine)
                if st is None:
                    st = self._machines[row.machine] = _MachineStats()
                st.last_class, st.confidence, st.last_seen = row.label, row.confidence, now
                st.windows += 1
                st.rate.add(1, now)
                st.latency.add(row.latency_ms)
            self._latency.extend(latencies_ms)
            evicted = self._tracker.seen(row.machine for row in rows)
            for machine in evicted:
                del self._machines[machine]
        return evicted

    def forget(self, machines: list[str]) -> None:
        """Drop the rows of `machines` (another fleet member classifies them now)."""
        with self._lock:
            self._tracker.forget(machines)
            for machine in machines:
                self._machines.pop(machine, None)

    def status(
        self,
        model: ModelInfo,
        queue: Queue,
        broker: str,
        drift: str,
        evidence: dict[str, Any],
        *,
        state: str = "online",
        faults: dict[str, int] | None = None,
        dead_threads: tuple[str, ...] = (),
        extra_metrics: dict[str, float] | None = None,
    ) -> Status:
        """The retained status message of this node.

        `faults` (nodekit.guard.Faults.counts()) appear in `errors` as `fault:<where>:<Type>`;
        a degraded node names its `dead_threads` in `detail`; `extra_metrics` (e.g. a fleet
        member's `fleet_skipped`) join `metrics`.
        """
        now = time.monotonic()
        faults = faults or {}
        with self._lock:
            p50, p99 = self._latency.percentiles()
            metrics = {
                "windows_per_s": self._rate.rate(now),
                "classified": float(self._classified),
                "mean_batch": round(self._classified / self._batches, 2) if self._batches else 0.0,
                "queue_depth": float(queue.depth),
                "queue_capacity": float(queue.capacity),
                "drops": float(queue.drops),
                "uptime_s": round(now - self._started, 1),
                "latency_p50_ms": p50,
                "latency_p99_ms": p99,
                "latency_window": float(len(self._latency)),  # samples the percentiles cover
                "latency_window_sum_ms": self._latency.total(),
                "machines_tracked": float(len(self._tracker)),
                "machines_evicted": float(self._tracker.evicted),
                "faults": float(sum(faults.values())),
                **self._proc.metrics(),
                **(extra_metrics or {}),
            }
            errors = self._errors.as_dict()
            errors.update((f"fault:{kind}", n) for kind, n in faults.items())
            recent = self._tracker.ids()[-self._status_machines :]
            machines = sorted(recent)
        detail: dict[str, Any] = {
            "v": DETAIL_VERSION,  # the typed parts: protocol.status_detail
            "broker": broker,
            "runtime": model.runtime,
            "interpreter_reallocations": model.reallocations,
            "model_source": model.source,
            "model_age_s": None if model.age_s is None else round(model.age_s, 1),
            "model_created": model.created,
            "last_model_error": model.last_error,
            "last_model_error_at": model.last_error_at,
            RecentMachines.KEY: RecentMachines(tuple(machines)).to_json_obj(),
            **evidence,
        }
        if dead_threads:
            detail["dead_threads"] = list(dead_threads)
        return Status(
            node=self.node,
            role=self.role,
            state=state,
            software_version=self.software_version,
            model_version=model.version,
            timestamp=time.time(),
            metrics=metrics,
            errors=errors,
            drift=drift,
            detail=detail,
        )

    def snapshot(
        self,
        model: ModelInfo,
        queue: Queue,
        broker: str,
        drift: str,
        machine_drift: dict[str, str],
        evidence: dict[str, Any],
        low_confidence: float,
        faults: dict[str, int] | None = None,
        normal_of: Callable[[str], str | None] | None = None,
    ) -> Snapshot:
        """What the dashboard renders."""
        now = time.monotonic()
        with self._lock:
            rows = []
            for name, st in sorted(self._machines.items()):
                p50, p99 = st.latency.percentiles()
                rows.append(
                    MachineRow(
                        name,
                        st.last_class,
                        st.confidence,
                        st.rate.rate(now),
                        p50,
                        p99,
                        now - st.last_seen,
                        st.windows,
                        machine_drift.get(name, "ok"),
                        None if normal_of is None else normal_of(name),
                    )
                )
            bad = {
                k: v
                for k, v in self._errors.as_dict().items()
                if not k.startswith("bundle_") and k not in _NOT_PAYLOAD
            }
            rate = self._rate.rate(now)
            tracked, evicted = len(self._tracker), self._tracker.evicted
        return Snapshot(
            node=self.node,
            model_version=model.version,
            model_age_s=model.age_s,
            broker_state=broker,
            queue_depth=queue.depth,
            queue_capacity=queue.capacity,
            drops=queue.drops,
            windows_per_s=rate,
            bad_payloads=bad,
            machines=tuple(rows),
            last_model_error=model.last_error,
            low_confidence=low_confidence,
            drift=drift,
            evidence=evidence,
            faults=dict(faults or {}),
            machines_tracked=tracked,
            machines_evicted=evicted,
        )
