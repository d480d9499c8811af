"""The typed parts of a node's status `detail`: what one role acts on in another's status.

A status (`protocol.messages.Status`, retained on `{prefix}/nodes/{node}/status`) carries an
open `detail` map. The sub-objects another role reads — an edge node's rollbacks, model
health, rollout group, fleet, drift, recent machines, accuracy estimate, buffer and shipper;
the trainer's phase and stage, last gate decision and staged rollout; the simulator's machines —
each have a frozen dataclass here with `to_json_obj()` (the writer's JSON value) and
`from_obj()` (the reader's strict check: bounded sizes, finite numbers, versions in the
manifest's range, ids by `check_id`; every failure a PayloadError with a `.kind`). Writers build
their parts from these classes, so writer and reader cannot drift apart; readers go through
`DetailReader`, which turns a malformed part into None and tells them, so that they count it.
Other keys of a detail are for people (dashboards) and stay open.

    _base.py       the detail's version, the part protocol, bounded field checks, writer helpers
    edge_model.py  an edge node's rollbacks, model health, rollout group (the trainer reads them)
    edge_loop.py   an edge node's fleet, drift, machines, estimate, buffer, shipper
    trainer.py     the trainer's phase and stage, last gate decision, staged rollout
    simulator.py   the simulator's machines
    reader.py      `DetailReader`: one status's parts on demand, never an exception

Pure: no clock, socket or thread; every reader thread may call it (paho's, the UI's).

A detail carries `v` (`DETAIL_VERSION`, 1). A detail without `v` comes from a node built before
the version existed and is read as version 1 (its parts had the same shapes); version 2
(`TYPES_DETAIL_VERSION`) is version 1 plus `types`, written only by an edge node that serves
another machine type than the built-in one; a detail whose `v` is anything else is refused
whole. Schemas: protocol/README.md, "Status detail" (tests/protocol/test_status_detail_doc.py
holds the document to these classes).

>>> from protocol import Status
>>> s = Status("pi-1", "edge", "online", "0.1.0", detail={"v": 1, "rollout_group": "canary"})
>>> DetailReader(s.detail, s.role).get(RolloutGroup).group
'canary'
"""

from ._base import (
    DETAIL_VERSION,
    DETAIL_VERSIONS,
    MAX_TEXT,
    ROLES,
    TYPES_DETAIL_VERSION,
    Part,
    clip_text,
    detail_version,
    finite_or_none,
    json_fields,
)
from .edge_loop import (
    ESTIMATE_METHODS,
    MAX_NOTE,
    BufferDetail,
    DriftDetail,
    EstimateDetail,
    FleetDetail,
    MachineDrift,
    RecentMachines,
    ShipperDetail,
)
from .edge_model import (
    HEALTH_SIGNALS,
    HEALTH_VERDICTS,
    MAX_ROLLBACKS,
    HealthFigures,
    ModelHealthDetail,
    Rollback,
    Rollbacks,
    RolloutGroup,
    TypeLoop,
    TypeLoops,
    TypeModel,
    TypeModels,
)
from .reader import DetailReader
from .simulator import SimMachine, SimMachines
from .trainer import (
    ENDED_PHASES,
    MAX_ENDED,
    ROLLOUT_PHASES,
    STAGES,
    EndedRollout,
    GateDetail,
    RolloutDetail,
    TrainerPhase,
    TrainerStage,
)

__all__ = [
    "DETAIL_VERSION",
    "DETAIL_VERSIONS",
    "ENDED_PHASES",
    "ESTIMATE_METHODS",
    "HEALTH_SIGNALS",
    "HEALTH_VERDICTS",
    "MAX_ENDED",
    "MAX_NOTE",
    "MAX_ROLLBACKS",
    "MAX_TEXT",
    "PARTS",
    "ROLES",
    "ROLLOUT_PHASES",
    "STAGES",
    "TYPES_DETAIL_VERSION",
    "BufferDetail",
    "DetailReader",
    "DriftDetail",
    "EndedRollout",
    "EstimateDetail",
    "FleetDetail",
    "GateDetail",
    "HealthFigures",
    "MachineDrift",
    "ModelHealthDetail",
    "Part",
    "RecentMachines",
    "Rollback",
    "Rollbacks",
    "RolloutDetail",
    "RolloutGroup",
    "ShipperDetail",
    "SimMachine",
    "SimMachines",
    "TrainerPhase",
    "TrainerStage",
    "TypeLoop",
    "TypeLoops",
    "TypeModel",
    "TypeModels",
    "clip_text",
    "detail_version",
    "finite_or_none",
    "json_fields",
]

PARTS: tuple[type[Part], ...] = (  # every typed part, by role
    Rollbacks,
    ModelHealthDetail,
    RolloutGroup,
    FleetDetail,
    DriftDetail,
    RecentMachines,
    EstimateDetail,
    BufferDetail,
    ShipperDetail,
    TrainerPhase,
    TrainerStage,
    GateDetail,
    RolloutDetail,
    SimMachines,
    TypeModels,
    TypeLoops,
)
