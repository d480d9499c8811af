"""Kept windows on their way to the trainer: which to keep, where they wait, how they go.

The worker calls `keep` for each classified micro-batch (before anything is published, so a
kept window is on disk first): the `Keeper` picks the windows and why, the `DurableBuffer`
(SQLite, WAL) holds them, and the `BatchShipper` (its own thread and MQTT connection) sends
them at QoS 1 and deletes them only on the trainer's acknowledgement. Maintenance labels that
reach held windows later come through `keep_records`.

Each machine type the node serves has its own durable buffer: the built-in type's is
`STATE_DIR/buffer.sqlite` (as before machine types), another type's
`STATE_DIR/types/<type>/buffer.sqlite` (each bounded by `buffer_max_rows`). The one shipper takes
its batches from each in turn, so a batch carries one type's windows (the shipper's
`type_version` gives that type's serving model), and a type whose trainer is away fills its own
buffer and holds up no other.
"""

from __future__ import annotations

import dataclasses
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
from protocol.machine_type import DEFAULT_TYPE_NAME
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
    types: tuple[str, ...] = ()  # the machine types served besides the built-in one


class KeptWindows:
    """Keeper, durable buffer and shipper of one node (see the module docstring)."""

    def __init__(
        self,
        config: KeptConfig,
        model_version: Callable[[], int | None],
        failures: WriteFailures,
        faults: Faults,
        type_version: Callable[[str], int | None] | None = None,
        type_classes: Callable[[str], tuple[str, ...] | None] | None = None,
    ) -> None:
        self.config = config
        self.failures = failures
        # a corrupt file is moved aside and replaced (nodekit.storage); only a state dir that
        # cannot be written raises StorageError, which `pi_edge run` reports and exits 1 on
        self.buffer = DurableBuffer(config.state_dir / "buffer.sqlite", config.buffer_max_rows)
        self.buffers = {DEFAULT_TYPE_NAME: self.buffer}  # each type's (the built-in: first)
        try:
            for kind in config.types:
                if kind != DEFAULT_TYPE_NAME:
                    where = config.state_dir / "types" / kind
                    where.mkdir(parents=True, exist_ok=True)
                    self.buffers[kind] = DurableBuffer(
                        where / "buffer.sqlite", config.buffer_max_rows
                    )
        except BaseException:
            for buffer in self.buffers.values():
                buffer.close()
            raise
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
            type_version=type_version,
            typed_buffers=self.buffers,
            type_classes=type_classes,
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
        for buffer in self.buffers.values():
            buffer.close()

    # -- worker side ---------------------------------------------------------------------------
    def keep(
        self,
        windows: list[Window],
        verdicts: Verdicts,
        predicted: npt.NDArray[np.int64],
        now: float | None = None,
        machine_type: str = DEFAULT_TYPE_NAME,
    ) -> int:
        """Write kept windows of `machine_type` to the durable buffer (before they are
        shipped); returns kept."""
        t = time.monotonic() if now is None else now
        labeled = np.fromiter((w.label is not None for w in windows), bool, len(windows))
        candidates = labeled | (verdicts.flags > 0) | (verdicts.states == DriftState.DRIFT)
        records = []
        for i in np.flatnonzero(candidates).tolist():
            verdict = verdicts[i]
            why = self.keeper.reason(windows[i], verdict, t)
            if why is not None:
                p = int(predicted[i])  # -1: none of the type's classes (`anomaly`)
                records.append(Kept(windows[i], why, p if p >= 0 else None, verdict.ood_score))
        return self.keep_records(records, machine_type)

    def keep_records(self, records: list[Kept], machine_type: str = DEFAULT_TYPE_NAME) -> int:
        """Write `records` (of `machine_type`'s windows) to the durable buffer and wake the
        shipper; a row still there unlabeled, or with another label, is upgraded
        (loop/buffer.py). Returns rows added."""
        if not records:
            return 0
        buffer = self.buffers.get(machine_type)
        if buffer is None:  # a type the node was not configured with: nowhere to keep it
            raise ValueError(f"no kept-window buffer for machine type {machine_type!r}")
        try:
            added = buffer.add(records)
        except StorageError as exc:  # disk full, corrupt (healed): classification goes on
            self.failures.add("buffer_failed", "the kept-window buffer", exc, len(records))
            return 0
        self.shipper.wake()
        return added

    def forget(self, machines: list[str]) -> None:
        """Drop the rate limits of `machines` (evicted by the node's machine cap)."""
        self.keeper.forget(machines)

    # -- status side ---------------------------------------------------------------------------
    def waiting_by_type(self) -> dict[str, int]:
        """Kept windows waiting (pending or in flight) in each type's buffer; an unreadable
        buffer is left out (`detail.buffer` says why)."""
        out = {}
        for kind, buffer in self.buffers.items():
            try:
                counts = buffer.counts()
            except StorageError:
                continue
            out[kind] = counts.pending + counts.inflight
        return out

    def _counts(self) -> BufferCounts:
        """Every type's buffer counted together (StorageError if one cannot be read)."""
        each = [buffer.counts() for buffer in self.buffers.values()]
        if len(each) == 1:
            return each[0]
        return BufferCounts(
            *(sum(getattr(c, f.name) for c in each) for f in dataclasses.fields(BufferCounts))
        )

    def detail(self) -> tuple[dict[str, Any], BufferCounts | None]:
        """The status's buffer and shipper parts, and the buffers' counts (of every type's
        buffer together; None: unreadable)."""
        buffer: BufferDetail
        counts: BufferCounts | None = None
        try:
            counts = self._counts()
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
        aside = [m for buffer in self.buffers.values() for m in buffer.moved_aside]
        return {
            "buffer_moved_aside": [str(m.path) for m in aside[-5:]],
            "buffer_moved_aside_count": len(aside),
            "buffer_rejected": counts.rejected if counts else None,
            "buffer_quarantined": counts.quarantined if counts else None,
        }
