"""Site files (TOML) for the benches, written from the machine types' own declarations, so a
bench never spells a type's channels or classes again (the fan: sensor_sim/fan.py FAN_TYPE).

>>> import tomllib
>>> from protocol.machine_type import Site
>>> from sensor_sim.fan import FAN_TYPE
>>> Site.from_dict(tomllib.loads(site_toml([FAN_TYPE])))["fan"] == FAN_TYPE
True
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from protocol.machine_type import Channel, MachineType

__all__ = ["site_toml"]


def _channel(c: Channel) -> str:
    rate = "" if c.sample_hz is None else f", sample_hz = {float(c.sample_hz)!r}"
    return f"  {{name = {json.dumps(c.name)}, unit = {json.dumps(c.unit)}{rate}}},"


def _table(kind: MachineType) -> list[str]:
    return [
        "[[types]]",
        f"name = {json.dumps(kind.name)}",
        "channels = [",
        *(_channel(c) for c in kind.channels),
        "]",
        f"sample_hz = {float(kind.sample_hz)!r}",
        f"window_length = {kind.window_length}",
        f"hop = {kind.hop}",
        f"classes = {json.dumps(list(kind.classes))}",
        f"normal = {json.dumps(kind.normal)}",
        f"machines = {json.dumps(list(kind.machines))}",
    ]


def site_toml(types: Sequence[MachineType], builtin_machines: Sequence[str] | None = None) -> str:
    """A site file declaring `types` (and the built-in type for `builtin_machines`, if given)."""
    lines = ["version = 1"]
    if builtin_machines is not None:
        members = json.dumps(list(builtin_machines))
        lines += ["[[types]]", 'builtin = "default"', f"machines = {members}"]
    for kind in types:
        lines += _table(kind)
    return "\n".join(lines) + "\n"
