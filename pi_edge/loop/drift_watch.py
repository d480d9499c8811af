"""The node's drift detector for the model it serves: swapped with the model, shared by threads.

`DriftMonitor` (drift.py) is the pure detector of one model; `DriftWatch` holds the current one
under a lock: the worker thread observes each batch (`observe`), the model thread starts a fresh
detector when a model is installed (`model_changed`), and the status thread reads the levels.
"""

from __future__ import annotations

import logging
import threading

import numpy as np
import numpy.typing as npt

from protocol import Manifest, Window
from protocol.status_detail import DriftDetail

from ..intake.machine_cap import STATUS_MACHINES
from .drift import DriftConfig, DriftMonitor, Verdicts

__all__ = ["DriftWatch"]

log = logging.getLogger(__name__)


class DriftWatch:
    """The serving model's drift monitor (None until a model is installed); thread-safe."""

    def __init__(self, config: DriftConfig, status_machines: int = STATUS_MACHINES) -> None:
        self.config = config
        self.status_machines = status_machines  # machines whose drift levels a status lists
        self._lock = threading.Lock()
        self._monitor: DriftMonitor | None = None
        self.model_version: int | None = None

    @property
    def monitor(self) -> DriftMonitor | None:
        with self._lock:
            return self._monitor

    def model_changed(self, manifest: Manifest) -> None:
        """A new model serves: detectors start over against its statistics."""
        monitor = DriftMonitor.from_manifest(manifest, self.config)
        if monitor.reference is None:
            log.warning(
                "model v%d carries no feature statistics; drift detection uses "
                "confidence and accuracy only",
                manifest.version,
            )
        with self._lock:
            self._monitor = monitor
            self.model_version = manifest.version

    def observe(
        self,
        windows: list[Window],
        x: npt.NDArray[np.float32],
        probs: npt.NDArray[np.float32],
        predicted: npt.NDArray[np.int64],
    ) -> Verdicts:
        """Drift verdicts for one classified batch (quiet until a model serves)."""
        with self._lock:
            monitor = self._monitor
            if monitor is None:
                return Verdicts.quiet(len(windows))
            labels = [None if w.label is None else int(w.label) for w in windows]  # resolved
            return monitor.observe([w.machine for w in windows], x, probs, labels, predicted)

    def forget(self, machines: list[str]) -> None:
        """Drop the per-machine detectors of `machines` (evicted or given away)."""
        with self._lock:
            if self._monitor is not None and machines:
                self._monitor.forget(machines)

    def overall(self) -> str:
        with self._lock:
            return self._monitor.overall.label if self._monitor else "ok"

    def machine_states(self) -> dict[str, str]:
        with self._lock:
            if self._monitor is None:
                return {}
            return {m: d["state"] for m, d in self._monitor.snapshot()["machines"].items()}

    def detail(self) -> DriftDetail:
        """The status's `detail.drift`."""
        with self._lock:
            if self._monitor is None:
                return DriftDetail("ok")
            return self._monitor.detail(top=self.status_machines)
