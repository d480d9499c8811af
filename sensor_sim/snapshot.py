"""What the dashboard and the status message show: a plain, immutable picture of the simulator.

>>> s = Snapshot(broker="127.0.0.1:1883", connected=True, machines=(
...     MachineRow("m01", "normal", "off", 10.0, 2),))
>>> s.total_rate, s.labels_total
(10.0, 2)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class MachineRow:
    machine: str
    state: str
    drift: str
    rate: float  # windows/s over the last rate interval
    labels: int  # windows sent with a ground-truth label so far
    faults: tuple[str, ...] = ()  # the fault classes of its machine type


@dataclass(frozen=True, slots=True)
class Snapshot:
    broker: str
    connected: bool
    machines: tuple[MachineRow, ...] = ()
    target_hz: float = 0.0
    label_fraction: float = 0.0
    windows_total: int = 0
    control_ok: int = 0
    control_rejected: int = 0
    errors: Mapping[str, int] = field(default_factory=dict)
    late_ticks: int = 0
    uptime_s: float = 0.0
    prefix: str = ""
    last_event: str = ""

    @property
    def total_rate(self) -> float:
        return sum(row.rate for row in self.machines)

    @property
    def labels_total(self) -> int:
        return sum(row.labels for row in self.machines)
