"""Simulator control commands (`…/sim/control`): drift, faults and label rate, as JSON.

Any MQTT client can send one; the simulator validates it and logs the reason for a refusal.

>>> cmd = Command.from_json(b'{"v":1,"cmd":"drift","mode":"offset","machines":["m01"],'
...                         b'"params":{"temperature":5.0}}')
>>> cmd.mode, cmd.machines, cmd.params
('offset', ('m01',), {'temperature': 5.0})
>>> Command.from_json(cmd.to_json()) == cmd
True
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ._json import loads, need_map, need_number, short
from .errors import PayloadError
from .names import check_name
from .topics import check_id
from .window import MAX_CHANNELS

CONTROL_VERSION = 1
COMMANDS = ("drift", "fault", "repair", "labels")
DRIFT_MODES = ("off", "step", "offset", "gain", "ramp", "regime")
ALL = "all"
MAX_CONTROL_BYTES = 16 * 1024
MAX_IDS = 1024  # machines named in one command
# Physical bounds: a gain of 1e300 would make the simulator's samples infinite.
MAX_OFFSET = 1e4  # sensor units (°C, mm/s, bar, kW)
MAX_GAIN = 100.0
MAX_RAMP_S = 1e7  # ~115 days
_FIELDS = frozenset({"v", "cmd", "machines", "mode", "state", "params"})

# Allowed numeric params per drift mode; offset and gain take a value per channel name (of the
# machines' types: the simulator applies a name to the machines whose type has that channel).
_MODE_PARAMS: dict[str, frozenset[str] | None] = {
    "off": frozenset(),
    "step": frozenset(),
    "offset": None,  # channel names
    "gain": None,
    "ramp": frozenset({"duration_s"}),
    "regime": frozenset({"load"}),
}
MAX_PARAMS = MAX_CHANNELS


@dataclass(frozen=True, slots=True)
class Command:
    """One control command. `machines` is ("all",) or explicit machine ids.

    cmd "drift":  mode in DRIFT_MODES, params per mode (see protocol/README.md)
    cmd "fault":  state = a class name the machines switch to now
    cmd "repair": machines return to normal
    cmd "labels": params {"fraction": 0..1}, the share of windows carrying ground truth
    """

    cmd: str
    machines: tuple[str, ...] = (ALL,)
    mode: str | None = None
    state: str | None = None
    params: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.cmd not in COMMANDS:
            raise PayloadError(
                f"control cmd {short(self.cmd)} is not one of {COMMANDS}", "bad_field"
            )
        if not isinstance(self.machines, list | tuple) or not 1 <= len(self.machines) <= MAX_IDS:
            raise PayloadError(
                f"control 'machines' must name 1..{MAX_IDS} machines or be \"all\", "
                f"got {short(self.machines)}",
                kind="bad_field",
            )
        machines = tuple(self.machines)
        if machines != (ALL,):
            for m in machines:
                check_id(m)
        object.__setattr__(self, "machines", machines)
        for name in ("mode", "state"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise PayloadError(
                    f"control {name!r} must be a string, got {short(value)}", kind="bad_field"
                )
        if not isinstance(self.params, dict):
            raise PayloadError(
                f"control 'params' must be an object, got {short(self.params)}", kind="bad_field"
            )
        params = need_map(self.params, "control params", need_number, MAX_PARAMS)
        object.__setattr__(self, "params", params)
        getattr(self, f"_check_{self.cmd}")()

    def _check_drift(self) -> None:
        if self.mode not in DRIFT_MODES:
            raise PayloadError(f"drift mode {self.mode!r} is not one of {DRIFT_MODES}", "bad_field")
        allowed = _MODE_PARAMS[self.mode]
        if allowed is None:  # per channel: any channel names
            for name in self.params:
                try:
                    check_name(name, "drift channel")
                except PayloadError as exc:
                    raise PayloadError(str(exc), "bad_field") from None
            allowed = frozenset(self.params)
        unknown = set(self.params) - allowed
        if unknown:
            raise PayloadError(
                f"drift mode {self.mode!r} takes params {sorted(allowed) or 'none'}, "
                f"got {sorted(unknown)}",
                kind="bad_field",
            )
        if self.mode == "offset" and any(abs(v) > MAX_OFFSET for v in self.params.values()):
            raise PayloadError(
                f"offset params must be within ±{MAX_OFFSET:g} (sensor units)", kind="bad_field"
            )
        if self.mode == "gain" and any(not 0 < v <= MAX_GAIN for v in self.params.values()):
            raise PayloadError(f"gain params must be in (0, {MAX_GAIN:g}]", kind="bad_field")
        if self.mode == "ramp" and not 0 < self.params.get("duration_s", 1.0) <= MAX_RAMP_S:
            raise PayloadError(
                f"ramp duration_s must be in (0, {MAX_RAMP_S:g}] seconds", kind="bad_field"
            )
        if self.mode == "regime" and not 0.2 <= self.params.get("load", 1.3) <= 5:
            raise PayloadError("regime load must be within 0.2..5", kind="bad_field")

    def _check_fault(self) -> None:
        try:  # a class of the machine's type: the simulator checks it against the machine's
            check_name(self.state, "fault state")
        except PayloadError as exc:
            raise PayloadError(str(exc), "bad_field") from None

    def _check_repair(self) -> None:
        return None

    def _check_labels(self) -> None:
        fraction = self.params.get("fraction")
        if set(self.params) != {"fraction"} or fraction is None or not 0 <= fraction <= 1:
            raise PayloadError('labels command needs params {"fraction": 0..1}', "bad_field")

    def applies_to(self, machine: str) -> bool:
        return self.machines == (ALL,) or machine in self.machines

    def to_json(self) -> bytes:
        obj: dict[str, Any] = {
            "v": CONTROL_VERSION,
            "cmd": self.cmd,
            "machines": list(self.machines),
        }
        if self.mode is not None:
            obj["mode"] = self.mode
        if self.state is not None:
            obj["state"] = self.state
        if self.params:
            obj["params"] = self.params
        return json.dumps(obj, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> Command:
        """Parse and validate; PayloadError says what was wrong."""
        obj = loads(data, "control message", max_bytes=MAX_CONTROL_BYTES)
        if not isinstance(obj, dict):
            raise PayloadError(
                f"control message must be a JSON object, got {short(obj)}", kind="bad_json"
            )
        version = obj.get("v", CONTROL_VERSION)
        if type(version) is not int or version != CONTROL_VERSION:
            raise PayloadError(
                f"control version {short(version)}, this build reads {CONTROL_VERSION}",
                kind="bad_version",
            )
        unknown = set(obj) - _FIELDS
        if unknown:
            raise PayloadError(
                f"control message has unknown field(s) {short(sorted(unknown)[:5])}; allowed "
                f"are {sorted(_FIELDS)}",
                kind="bad_field",
            )
        machines = obj.get("machines", ALL)
        if isinstance(machines, str):
            machines = [machines]
        if not isinstance(machines, list):
            raise PayloadError(
                f"control 'machines' must be a list or \"all\", got {short(machines)}",
                kind="bad_field",
            )
        return cls(
            cmd=obj.get("cmd", ""),
            machines=tuple(machines),
            mode=obj.get("mode"),
            state=obj.get("state"),
            params=obj.get("params", {}),
        )
