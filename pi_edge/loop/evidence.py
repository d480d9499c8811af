"""The closed loop on the Pi: drift verdicts per window, kept windows, prediction history.

The worker calls `observe` (drift monitor) and `keep` (durable buffer) for each micro-batch, and
`record` for the predictions it published. Labeled windows are always kept; flagged windows (low
confidence, out of distribution, or from a drifting machine) are kept at most
`flagged_per_machine_s` per machine per second, so a drifting fleet cannot flood the buffer. The
shipper (loop/shipper.py) sends kept windows at QoS 1 on its own connection; the recorder
(report/history_writer.py) writes the prediction history; neither touches the worker's or paho's
time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from nodekit.errors import StorageError
from nodekit.guard import Faults, ThreadWatch
from nodekit.mqtt import Credentials
from protocol import Manifest, Topics, Window
from protocol.drift_batch import Kept
from protocol.status_detail import MAX_NOTE, BufferDetail, DriftDetail, ShipperDetail, clip_text

from ..intake.machine_cap import STATUS_MACHINES
from ..report.history_store import PredictionHistory
from ..report.history_writer import HistoryRecorder
from .buffer import BufferCounts, DurableBuffer
from .drift import DriftConfig, DriftMonitor, DriftState, Verdicts
from .shipper import BatchShipper

log = logging.getLogger(__name__)


class Keeper:
    """Which windows to keep and why (pure; the clock comes in).

    >>> import numpy as np
    >>> k = Keeper(flagged_per_machine_s=1.0)
    >>> w = Window("m01", 1, 0, np.zeros((60, 4), np.float32))
    >>> from pi_edge.loop.drift import WindowVerdict
    >>> flagged = WindowVerdict(DriftState.OK, False, 0.0, "low_confidence")
    >>> [k.reason(w, flagged, now=t) for t in (0.0, 0.5, 1.2)]
    ['low_confidence', None, 'low_confidence']
    >>> k.reason(Window("m01", 2, 0, np.zeros((60, 4), np.float32), label=1), flagged, now=1.3)
    'labeled'
    """

    def __init__(self, flagged_per_machine_s: float = 1.0) -> None:
        if flagged_per_machine_s < 0:
            raise ValueError("flagged_per_machine_s must be ≥ 0")
        self.min_gap_s = 1.0 / flagged_per_machine_s if flagged_per_machine_s else float("inf")
        self._last: dict[str, float] = {}

    def reason(self, window: Window, verdict: Any, now: float) -> str | None:
        """'labeled', the flag's reason, 'drift' or None; `verdict` is a drift.WindowVerdict."""
        if window.label is not None:
            return "labeled"
        why = verdict.reason or ("drift" if verdict.state == DriftState.DRIFT else None)
        if why is None:
            return None
        last = self._last.get(window.machine)
        if last is not None and now - last < self.min_gap_s:
            return None
        self._last[window.machine] = now
        return why

    def forget(self, machines: list[str]) -> None:
        """Drop the rate limits of `machines` (evicted by the node's machine cap)."""
        for m in machines:
            self._last.pop(m, None)

    def __len__(self) -> int:
        return len(self._last)


@dataclass(frozen=True, slots=True)
class EvidenceConfig:
    state_dir: Path
    broker: str
    node: str
    topics: Topics
    drift: DriftConfig
    buffer_max_rows: int = 50_000
    history_max_rows: int = 1_000_000
    history_max_age_s: float = 7 * 86400
    flagged_per_machine_s: float = 1.0
    status_machines: int = STATUS_MACHINES  # machines whose drift levels a status lists
    credentials: Credentials | None = None  # the shipper's MQTT login (the node's own)


