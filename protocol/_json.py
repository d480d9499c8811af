r"""The one bounded JSON reader every JSON decoder in `protocol` uses, and its field checks.

Python's `json` trusts its input: a 5000-digit integer raises ValueError (the interpreter's
int-digit limit), a 400-digit one becomes an int that overflows `float()`, `1e999` becomes inf,
`NaN` is accepted, deep nesting raises RecursionError, and bytes are decoded as UTF-8, -16 or -32
by guess. `loads` refuses all of these before a caller sees a value, each as a PayloadError whose
`kind` is counted by the receiving node:

    too_large   more bytes than the caller allows
    bad_utf8    not strict UTF-8
    too_deep    brackets nested deeper than `max_depth` (found by a scan, before parsing)
    bad_number  an integer of more than 20 digits or a number written with more than 40 characters
    non_finite  NaN, Infinity, or a number too large for a float (1e999)
    bad_json    anything else the JSON grammar refuses

>>> loads(b'{"seq": 7, "x": [1.5, -2], "s": "[[[\\"]]]"}', "doctest", max_bytes=100)
{'seq': 7, 'x': [1.5, -2], 's': '[[["]]]'}
>>> bad = [b"[" + b"9" * 400 + b"]", b"[1e999]", b"[NaN]", b"[" * 40 + b"]" * 40, b"\xff", b"{"]
>>> for payload in bad:
...     try:
...         loads(payload, "doctest", max_bytes=1000)
...     except PayloadError as exc:
...         print(exc.kind)
bad_number
non_finite
non_finite
too_deep
bad_utf8
bad_json

The field checks (`need_int`, `need_number`, `need_str`, `need_map`, `short`) turn a decoded
value of the wrong type or range into a PayloadError of kind "bad_field" whose message names the
field, shows the value (shortened) and what is allowed. A bool is never accepted as a number.

>>> need_int(True, "seq", 0, 9)
Traceback (most recent call last):
...
protocol.errors.PayloadError: seq must be an integer in 0..9, got True
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np

from .errors import PayloadError

MAX_DEPTH = 32
MAX_INT_DIGITS = 20  # 2**64 - 1 has 20
MAX_NUMBER_CHARS = 40  # repr() of any float64 needs at most 24

V = TypeVar("V")

_STEP = np.zeros(256, np.int8)
_STEP[[ord("["), ord("{")]] = 1
_STEP[[ord("]"), ord("}")]] = -1
_QUOTE = ord('"')
_FEW_QUOTES = 4096
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


def loads(
    data: bytes | bytearray | memoryview | str,
    what: str,
    *,
    max_bytes: int,
    max_depth: int = MAX_DEPTH,
) -> Any:
    """Parse `data` as strict UTF-8 JSON within the limits above; PayloadError otherwise.

    `what` names the message in error texts ("status", "JSON window"); `max_bytes` is the
    caller's size cap (a str counts its characters).
    """
    if len(data) > max_bytes:
        raise PayloadError(
            f"{what} is {len(data)} bytes, limit {max_bytes}; send a smaller message",
            kind="too_large",
        )
    if isinstance(data, str):
        text, raw = data, data.encode("utf-8", "surrogatepass")
    else:
        raw = bytes(data)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PayloadError(f"{what} is not UTF-8: {exc}", kind="bad_utf8") from exc
    if raw.count(b"[") + raw.count(b"{") > max_depth:
        depth = nesting_depth(raw)
        if depth > max_depth:
            raise PayloadError(
                f"{what} nests {depth} levels deep, limit {max_depth}", kind="too_deep"
            )
    try:
        return json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except json.JSONDecodeError as exc:
        raise PayloadError(f"{what} is not valid JSON: {exc}", kind="bad_json") from exc
    except RecursionError as exc:  # unreachable after the scan; kept as a backstop
        raise PayloadError(f"{what} nests too deep to parse", kind="too_deep") from exc


def nesting_depth(raw: bytes) -> int:
    r"""Deepest bracket nesting of JSON text, ignoring brackets inside strings (vectorised).

    >>> nesting_depth(b'{"a": [[1], "]]]\\"[[["], "b": {}}')
    3
    """
    if b"\\" in raw:  # drop escaped backslashes, then escaped quotes: what is left pairs up
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    if raw.count(b'"') <= _FEW_QUOTES:  # the usual case: cut the strings out in C
        chars = np.frombuffer(
            b"".join(raw.split(b'"')[::2]).translate(None, _NOT_BRACKET), np.uint8
        )
    else:  # many strings: a character is outside them after an even number of quotes
        chars = np.frombuffer(raw, np.uint8)
        chars = chars[(np.cumsum(chars == _QUOTE, dtype=np.int64) & 1) == 0]
    steps = _STEP[chars]
    if steps.size == 0:
        return 0
    return max(0, int(np.cumsum(steps, dtype=np.int64).max()))


def _int(text: str) -> int:
    if len(text) - text.startswith("-") > MAX_INT_DIGITS:
        raise PayloadError(
            f"integer {short(text)} has {len(text)} characters; at most {MAX_INT_DIGITS} "
            "digits are read",
            kind="bad_number",
        )
    return int(text)


def _float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise PayloadError(
            f"number {short(text)} is {len(text)} characters long; at most "
            f"{MAX_NUMBER_CHARS} are read",
            kind="bad_number",
        )
    value = float(text)
    if value - value != 0:
        raise PayloadError(f"number {text} does not fit a float", kind="non_finite")
    return value


def _constant(name: str) -> float:
    raise PayloadError(f"{name} is not a number edgeloop accepts", kind="non_finite")


def short(value: object, limit: int = 60) -> str:
    """repr(value), cut to `limit` characters so a hostile value cannot flood a log line.

    >>> short("x" * 100, 10)
    "'xxxxxxxx…"
    """
    if isinstance(value, list | dict | tuple) and len(value) > limit:
        return f"<{type(value).__name__} of {len(value)} items>"
    if isinstance(value, str) and len(value) > limit:
        value = value[:limit]
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _bad(what: str, expected: str, value: object) -> PayloadError:
    return PayloadError(f"{what} must be {expected}, got {short(value)}", kind="bad_field")


def need_int(value: object, what: str, lo: int, hi: int) -> int:
    """`value` if it is an int (not a bool) within lo..hi."""
    if type(value) is not int or not lo <= value <= hi:
        raise _bad(what, f"an integer in {lo}..{hi}", value)
    return value


def need_number(value: object, what: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    """float(value) if it is a finite int or float (not a bool) within lo..hi."""
    if type(value) is int or type(value) is float:
        try:
            number = float(value)
        except OverflowError:
            number = math.nan
        if math.isfinite(number) and lo <= number <= hi:
            return number
    span = "" if (lo, hi) == (-math.inf, math.inf) else f" in {lo:g}..{hi:g}"
    raise _bad(what, f"a finite number{span}", value)


def need_str(value: object, what: str, max_len: int, min_len: int = 1) -> str:
    """`value` if it is a printable str of min_len..max_len characters."""
    if not isinstance(value, str) or not min_len <= len(value) <= max_len:
        raise _bad(what, f"a string of {min_len}..{max_len} characters", value)
    if not value.isprintable():
        raise _bad(what, "printable text", value)
    return value


def need_map(
    value: object,
    what: str,
    check: Callable[[object, str], V],
    max_items: int,
    max_key: int = 64,
) -> dict[str, V]:
    """A dict of at most `max_items` str keys (1..max_key printable characters), each value
    passed through `check(value, "what[key]")`."""
    if not isinstance(value, Mapping) or len(value) > max_items:
        raise _bad(what, f"an object of at most {max_items} entries", value)
    out: dict[str, V] = {}
    for key, item in value.items():
        need_str(key, f"a key of {what}", max_key)
        out[key] = check(item, f"{what}[{key!r}]")
    return out
