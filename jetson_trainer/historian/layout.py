"""A historian file's layout (long or wide) from its header, and the channel map onto the
channels of the machine type being imported (the built-in type's unless told)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from protocol.errors import ConfigError
from protocol.machine_type import DEFAULT_TYPE

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


def parse_channel_map(
    items: Iterable[str], channels: Sequence[str] | None = DEFAULT_TYPE.channel_names
) -> dict[str, str]:
    """{historian name: channel} from `old=new` items; ConfigError on a bad item, on a name
    mapped twice, or on two names mapped onto one channel (one would silently overwrite the
    other's samples). With `channels` None only the form is checked.

    >>> parse_channel_map(["TT101=temperature", " Vib_RMS = vibration "])
    {'tt101': 'temperature', 'vib_rms': 'vibration'}
    >>> parse_channel_map(["flow=debit"])
    Traceback (most recent call last):
    ...
    protocol.errors.ConfigError: channel map 'flow=debit': 'debit' is not a channel of the \
machine type; map onto one of temperature, vibration, pressure, power
    >>> parse_channel_map(["a=power", "b=power"])
    Traceback (most recent call last):
    ...
    protocol.errors.ConfigError: channel map: a and b both map onto power; one channel takes \
one historian name
    """
    out: dict[str, str] = {}
    by_norm = {_norm(c): c for c in channels} if channels is not None else None
    for item in items:
        old, sep, new = item.partition("=")
        if not sep or not _norm(old) or not _norm(new):
            raise ConfigError(f"channel map {item!r} is not OLD=NEW (e.g. TT101=temperature)")
        target = _norm(new) if by_norm is None else by_norm.get(_norm(new))
        if target is None:
            raise ConfigError(
                f"channel map {item!r}: {new.strip()!r} is not a channel of the machine type; "
                f"map onto one of {', '.join(channels or ())}"
            )
        if _norm(old) in out:
            raise ConfigError(f"channel map: {old.strip()} is mapped twice")
        twin = next((o for o, c in out.items() if _norm(c) == _norm(target)), None)
        if twin is not None:
            raise ConfigError(
                f"channel map: {twin} and {_norm(old)} both map onto {target}; one channel "
                "takes one historian name"
            )
        out[_norm(old)] = target
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
    header: Sequence[object],
    fmt: str = "auto",
    channel_map: Mapping[str, str] | None = None,
    channels: Sequence[str] = DEFAULT_TYPE.channel_names,
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
        (i, str(header[i]).strip().lstrip("\ufeff"), _channel_index(names[i], cmap, channels))
        for i in range(len(names))
        if i not in (time, machine)
    )
    if not columns:
        raise ConfigError(
            f"header {[str(h) for h in header][:12]} has no channel columns; a wide file has "
            f"timestamp, machine and one column per channel ({', '.join(channels)})"
        )
    return Layout("wide", time, machine, columns=columns)


def _channel_index(
    name: str, cmap: Mapping[str, str], channels: Sequence[str] = DEFAULT_TYPE.channel_names
) -> int | None:
    """The index in `channels` of a (normalised) historian name, through the channel map."""
    name = _norm(cmap.get(name, name))
    return next((i for i, c in enumerate(channels) if _norm(c) == name), None)
