"""The part of the simulator's status detail the console shows: each machine's drift.

>>> m = SimMachines({"m01": SimMachine("normal", "offset temperature=5.0", 3)})
>>> m.to_json_obj()
{'m01': {'state': 'normal', 'drift': 'offset temperature=5.0', 'labels': 3}}
>>> SimMachines.from_obj(m.to_json_obj()) == m
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import PayloadError
from ._base import (
    MAX_CLASS_CHARS,
    need_count,
    need_entries,
    need_id,
    need_object,
    need_text,
)

__all__ = ["MAX_SIM_MACHINES", "SimMachine", "SimMachines"]

MAX_SIM_MACHINES = 4096


@dataclass(frozen=True, slots=True)
class SimMachine:
    """One simulated machine: its true class now (`state`), the drift it injects ("off", or the
    mode and its parameters, e.g. "offset temperature=5.0") and the labeled windows it sent."""

    state: str
    drift: str
    labels: int

    def __post_init__(self) -> None:
        need_text(self.state, "simulated machine state", MAX_CLASS_CHARS)
        need_text(self.drift, "simulated machine drift")
        need_count(self.labels, "simulated machine labels")

    @property
    def drifting(self) -> bool:
        return self.drift != "off"

    def to_json_obj(self) -> dict[str, Any]:
        return {"state": self.state, "drift": self.drift, "labels": self.labels}

    @classmethod
    def from_obj(cls, obj: object, what: str = "simulated machine") -> SimMachine:
        o = need_object(obj, what, ("state", "drift", "labels"))
        return cls(o["state"], o["drift"], o["labels"])


@dataclass(frozen=True, slots=True)
class SimMachines:
    """`detail.machines` of the simulator: its machines by id."""

    KEY: ClassVar[str] = "machines"
    ROLE: ClassVar[str] = "simulator"

    machines: dict[str, SimMachine]

    def __post_init__(self) -> None:
        if not isinstance(self.machines, dict) or len(self.machines) > MAX_SIM_MACHINES:
            raise PayloadError(
                f"simulator machines must map at most {MAX_SIM_MACHINES} ids", kind="bad_field"
            )
        for machine, row in self.machines.items():
            need_id(machine, "a simulated machine id")
            if not isinstance(row, SimMachine):
                raise PayloadError("simulator machines must hold SimMachine", kind="bad_field")

    def to_json_obj(self) -> dict[str, Any]:
        return {m: row.to_json_obj() for m, row in self.machines.items()}

    @classmethod
    def from_obj(cls, obj: object) -> SimMachines:
        return cls(need_entries(obj, "machines", SimMachine.from_obj, MAX_SIM_MACHINES))
