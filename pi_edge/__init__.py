"""pi_edge: the live classifier on a Raspberry Pi — MQTT windows in, predictions out.

Public API (the CLI is `python -m pi_edge` / `edgeloop-edge`)::

    EdgeConfig, EdgeService          run a node programmatically
    Classifier, interpreter_class    the TFLite runtime (one module: pi_edge.runtime)
    ModelStore, vet_bundle           state dir and bundle checks
    BatchPolicy, Inbox               the bounded drop-oldest inbox and micro-batching
    RateMeter, LatencyWindow, KindCounter
    Snapshot, MachineRow, render     the dashboard
    evaluate                         offline accuracy / F1 / confusion / µs per window
"""

from __future__ import annotations

from protocol import __version__

from .batching import BatchPolicy, Inbox
from .config import EdgeConfig
from .dashboard import MachineRow, Snapshot, render
from .errors import ConfigError, EdgeError, ModelError
from .models import Expected, ModelStore, VettedModel, vet_bundle
from .runtime import Classifier, interpreter_class
from .service import EdgeService
from .stats import KindCounter, LatencyWindow, RateMeter

__all__ = [
    "BatchPolicy",
    "Classifier",
    "ConfigError",
    "EdgeConfig",
    "EdgeError",
    "EdgeService",
    "Expected",
    "Inbox",
    "KindCounter",
    "LatencyWindow",
    "MachineRow",
    "ModelError",
    "ModelStore",
    "RateMeter",
    "Snapshot",
    "VettedModel",
    "__version__",
    "interpreter_class",
    "render",
    "vet_bundle",
]
