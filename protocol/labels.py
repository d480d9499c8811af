r"""Maintenance label events: what a technician found on a machine, and for which time.

A label event says "machine M was in class C from `from` to `to`" (`to` null: until further
notice). pi_edge applies it to the windows of M it still holds from that interval and to every
new window inside it, and ships them as labeled windows; the trainer learns from them like from
any label. JSON version 1 on `{prefix}/labels`, QoS 1, not retained (protocol/README.md,
"Label events"). Any MQTT client can send one:

    mosquitto_pub -t edgeloop/labels -q 1 -m \
      '{"v":1,"machine":"m01","class":"bearing_fault","from":"2026-11-24T08:00:00Z"}'

Times are seconds since the epoch (a number) or RFC 3339 text with a zone ("Z" or "+01:00").
`id` names the label: an event with the id of an earlier one replaces it (how an open label is
closed or corrected), `"action": "cancel"` withdraws it. Without an id the label's id is
"<machine>@<from in ms>", so re-sending the same machine and start with a `to` closes it.

>>> e = LabelEvent.from_json(b'{"v":1,"machine":"m01","class":"bearing_fault",'
...                          b'"from":"2026-11-24T08:00:00Z"}')
>>> e.label_id, e.cls, e.start, e.end
('m01@1795507200000', 'bearing_fault', 1795507200.0, None)
>>> LabelEvent.from_json(e.to_json()) == e
True
>>> for bad in (b'{"v":2}', b'{"v":1,"machine":"m01","class":"a/b","from":1}',
...             b'{"v":1,"machine":"m01","class":"normal","from":5,"to":4}',
...             b'{"v":1,"machine":"m01","class":"normal","from":"yesterday"}', b"[]"):
...     try:
...         LabelEvent.from_json(bad)
...     except PayloadError as exc:
...         print(exc.kind)
bad_version
bad_field
bad_field
bad_field
bad_json
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ._json import loads, need_number, need_str, short
from .errors import PayloadError
from .names import check_name
from .topics import check_id

__all__ = [
    "ACTIONS",
    "LABEL_VERSION",
    "MAX_LABEL_BYTES",
    "LabelEvent",
    "parse_time",
    "parse_when",
]

LABEL_VERSION = 1
MAX_LABEL_BYTES = 2048  # an event is ~150 bytes
ACTIONS = ("set", "cancel")
MIN_UNIX_S = 0.0
MAX_UNIX_S = float(1 << 32)  # year 2106
MAX_SOURCE_CHARS = 128
_FIELDS = frozenset({"v", "id", "machine", "class", "from", "to", "action", "source", "ts"})
_REQUIRED = frozenset({"v", "machine", "class", "from"})
_ID = re.compile(r"[A-Za-z0-9_.:@-]{1,96}")
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?([Zz]|[+-]\d{2}:?\d{2})"
)


def _bad(msg: str) -> PayloadError:
    return PayloadError(msg, kind="bad_field")


def parse_time(value: object, what: str) -> float:
    """Seconds since the epoch from a number or RFC 3339 text with a zone; PayloadError else.

    >>> parse_time("2026-11-24T09:00:00+01:00", "from"), parse_time(1.5, "from")
    (1795507200.0, 1.5)
    >>> parse_time("2026-11-24 08:00", "to")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    protocol.errors.PayloadError: to '2026-11-24 08:00' is not ... with a zone ...
    """
    if isinstance(value, str):
        text = value.strip()
        if not _RFC3339.fullmatch(text):
            raise _bad(
                f"{what} {short(value)} is not seconds since the epoch or an RFC 3339 time "
                "with a zone (2026-11-24T08:00:00Z, 2026-11-24T09:00:00+01:00)"
            )
        frac = re.search(r"\.(\d+)", text)
        whole = re.sub(r"\.\d+", "", text).replace("z", "Z").replace("Z", "+00:00")
        try:
            dt = datetime.fromisoformat(whole)
        except ValueError as exc:
            raise _bad(f"{what} {short(value)} is not a valid time: {exc}") from exc
        seconds = dt.timestamp() + (float("0." + frac.group(1)) if frac else 0.0)
    else:
        seconds = need_number(value, what, MIN_UNIX_S, MAX_UNIX_S)
    if not (math.isfinite(seconds) and MIN_UNIX_S <= seconds <= MAX_UNIX_S):
        raise _bad(f"{what} {short(value)} is outside 1970..2106")
    return float(seconds)


_RELATIVE = re.compile(r"(?:now)?-(\d+(?:\.\d+)?)([smhd])")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_when(text: str, now: float) -> float:
    """A command line's time: "now", "now-15m" or "-15m" (s, m, h, d before `now`), epoch
    seconds or RFC 3339 ("now-15m" because argparse takes "--from -15m" for an option).

    >>> parse_when("now", 1000.0), parse_when("now-2m", 1000.0), parse_when("1700000000", 0.0)
    (1000.0, 880.0, 1700000000.0)
    """
    text = text.strip()
    if text == "now":
        return now
    relative = _RELATIVE.fullmatch(text)
    if relative:
        return parse_time(now - float(relative.group(1)) * _UNIT_S[relative.group(2)], text)
    try:
        return parse_time(float(text), "time")
    except ValueError:
        return parse_time(text, "time")


@dataclass(frozen=True, slots=True)
class LabelEvent:
    """Machine `machine` was in class `cls` from `start` to `end` (None: open), in s.

    `action` "set" adds or replaces the label `label_id`; "cancel" withdraws it (windows already
    shipped with it keep it: the trainer has them). `source` says who labeled (free text), `ts`
    when the event was sent (optional).
    """

    machine: str
    cls: str
    start: float
    end: float | None = None
    label_id: str = ""
    action: str = "set"
    source: str | None = None
    ts: float | None = None

    def __post_init__(self) -> None:
        check_id(self.machine)
        try:  # any class name; the machine's type decides whether it has it (or may add it)
            check_name(self.cls, "label class")
        except PayloadError as exc:
            raise _bad(str(exc)) from None
        object.__setattr__(self, "start", parse_time(self.start, "label from"))
        if self.end is not None:
            end = parse_time(self.end, "label to")
            if end <= self.start:
                raise _bad(f"label to ({end}) must be after from ({self.start})")
            object.__setattr__(self, "end", end)
        if not self.label_id:
            object.__setattr__(self, "label_id", f"{self.machine}@{round(self.start * 1000)}")
        if not isinstance(self.label_id, str) or not _ID.fullmatch(self.label_id):
            raise _bad(f"label id {short(self.label_id)} must match {_ID.pattern}")
        if self.action not in ACTIONS:
            raise _bad(f"label action {short(self.action)} must be one of {list(ACTIONS)}")
        if self.source is not None:
            need_str(self.source, "label source", MAX_SOURCE_CHARS)
        if self.ts is not None:
            object.__setattr__(self, "ts", parse_time(self.ts, "label ts"))

    def covers(self, t: float) -> bool:
        """Whether time `t` (s) lies in [start, end) (open end: every t ≥ start)."""
        return self.start <= t and (self.end is None or t < self.end)

    def to_json(self) -> bytes:
        obj: dict[str, Any] = {
            "v": LABEL_VERSION,
            "id": self.label_id,
            "machine": self.machine,
            "class": self.cls,
            "from": self.start,
            "to": self.end,
            "action": self.action,
        }
        if self.source is not None:
            obj["source"] = self.source
        if self.ts is not None:
            obj["ts"] = self.ts
        return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> LabelEvent:
        """Parse and check a label event; PayloadError (with .kind) says what was wrong."""
        obj = loads(data, "label event", max_bytes=MAX_LABEL_BYTES, max_depth=1)
        if not isinstance(obj, dict):
            raise PayloadError(f"label event must be a JSON object, got {short(obj)}", "bad_json")
        version = obj.get("v")
        if type(version) is not int or version != LABEL_VERSION:
            raise PayloadError(
                f"label event version {short(version)}, this build reads {LABEL_VERSION}",
                kind="bad_version",
            )
        missing = _REQUIRED - set(obj)
        unknown = set(obj) - _FIELDS
        if missing or unknown:
            raise _bad(
                f"label event: missing {sorted(missing)}, unknown {sorted(unknown)}; fields are "
                f"{sorted(_FIELDS)}"
            )
        machine, label_class = obj["machine"], obj["class"]
        if not isinstance(machine, str) or not isinstance(label_class, str):
            raise _bad("label event machine and class must be strings")
        label_id = obj.get("id")
        if label_id is None:  # absent or null: the default, machine@from
            label_id = ""
        elif not isinstance(label_id, str) or not label_id:
            raise _bad(f"label id {short(label_id)} must be a non-empty string (or left out)")
        try:
            return cls(
                machine,
                label_class,
                obj["from"],
                obj.get("to"),
                label_id,
                obj.get("action", "set"),
                obj.get("source"),
                obj.get("ts"),
            )
        except ValueError as exc:  # check_id's
            raise _bad(f"label event: {exc}") from exc
