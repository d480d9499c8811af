"""Kept windows on their way to the trainer: which to keep, where they wait, how they go.

The worker calls `keep` for each classified micro-batch (before anything is published, so a
kept window is on disk first): the `Keeper` picks the windows and why, the `DurableBuffer`
(SQLite, WAL) holds them, and the `BatchShipper` (its own thread and MQTT connection) sends
them at QoS 1 and deletes them only on the trainer's acknowledgement. Maintenance labels that
reach held windows later come through `keep_records`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from nodekit.errors import StorageError
from nodekit.guard import Faults, ThreadWatch
from nodekit.mqtt import Credentials
from nodekit.storage import WriteFailures
from protocol import Topics, Window
from protocol.drift_batch import Kept
from protocol.status_detail import MAX_NOTE, BufferDetail, ShipperDetail, clip_text

from .buffer import BufferCounts, DurableBuffer
from .drift import DriftState, Verdicts
from .keeper import Keeper
from .shipper import BatchShipper

__all__ = ["KeptConfig", "KeptWindows"]


@dataclass(frozen=True, slots=True)
class KeptConfig:
    state_dir: Path
    broker: str
    node: str
    topics: Topics
    buffer_max_rows: int = 50_000
    flagged_per_machine_s: float = 1.0
    credentials: Credentials | None = None  # the shipper's MQTT login (the node's own)


class KeptWindows:
    """Keeper, durable buffer and shipper of one node (see the module docstring)."""

    def __init__(
        self,
        config: KeptConfig,
        model_version: Callable[[], int | None],
        failures: WriteFailures,
        faults: Faults,
    ) -> None:
        self.config = config
        self.failures = failures
        # a corrupt file is moved aside and replaced (nodekit.storage); only a state dir that
        # cannot be written raises StorageError, which `pi_edge run` reports and exits 1 on
        self.buffer = DurableBuffer(config.state_dir / "buffer.sqlite", config.buffer_max_rows)
        self.keeper = Keeper(config.flagged_per_machine_s)
        self.shipper = BatchShipper(
            self.buffer,
            config.broker,
            config.topics.drift_batches(config.node),
            config.node,
            model_version,
            faults=faults,
            credentials=config.credentials,
            ack_topic=config.topics.drift_acks(config.node),
        )

    # -- lifecycle: the shipper's thread -------------------------------------------------------
    def start(self) -> Self:
        self.shipper.start()
        return self

    def watch(self, watch: ThreadWatch) -> None:
        """Add the shipper's thread and its MQTT network thread to `watch`."""
        self.shipper.watch(watch)

    def stop(self) -> None:
        self.shipper.stop()
        self.buffer.close()

    # -- worker side ---------------------------------------------------------------------------
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
        return self.keep_records(records)

    def keep_records(self, records: list[Kept]) -> int:
        """Write `records` to the durable buffer and wake the shipper; a row still there
        unlabeled, or with another label, is upgraded (loop/buffer.py). Returns rows added."""
        if not records:
            return 0
        try:
            added = self.buffer.add(records)
        except StorageError as exc:  # disk full, corrupt (healed): classification goes on
            self.failures.add("buffer_failed", "the kept-window buffer", exc, len(records))
            return 0
        self.shipper.wake()
        return added

    def forget(self, machines: list[str]) -> None:
        """Drop the rate limits of `machines` (evicted by the node's machine cap)."""
        self.keeper.forget(machines)

    # -- status side ---------------------------------------------------------------------------
    def detail(self) -> tuple[dict[str, Any], BufferCounts | None]:
        """The status's buffer and shipper parts, and the buffer's counts (None: unreadable)."""
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
        parts = {
            BufferDetail.KEY: buffer.to_json_obj(),
            "batches_sent": self.shipper.batches_sent,
            "batches_acked": self.shipper.batches_acked,  # by the trainer: rows deleted
            ShipperDetail.KEY: self.shipper.stats(),
        }
        return parts, counts

    def storage(self, counts: BufferCounts | None) -> dict[str, Any]:
        """The buffer's part of the status's `storage`: files moved aside, rows refused."""
        aside = self.buffer.moved_aside
        return {
            "buffer_moved_aside": [str(m.path) for m in aside[-5:]],
            "buffer_moved_aside_count": len(aside),
            "buffer_rejected": counts.rejected if counts else None,
            "buffer_quarantined": counts.quarantined if counts else None,
        }