class Evidence:
    """Drift monitor + keeper + durable buffer, with the shipper and the history recorder."""

    def __init__(self, config: EvidenceConfig, faults: Faults | None = None) -> None:
        self.config = config
        self.faults = faults or Faults(log)
        # a corrupt file is moved aside and replaced (nodekit.storage); only a state dir that
        # cannot be written raises StorageError, which `pi_edge run` reports and exits 1 on
        self.buffer = DurableBuffer(config.state_dir / "buffer.sqlite", config.buffer_max_rows)
        try:
            self.history = PredictionHistory(
                config.state_dir / "history.sqlite",
                config.history_max_rows,
                config.history_max_age_s,
            )
        except BaseException:
            self.buffer.close()
            raise
        self.keeper = Keeper(config.flagged_per_machine_s)
        self._lock = threading.Lock()  # guards monitor and storage_errors (worker, recorder,
        self.monitor: DriftMonitor | None = None  # status thread)
        self.model_version: int | None = None
        self.storage_errors: dict[str, int] = {}  # buffer_failed / history_failed
        self._last_storage_log = 0.0
        self.shipper = BatchShipper(
            self.buffer,
            config.broker,
            config.topics.drift_batches,
            config.node,
            lambda: self.model_version,
            faults=self.faults,
            credentials=config.credentials,
            ack_topic=config.topics.drift_acks(config.node),
        )
        self.recorder = HistoryRecorder(
            self.history,
            lambda exc, rows: self._storage_failed("history_failed", exc, rows),
            faults=self.faults,
        )

    def start(self) -> Evidence:
        self.shipper.start()
        self.recorder.start()
        return self

    def watch(self, watch: ThreadWatch) -> None:
        """Add the shipper's and the recorder's threads (they must stay alive) to `watch`."""
        self.shipper.watch(watch)
        self.recorder.watch(watch)

    def stop(self) -> None:
        self.recorder.stop()
        self.shipper.stop()
        self.buffer.close()
        self.history.close()

    # -- worker side -----------------------------------------------------------------------
    def model_changed(self, manifest: Manifest) -> None:
        """A new model serves: detectors start over against its statistics."""
        monitor = DriftMonitor.from_manifest(manifest, self.config.drift)
        if monitor.reference is None:
            log.warning(
                "model v%d carries no feature statistics; drift detection uses "
                "confidence and accuracy only",
                manifest.version,
            )
        with self._lock:
            self.monitor = monitor
            self.model_version = manifest.version

    def observe(
        self,
        windows: list[Window],
        x: npt.NDArray[np.float32],
        probs: npt.NDArray[np.float32],
        predicted: npt.NDArray[np.int64],
    ) -> Verdicts:
        with self._lock:
            monitor = self.monitor
            if monitor is None:
                return Verdicts.quiet(len(windows))
            return monitor.observe(
                [w.machine for w in windows], x, probs, [w.label for w in windows], predicted
            )

    def keep(
        self,
        windows: list[Window],
        verdicts: Verdicts,
        predicted: npt.NDArray[np.int64],
        now: float | None = None,
    ) -> int:
        """Write kept windows to the durable buffer (before they are shipped); returns kept."""
        t = time.monotonic() if now is None else now
        labeled = np.fromiter((w.label is not None for w in windows), bool, len(windows))
        candidates = labeled | (verdicts.flags > 0) | (verdicts.states == DriftState.DRIFT)
        records = []
        for i in np.flatnonzero(candidates).tolist():
            verdict = verdicts[i]
            why = self.keeper.reason(windows[i], verdict, t)
            if why is not None:
                records.append(Kept(windows[i], why, int(predicted[i]), verdict.ood_score))
        if records:
            try:
                self.buffer.add(records)
            except StorageError as exc:  # disk full, corrupt (healed): classification goes on
                self._storage_failed("buffer_failed", exc, len(records))
                return 0
            self.shipper.wake()
        return len(records)

    def keep_records(self, records: list[Kept]) -> int:
        """Write windows labeled after the fact (maintenance labels) to the durable buffer; a
        row still there unlabeled, or with another label, is upgraded (loop/buffer.py)."""
        if not records:
            return 0
        try:
            added = self.buffer.add(records)
        except StorageError as exc:
            self._storage_failed("buffer_failed", exc, len(records))
            return 0
        self.shipper.wake()
        return added

    def forget(self, machines: list[str]) -> None:
        """Drop every per-machine state of `machines` (evicted by the node's machine cap)."""
        if not machines:
            return
        with self._lock:
            if self.monitor is not None:
                self.monitor.forget(machines)
            self.keeper.forget(machines)

    def record(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Queue history rows for the recorder; never blocks."""
        self.recorder.record(rows)

    def _storage_failed(self, kind: str, exc: Exception, rows: int) -> None:
        """Count a failed (rolled back) SQLite write and log it at most every 10 s; the caller
        carries on. A corrupt file was moved aside and replaced already (nodekit.storage)."""
        now = time.monotonic()
        with self._lock:
            self.storage_errors[kind] = self.storage_errors.get(kind, 0) + rows
            should_log = now - self._last_storage_log >= 10.0
            if should_log:
                self._last_storage_log = now
        if should_log:
            log.error(
                "could not write %d row(s) to %s (%s): %s; check free space and permissions of %s",
                rows,
                "the kept-window buffer" if kind == "buffer_failed" else "the prediction history",
                kind,
                exc,
                self.config.state_dir,
            )

    # -- status side -----------------------------------------------------------------------
    def overall(self) -> str:
        with self._lock:
            return self.monitor.overall.label if self.monitor else "ok"

    def machine_states(self) -> dict[str, str]:
        with self._lock:
            if self.monitor is None:
                return {}
            return {m: d["state"] for m, d in self.monitor.snapshot()["machines"].items()}

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            drift = (
                self.monitor.detail(top=self.config.status_machines)
                if self.monitor
                else DriftDetail("ok")
            )
            storage_errors = dict(self.storage_errors)
        buffer: BufferDetail
        counts: BufferCounts | None = None
        try:
            counts = self.buffer.counts()
        except StorageError as exc:  # the status still goes out, saying why the counts do not
            buffer = BufferDetail(unreadable=clip_text(str(exc), MAX_NOTE))
        else:
            buffer = BufferDetail(
                pending=counts.pending,
                inflight=counts.inflight,
                labeled=counts.labeled,
                acknowledged=counts.acknowledged,
                evicted_unlabeled=counts.evicted_unlabeled,
                evicted_labeled=counts.evicted_labeled,
            )
        return {
            DriftDetail.KEY: drift.to_json_obj(),
            BufferDetail.KEY: buffer.to_json_obj(),
            "batches_sent": self.shipper.batches_sent,
            "batches_acked": self.shipper.batches_acked,  # by the trainer: rows deleted
            ShipperDetail.KEY: self.shipper.stats(),
            "history_dropped": self.recorder.dropped,
            "storage_errors": storage_errors,
            "storage": self._storage(counts),
        }

    def _storage(self, counts: BufferCounts | None) -> dict[str, Any]:
        """Files moved aside (the newest 5 paths of each, and how many) and rows refused."""
        buffer_aside = self.buffer.moved_aside
        history_aside = self.history.moved_aside
        return {
            "buffer_moved_aside": [str(m.path) for m in buffer_aside[-5:]],
            "buffer_moved_aside_count": len(buffer_aside),
            "history_moved_aside": [str(m.path) for m in history_aside[-5:]],
            "history_moved_aside_count": len(history_aside),
            "buffer_rejected": counts.rejected if counts else None,
            "buffer_quarantined": counts.quarantined if counts else None,
            "history_rejected": self.history.rejected,
            "history_bad_rows": self.history.bad_rows,
        }
