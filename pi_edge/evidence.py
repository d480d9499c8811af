"""The closed loop on the Pi: drift verdicts per window, kept windows, prediction history.

The worker calls `observe` (drift monitor) and `keep` (durable buffer) for each micro-batch, and
`record` for the predictions it published. Labeled windows are always kept; flagged windows
(low confidence, out of distribution, or from a drifting machine) are kept at most
`flagged_per_machine_s` per machine per second, so a drifting fleet cannot flood the buffer.
The shipper (shipper.py) sends kept windows at QoS 1 on its own connection; the recorder
(recorder.py) writes the prediction history; neither touches the worker's or paho's time.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from protocol import Manifest, Topics, Window
from protocol.drift_batch import Kept

from .buffer import DurableBuffer
from .drift import DriftConfig, DriftMonitor, DriftState, Verdicts
from .history import PredictionHistory
from .recorder import HistoryRecorder
from .shipper import BatchShipper

log = logging.getLogger(__name__)


class Keeper:
    """Which windows to keep and why (pure; the clock comes in).

    >>> import numpy as np
    >>> k = Keeper(flagged_per_machine_s=1.0)
    >>> w = Window("m01", 1, 0, np.zeros((60, 4), np.float32))
    >>> from pi_edge.drift import WindowVerdict
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


class Evidence:
    """Drift monitor + keeper + durable buffer, with the shipper and the history recorder."""

    def __init__(self, config: EvidenceConfig) -> None:
        self.config = config
        self.buffer = DurableBuffer(config.state_dir / "buffer.sqlite", config.buffer_max_rows)
        self.history = PredictionHistory(
            config.state_dir / "history.sqlite", config.history_max_rows, config.history_max_age_s
        )
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
        )
        self.recorder = HistoryRecorder(
            self.history, lambda exc, rows: self._storage_failed("history_failed", exc, rows)
        )

    def start(self) -> Evidence:
        self.shipper.start()
        self.recorder.start()
        return self

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
            except sqlite3.Error as exc:  # disk full, locked: classification must go on
                self._storage_failed("buffer_failed", exc, len(records))
                return 0
            self.shipper.wake()
        return len(records)

    def record(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Queue history rows for the recorder; never blocks."""
        self.recorder.record(rows)

    def _storage_failed(self, kind: str, exc: Exception, rows: int) -> None:
        """Count a failed SQLite write and log it at most every 10 s; the caller carries on."""
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
            drift = self.monitor.snapshot() if self.monitor else {"overall": "ok"}
            storage_errors = dict(self.storage_errors)
        counts = self.buffer.counts()
        return {
            "drift": drift,
            "buffer": {
                "pending": counts.pending,
                "inflight": counts.inflight,
                "labeled": counts.labeled,
                "acknowledged": counts.acknowledged,
                "evicted_unlabeled": counts.evicted_unlabeled,
                "evicted_labeled": counts.evicted_labeled,
            },
            "batches_sent": self.shipper.batches_sent,
            "batches_acked": self.shipper.batches_acked,
            "history_dropped": self.recorder.dropped,
            "storage_errors": storage_errors,
        }
