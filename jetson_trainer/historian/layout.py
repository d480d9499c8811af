"""A historian file's layout (long or wide) from its header, and the channel map onto the
model's channels."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from protocol import CHANNELS
from protocol.errors import ConfigError

from .timestamps import _norm

__all__ = [
    "FORMATS",
    "MACHINE_COLUMNS",
    "TIME_COLUMNS",
    "Layout",
    "detect_layout",
    "parse_channel_map",
]

FORMATS = ("auto", "long", "wide")


TIME_COLUMNS = ("timestamp", "time", "ts", "datetime")


MACHINE_COLUMNS = ("machine", "machine_id", "asset")


def parse_channel_map(items: Iterable[str]) -> dict[str, str]:
    """{historian name: model channel} from `old=new` items; ConfigError on a bad item.

    >>> parse_channel_map(["TT101=temperature", " Vib_RMS = vibration "])
    {'tt101': 'temperature', 'vib_rms': 'vibration'}
    >>> parse_channel_map(["flow=debit"])
    Traceback (most recent call last):
    ...
    protocol.errors.ConfigError: channel map 'flow=debit': 'debit' is not a model channel; \
map onto one of temperature, vibration, pressure, power
    """
    out: dict[str, str] = {}
    for item in items:
        old, sep, new = item.partition("=")
        if not sep or not _norm(old) or not _norm(new):
            raise ConfigError(f"channel map {item!r} is not OLD=NEW (e.g. TT101=temperature)")
        if _norm(new) not in CHANNELS:
            raise ConfigError(
                f"channel map {item!r}: {new.strip()!r} is not a model channel; map onto one "
                f"of {', '.join(CHANNELS)}"
            )
        out[_norm(old)] = _norm(new)
    return out


@dataclass(frozen=True, slots=True)
class Layout:
    """Where the columns are: `fmt` "long" (channel + value columns) or "wide".

    `columns` (wide): (column index, header name, channel index or None if unknown).
    """

    fmt: str
    time: int
    machine: int
    channel: int = -1
    value: int = -1
    columns: tuple[tuple[int, str, int | None], ...] = ()

    @property
    def unknown_columns(self) -> list[str]:
        """Wide columns that name no model channel (their cells are refused)."""
        return [name for _, name, ch in self.columns if ch is None]


def detect_layout(
    header: Sequence[object], fmt: str = "auto", channel_map: Mapping[str, str] | None = None
) -> Layout:
    """The layout of a table from its header; ConfigError naming what is missing.

    >>> detect_layout(["Timestamp", "machine", "channel", "value"]).fmt
    'long'
    >>> w = detect_layout(["time", "machine", "temperature", "TT2"], channel_map={"tt2": "power"})
    >>> w.fmt, w.columns
    ('wide', ((2, 'temperature', 0), (3, 'TT2', 3)))
    """
    if fmt not in FORMATS:
        raise ConfigError(f"format {fmt!r} is not one of {FORMATS}")
    names = [_norm(h) for h in header]
    cmap = channel_map or {}

    def find(options: tuple[str, ...], what: str) -> int:
        for option in options:
            if option in names:
                return names.index(option)
        raise ConfigError(
            f"header {[str(h) for h in header][:12]} has no {what} column (one of "
            f"{', '.join(options)}); long files need timestamp, machine, channel, value; wide "
            "files timestamp, machine and one column per channel"
        )

    time = find(TIME_COLUMNS, "time")
    machine = find(MACHINE_COLUMNS, "machine")
    is_long = "channel" in names and "value" in names
    if fmt == "long" or (fmt == "auto" and is_long):
        return Layout(
            "long", time, machine, find(("channel",), "channel"), find(("value",), "value")
        )
    columns = tuple(
        (i, str(header[i]).strip().lstrip("\ufeff"), _channel_index(names[i], cmap))
        for i in range(len(names))
        if i not in (time, machine)
    )
    if not columns:
        raise ConfigError(
            f"header {[str(h) for h in header][:12]} has no channel columns; a wide file has "
            f"timestamp, machine and one column per channel ({', '.join(CHANNELS)})"
        )
    return Layout("wide", time, machine, columns=columns)


def _channel_index(name: str, cmap: Mapping[str, str]) -> int | None:
    name = cmap.get(name, name)
    return CHANNELS.index(name) if name in CHANNELS else None
