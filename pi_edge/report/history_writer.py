"""The prediction history's writer thread: rows queue up (bounded) and go to SQLite in one
transaction every `flush_s`, so neither the worker nor paho's thread waits for the disk."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nodekit.errors import StorageError
from nodekit.guard import Faults
from nodekit.lifecycle import Worker
from nodekit.storage import WriteFailures

from .history_store import PredictionHistory

__all__ = ["HistoryRecorder"]


class HistoryRecorder(Worker):
    """Queue of history rows and the "edge-history" thread that writes them."""

    def __init__(
        self,
        history: PredictionHistory,
        on_failed: Callable[[Exception, int], None],
        *,
        max_queued: int = 8_192,
        flush_s: float = 1.0,
        flush_rows: int = 2_048,
        faults: Faults | None = None,
    ) -> None:
        super().__init__("edge-history")
        self.history = history
        self.faults = faults or Faults(logging.getLogger(__name__))
        self._on_failed = on_failed  # (error, rows lost): counted and logged by the owner
        self.max_queued = max_queued  # rows waiting; beyond, dropped and counted
        self.flush_s = flush_s  # one SQLite transaction per interval, not per batch (each
        # transaction has a fixed cost: at the demo load 1 s, not 0.25 s, is 160 rows in one)
        self.flush_rows = flush_rows  # … or as soon as this many rows wait
        self._queue: deque[Sequence[tuple[Any, ...]]] = deque()
        self._queued = 0
        self.dropped = 0
        self._cond = threading.Condition()

    @classmethod
    def open(
        cls,
        state_dir: Path,
        failures: WriteFailures,
        faults: Faults,
        *,
        max_rows: int = 1_000_000,
        max_age_s: float = 7 * 86400,
    ) -> HistoryRecorder:
        """The node's prediction history (STATE_DIR/history.sqlite) and its writer; a failed
        write is counted in `failures` as `history_failed`."""
        history = PredictionHistory(state_dir / "history.sqlite", max_rows, max_age_s)
        return cls(
            history,
            lambda exc, rows: failures.add("history_failed", "the prediction history", exc, rows),
            faults=faults,
        )

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, end the thread, close the store."""
        self.stop(timeout)
        self.history.close()

    def storage(self) -> dict[str, Any]:
        """The history's part of the status's `storage`: files moved aside, rows refused."""
        aside = self.history.moved_aside
        return {
            "history_moved_aside": [str(m.path) for m in aside[-5:]],
            "history_moved_aside_count": len(aside),
            "history_rejected": self.history.rejected,
            "history_bad_rows": self.history.bad_rows,
        }

    def _wake(self) -> None:
        """On stop: write what is queued, then end the thread."""
        with self._cond:
            self._cond.notify_all()

    def record(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Queue rows (history.COLUMNS order); never blocks, drops and counts if full."""
        with self._cond:
            if self._queued + len(rows) > self.max_queued:
                self.dropped += len(rows)
                return
            self._queue.append(rows)
            self._queued += len(rows)
            if self._queued >= self.flush_rows:
                self._cond.notify()

    def _run(self) -> None:
        """Write queued rows every `flush_s` (sooner when many wait), once more on stop."""
        done = False
        guard = self.faults.loop("edge-history", self._stop)  # the outermost frame
        while not done:
            done = self._stop.is_set()
            with guard:
                with self._cond:
                    if not done and self._queued < self.flush_rows:
                        self._cond.wait(self.flush_s)
                    chunks = list(self._queue)
                    self._queue.clear()
                    self._queued = 0
                if chunks:
                    rows = [p for chunk in chunks for p in chunk]
                    try:
                        self.history.add(rows)
                    except StorageError as exc:  # rolled back; counted by the owner
                        self._on_failed(exc, len(rows))
