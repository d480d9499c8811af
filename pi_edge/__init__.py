"""pi_edge: the live classifier on a Raspberry Pi — MQTT windows in, predictions out.

Public API (the CLI is `python -m pi_edge` / `edgeloop-edge`)::

    EdgeConfig, EdgeService          run a node programmatically
    ModelManager                     a node's model life: vet, store, swap, rollback
    batch_outputs, HistoryRow        a classified batch → payloads, history rows (pure)
    NodeTelemetry                    a node's figures → status and dashboard snapshot
    Classifier, interpreter_class    the TFLite runtime (one module: pi_edge.model.classifier)
    ModelStore, vet_bundle           state dir and bundle checks
    BatchPolicy, Inbox               the bounded drop-oldest inbox and micro-batching
    RateMeter, LatencyWindow, KindCounter
    Snapshot, MachineRow, render     the dashboard
    evaluate                         offline accuracy / F1 / confusion / µs per window
"""

from __future__ import annotations

from protocol import __version__

from .config import EdgeConfig
from .errors import ConfigError, EdgeError, ModelError
from .intake.inbox import BatchPolicy, Inbox
from .model.classifier import Classifier, interpreter_class
from .model.lifecycle import ModelManager
from .model.state_dir import ModelStore
from .model.vetting import Expected, VettedModel, vet_bundle
from .report.dashboard import MachineRow, Snapshot, render
from .report.outputs import HistoryRow, batch_outputs
from .report.running_stats import KindCounter, LatencyWindow, RateMeter
from .report.telemetry import NodeTelemetry
from .service import EdgeService

__all__ = [
    "BatchPolicy",
    "Classifier",
    "ConfigError",
    "EdgeConfig",
    "EdgeError",
    "EdgeService",
    "Expected",
    "HistoryRow",
    "Inbox",
    "KindCounter",
    "LatencyWindow",
    "MachineRow",
    "ModelError",
    "ModelManager",
    "ModelStore",
    "NodeTelemetry",
    "RateMeter",
    "Snapshot",
    "VettedModel",
    "__version__",
    "batch_outputs",
    "interpreter_class",
    "render",
    "vet_bundle",
]
