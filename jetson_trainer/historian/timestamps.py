"""Historian times → Unix seconds: numbers by magnitude (s, ms, µs, ns), ISO 8601 text (UTC
without a zone)."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

__all__ = ["parse_timestamp"]

_MS_FROM, _US_FROM, _NS_FROM = 1e11, 1e14, 1e17
_MAX_S = 1e11  # year 5138: anything later is a unit mistake, refused


_FRACTION = re.compile(r"\.(\d+)")


def _norm(name: object) -> str:
    """A header or channel name compared case- and space-insensitively (BOM dropped)."""
    return str(name).strip().lstrip("\ufeff").strip().lower()


def parse_timestamp(value: object) -> float:
    """Seconds since the epoch (UTC) from a number (unit by magnitude) or ISO 8601 text.

    Raises ValueError saying what was seen. Naive times (no zone) are UTC.

    >>> [parse_timestamp(v) for v in (1700000000, "1700000000000", 1.7e15, "1700000000000000000")]
    [1700000000.0, 1700000000.0, 1700000000.0, 1700000000.0]
    >>> parse_timestamp("2023-11-14T22:13:20Z"), parse_timestamp("2023-11-14 23:13:20.5+01:00")
    (1700000000.0, 1700000000.5)
    >>> parse_timestamp("2023-11-14T22:13:20")  # no zone: UTC
    1700000000.0
    >>> parse_timestamp("yesterday")
    Traceback (most recent call last):
    ...
    ValueError: time 'yesterday' is neither a number (s, ms, µs or ns since the epoch) nor ISO 8601
    """
    if isinstance(value, datetime):
        dt = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return _in_range(dt.timestamp(), value)
    if isinstance(value, bool) or value is None:
        raise ValueError(f"time {value!r} is not a time")
    if isinstance(value, int | float):
        return _in_range(_from_number(value), value)
    text = str(value).strip()
    number: int | float
    try:
        number = int(text)
    except ValueError:
        try:
            number = float(text)
        except ValueError:
            return _in_range(_from_iso(text), value)
    return _in_range(_from_number(number), value)


def _from_number(number: float) -> float:
    size = abs(number)
    if size < _MS_FROM:
        return float(number)
    if size < _US_FROM:
        return number / 1e3
    if size < _NS_FROM:
        return number / 1e6
    return number / 1e9


def _from_iso(text: str) -> float:
    frac = _FRACTION.search(text)
    whole = _FRACTION.sub("", text, count=1) if frac else text
    try:
        dt = datetime.fromisoformat(whole.replace("z", "Z"))
    except ValueError:
        raise ValueError(
            f"time {text[:40]!r} is neither a number (s, ms, µs or ns since the epoch) nor ISO 8601"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp() + (float("0." + frac.group(1)) if frac else 0.0)


def _in_range(seconds: float, seen: object) -> float:
    if not (math.isfinite(seconds) and 0.0 <= seconds < _MAX_S):
        raise ValueError(f"time {str(seen)[:40]!r} is not between 1970 and the year 5138")
    return float(seconds)
