"""The closed loop's settings: which windows are kept, the durable buffer, maintenance labels,
label requests and the label-free accuracy estimate. A section of `pi_edge.config.EdgeConfig`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nodekit.guard import Faults
from nodekit.settings import check, setting
from nodekit.storage import WriteFailures
from protocol.machine_type import MachineType

from .accuracy_estimate import AccuracyEstimator
from .drift import DriftConfig
from .drift_watch import DriftWatch
from .kept_windows import KeptConfig, KeptWindows
from .label_requests import AskConfig, LabelAsker
from .lane_loop import LaneLoop
from .maintenance_labels import Labeler

if TYPE_CHECKING:
    from ..config import NodeBasics

__all__ = ["LoopConfig"]


def _floor(value: float) -> None:
    DriftConfig(confidence_floor=value)  # the detector's own rule, not a copy of it


@dataclass(frozen=True, slots=True)
class LoopConfig:
    """Drift, kept windows and labels; checked on construction."""

    low_confidence: float = setting(
        0.6, help="confidence below which a window is flagged and kept", check=_floor
    )
    buffer_max_rows: int = setting(
        50_000, help="kept windows on disk before the oldest unlabeled go", low=1, high=10_000_000
    )
    keep_flagged_per_s: float = setting(
        1.0,
        help="flagged (unlabeled) windows kept per machine per second; labeled: all",
        low=0.0,
        high=1000.0,
    )
    label_hold_windows: int = setting(
        1024,
        help="recent windows held (in memory, ~1.5 KB each) so that a late maintenance label on "
        "{prefix}/labels can still reach them (0: labels reach new windows only)",
        low=0,
        high=1_000_000,
    )
    label_hold_s: float = setting(
        3600.0,
        help="the oldest held window a late label can still reach, in seconds",
        low=0.0,
        high=30 * 86400.0,
    )
    label_requests_per_min: int = setting(
        8,
        help="at most this many held windows per minute asked to be labeled on "
        "{prefix}/labels/requests/{node} (the least sure, spread over classes and machines), "
        "only while drift is suspect/drift or the accuracy estimate is below "
        "--label-requests-below (0: never ask)",
        low=0,
        high=10_000,
    )
    label_requests_per_machine: int = setting(
        2, help="windows of one machine in one label request", low=1, high=64
    )
    label_requests_below: float = setting(
        0.9,
        help="ask for labels while the label-free accuracy estimate is below this (0: only "
        "on drift)",
        low=0.0,
        high=1.0,
    )
    estimate_windows: int = setting(
        512,
        help="recent windows the label-free accuracy estimate (detail.estimate) is taken over",
        low=1,
        high=1_000_000,
    )

    def __post_init__(self) -> None:
        check(self)

    def drift(self) -> DriftConfig:
        """The drift detector's configuration."""
        return DriftConfig(confidence_floor=self.low_confidence)

    def asking(self) -> AskConfig:
        """The label requests' budget."""
        return AskConfig(
            per_minute=self.label_requests_per_min,
            per_machine=self.label_requests_per_machine,
            below=self.label_requests_below,
        )

    def drift_watch(self) -> DriftWatch:
        """The serving model's drift detector."""
        return DriftWatch(self.drift())

    def kept_windows(
        self,
        basics: NodeBasics,
        model_version: Callable[[], int | None],
        failures: WriteFailures,
        faults: Faults,
        type_version: Callable[[str], int | None] | None = None,
        types: tuple[str, ...] = (),
        type_classes: Callable[[str], tuple[str, ...] | None] | None = None,
    ) -> KeptWindows:
        """Kept windows of every type served: keeper, durable buffers (one per type: `types`
        besides the built-in one) and the shipper to the trainer (`type_version`: the serving
        model of a type other than the built-in one; `type_classes`: the class table its kept
        labels index, when not its declared list)."""
        return KeptWindows(
            KeptConfig(
                state_dir=basics.state_dir,
                broker=basics.broker,
                node=basics.node,
                topics=basics.topics,
                buffer_max_rows=self.buffer_max_rows,
                flagged_per_machine_s=self.keep_flagged_per_s,
                credentials=basics.credentials,
                types=types,
            ),
            model_version,
            failures,
            faults,
            type_version,
            type_classes,
        )

    def lane_loop(
        self,
        name: str,
        machine_type: MachineType | None,
        state_dir: Path,
        kept: KeptWindows,
        drift: DriftWatch,
    ) -> LaneLoop:
        """The closed loop of machine type `name` (its vocabulary `machine_type`, None before
        it knows one), its label intervals in `state_dir`."""
        return LaneLoop(
            name, machine_type, config=self, state_dir=state_dir, kept=kept, drift=drift
        )

    def labeler(self, basics: NodeBasics, machine_type: MachineType) -> Labeler:
        """Maintenance label events (in `machine_type`'s class names) on held and new windows."""
        return Labeler(
            basics.state_dir,
            hold_windows=self.label_hold_windows,
            hold_s=self.label_hold_s,
            machine_type=machine_type,
        )

    def estimator(self) -> AccuracyEstimator:
        """The label-free accuracy estimate."""
        return AccuracyEstimator(self.estimate_windows)

    def asker(self) -> LabelAsker:
        """Which held windows to ask a technician to label."""
        return LabelAsker(self.asking())
