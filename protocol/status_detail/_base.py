"""What every status-detail part shares: the detail's version, the part protocol, field checks.

Each check takes a decoded JSON value and the name of the field (for the message) and returns
the value, or raises PayloadError (kind "bad_field", or "bad_id" for an id). Numbers keep the
type they came with (an int stays an int), so a writer's detail encodes byte for byte as it did
before it went through these classes; a bool is never a number.

>>> need_count(3, "x"), need_time(1.5, "t"), opt_version(None, "v")
(3, 1.5, None)
>>> need_version(2**31, "rollback from")
Traceback (most recent call last):
...
protocol.errors.PayloadError: rollback from must be an integer in 1..2147483647, got 2147483648
>>> clip_text("a\\nb" + "c" * 300, 8)
'a bcccc…'
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol, Self, TypeVar

from .._json import need_int, need_str, short
from ..errors import PayloadError
from ..manifest import MAX_VERSION
from ..topics import check_id

__all__ = [
    "DETAIL_VERSION",
    "DETAIL_VERSIONS",
    "MAX_COUNT",
    "MAX_IDS",
    "MAX_SECONDS",
    "MAX_TEXT",
    "ROLES",
    "TYPES_DETAIL_VERSION",
    "Part",
    "clip_text",
    "detail_version",
    "finite_or_none",
    "json_fields",
]

DETAIL_VERSION = 1  # `detail.v`; a detail without one is read as version 1's shapes
TYPES_DETAIL_VERSION = 2  # version 1 + `types`: an edge node serving other machine types
DETAIL_VERSIONS = (DETAIL_VERSION, TYPES_DETAIL_VERSION)  # what this build reads
ROLES = ("edge", "trainer", "simulator")
MAX_TEXT = 200  # characters of a reason, a phase, a note (as a status's `reason`)
MAX_COUNT = (1 << 63) - 1
MAX_SECONDS = float(1 << 32)  # times (Unix s, until 2106) and durations
MAX_IDS = 1024  # ids in one list (members, canaries, machines)
MAX_CLASS_CHARS = 64  # as a manifest's class names

T = TypeVar("T")


class Part(Protocol):
    """One sub-object of a status's `detail`: `detail[KEY]` of a node whose role is `ROLE`."""

    KEY: ClassVar[str]
    ROLE: ClassVar[str]

    def to_json_obj(self) -> Any:
        """The JSON value (dicts, lists, str, numbers, None) the writer puts at `detail[KEY]`."""
        ...

    @classmethod
    def from_obj(cls, obj: object) -> Self:
        """Check and type a decoded JSON value; PayloadError (with .kind) if it is not one."""
        ...


def detail_version(detail: object) -> int:
    """The version of a status's `detail`: 1, or 2 (version 1's parts plus `types`, from an
    edge node serving other machine types), or 0 for a detail without `v` (a node from before
    the detail had one; read as version 1's shapes). PayloadError "bad_version" for any other
    `v`, "bad_field" for a detail that is no object.

    >>> detail_version({"v": 1}), detail_version({"v": 2}), detail_version({})
    (1, 2, 0)
    >>> detail_version({"v": 3})
    Traceback (most recent call last):
    ...
    protocol.errors.PayloadError: status detail version 3, this build reads 1 or 2 (or none); ...
    """
    if not isinstance(detail, Mapping):
        raise _bad(f"status detail must be an object, got {short(detail)}")
    if "v" not in detail:
        return 0
    version = detail["v"]
    if type(version) is not int or version not in DETAIL_VERSIONS:
        raise PayloadError(
            f"status detail version {short(version)}, this build reads 1 or 2 (or "
            "none); the whole detail is ignored: upgrade this reader to the writer's release",
            kind="bad_version",
        )
    return version


def json_fields(cls: type) -> tuple[str, ...]:
    """The JSON names of a part's (or entry's) fields, in wire order.

    >>> from protocol.status_detail import Rollback
    >>> json_fields(Rollback)
    ('from', 'to', 'reason', 'ts', 'auto')
    """
    return tuple(f.metadata.get("json", f.name) for f in dataclasses.fields(cls))


