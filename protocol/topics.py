"""Every MQTT topic edgeloop uses, built under one configurable prefix.

>>> t = Topics("edgeloop/v1")
>>> t.window("m01")
'edgeloop/v1/machines/m01/window'
>>> t.machine_of(t.prediction("m07"))
'm07'
>>> t.windows(shared_group="pis")
'$share/pis/edgeloop/v1/machines/+/window'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import PayloadError

DEFAULT_PREFIX = "edgeloop/v1"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


def check_id(value: str, what: str = "machine id") -> str:
    """Return `value` if it is a valid machine/node id (1-64 of A-Z a-z 0-9 _ . -)."""
    if not isinstance(value, str) or not _ID.match(value):
        raise PayloadError(
            f"{what} {value!r} is invalid; use 1-64 characters from A-Z a-z 0-9 _ . - "
            "(no '/', '+' or '#', which are MQTT wildcards)",
            kind="bad_id",
        )
    return value


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic builders; `prefix` lets several edgeloop installs share one broker."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not self.prefix or self.prefix.startswith("/") or self.prefix.endswith("/"):
            raise ValueError(f"topic prefix {self.prefix!r} must be non-empty without edge '/'")
        if any(c in self.prefix for c in "+#"):
            raise ValueError(f"topic prefix {self.prefix!r} must not contain '+' or '#'")

    def window(self, machine: str) -> str:
        return f"{self.prefix}/machines/{check_id(machine)}/window"

    def prediction(self, machine: str) -> str:
        return f"{self.prefix}/machines/{check_id(machine)}/prediction"

    def status(self, node: str) -> str:
        return f"{self.prefix}/nodes/{check_id(node, 'node id')}/status"

    @property
    def drift_batches(self) -> str:
        return f"{self.prefix}/drift/batches"

    @property
    def model_current(self) -> str:
        return f"{self.prefix}/model/current"

    @property
    def sim_control(self) -> str:
        return f"{self.prefix}/sim/control"

    def windows(self, machine: str = "+", shared_group: str | None = None) -> str:
        """Subscription filter for windows of one machine or all (`+`), optionally shared."""
        machine_part = machine if machine == "+" else check_id(machine)
        topic = f"{self.prefix}/machines/{machine_part}/window"
        return f"$share/{check_id(shared_group, 'group')}/{topic}" if shared_group else topic

    def predictions(self) -> str:
        return f"{self.prefix}/machines/+/prediction"

    def statuses(self) -> str:
        return f"{self.prefix}/nodes/+/status"

    def machine_of(self, topic: str) -> str | None:
        """Machine id from a `.../machines/{id}/...` topic under this prefix, else None."""
        head = f"{self.prefix}/machines/"
        if not topic.startswith(head):
            return None
        rest = topic[len(head) :].split("/")
        return rest[0] if len(rest) == 2 and _ID.match(rest[0]) else None