# -- writer helpers ------------------------------------------------------------------------------
def clip_text(text: str, limit: int = MAX_TEXT) -> str:
    """`text` made fit for a text field: non-printable characters become spaces and it is cut
    to `limit` characters (the last one "…"). A writer passes prose it does not control
    (an exception's message, a reason naming many nodes) through it."""
    text = "".join(c if c.isprintable() else " " for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def finite_or_none(value: float | None) -> float | None:
    """`value`, or None where it is missing or not finite (a score on no data is NaN)."""
    return None if value is None or not math.isfinite(value) else value


# -- reader checks -------------------------------------------------------------------------------
def _bad(message: str) -> PayloadError:
    return PayloadError(message, kind="bad_field")


def need_object(
    value: object, what: str, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> Mapping[str, Any]:
    """`value` if it is an object with every `required` key, and no key but those and
    `optional`."""
    if not isinstance(value, Mapping):
        raise _bad(f"{what} must be an object, got {short(value)}")
    if len(value) > len(required) + len(optional):
        unknown = sorted(k for k in value if k not in required and k not in optional)
        raise _bad(f"{what} has unknown field(s) {short(unknown[:5])}; allowed: {required}")
    for key in value:
        if key not in required and key not in optional:
            raise _bad(f"{what} has unknown field {short(key)}; allowed: {required + optional}")
    missing = [k for k in required if k not in value]
    if missing:
        raise _bad(f"{what} is missing field(s) {missing}")
    return value


def need_bool(value: object, what: str) -> bool:
    if type(value) is not bool:
        raise _bad(f"{what} must be true or false, got {short(value)}")
    return value


def need_count(value: object, what: str) -> int:
    """A non-negative int (a count of windows, batches, rollbacks)."""
    return need_int(value, what, 0, MAX_COUNT)


def need_version(value: object, what: str) -> int:
    """A model version: 1..2³¹−1, the manifest's range."""
    return need_int(value, what, 1, MAX_VERSION)


def opt_version(value: object, what: str) -> int | None:
    return None if value is None else need_version(value, what)


def need_real(value: object, what: str, lo: float, hi: float) -> float:
    """A finite int or float in lo..hi, returned as it came (an int stays an int)."""
    if type(value) is int or type(value) is float:
        try:
            ok = math.isfinite(value) and lo <= value <= hi
        except OverflowError:  # an int too large for a float comparison
            ok = False
        if ok:
            return value
    raise _bad(f"{what} must be a finite number in {lo:g}..{hi:g}, got {short(value)}")


def need_time(value: object, what: str) -> float:
    """Unix seconds, 0..2³² (until 2106), or a duration in the same range."""
    return need_real(value, what, 0.0, MAX_SECONDS)


def need_timeout(value: object, what: str) -> float:
    """A time that must be > 0 (a timeout, a watch's length)."""
    if need_time(value, what) <= 0:
        raise _bad(f"{what} must be > 0, got {short(value)}")
    return value  # type: ignore[return-value]  # need_time checked it is a number


def opt_time(value: object, what: str) -> float | None:
    return None if value is None else need_time(value, what)


def opt_fraction(value: object, what: str) -> float | None:
    """None, or a number in 0..1 (a rate, an accuracy, a confidence)."""
    return None if value is None else need_real(value, what, 0.0, 1.0)


def need_text(value: object, what: str, limit: int = MAX_TEXT) -> str:
    """Printable text of 0..`limit` characters."""
    return need_str(value, what, limit, min_len=0)


def opt_text(value: object, what: str, limit: int = MAX_TEXT) -> str | None:
    return None if value is None else need_text(value, what, limit)


def one_of(value: object, what: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise _bad(f"{what} must be one of {list(allowed)}, got {short(value)}")
    return value


def need_id(value: object, what: str) -> str:
    return check_id(value, what)  # type: ignore[arg-type]  # check_id checks the type


def need_ids(value: object, what: str, limit: int = MAX_IDS) -> tuple[str, ...]:
    """A list of at most `limit` distinct ids (machine, node, group)."""
    items = need_list(value, what, limit)
    ids = tuple(need_id(v, f"an entry of {what}") for v in items)
    if len(set(ids)) != len(ids):
        raise _bad(f"{what} lists an id twice: {short(list(ids))}")
    return ids


def need_list(value: object, what: str, limit: int) -> list[Any] | tuple[Any, ...]:
    """A list (or, from a writer, a tuple) of at most `limit` entries."""
    if not isinstance(value, list | tuple) or len(value) > limit:
        raise _bad(f"{what} must be a list of at most {limit} entries, got {short(value)}")
    return value


def need_entries(
    value: object, what: str, check: Callable[[object, str], T], limit: int
) -> dict[str, T]:
    """An object of at most `limit` entries keyed by id, each value passed through `check`."""
    if not isinstance(value, Mapping) or len(value) > limit:
        raise _bad(f"{what} must be an object of at most {limit} entries, got {short(value)}")
    return {need_id(k, f"a key of {what}"): check(v, f"{what}[{k!r}]") for k, v in value.items()}
