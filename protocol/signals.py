r"""The signals file: which per-signal MQTT topics carry which machine's which channel.

A real plant publishes one reading per message (`plant/press3/temperature` → `48.2`, or
`{"ts": 1700000000.5, "value": 48.2}`). A signals file (TOML) maps those topics to machines and
channels; pi_edge assembles windows from them (pi_edge/intake/assembler.py) and the simulator can
publish its windows that way (`sensor_sim run --signals`). Both read the file with this module,
which is pure: parse and check the file, match a topic, parse one sample, build one sample.

    machine_type = "fan" # optional: the machine type whose channels and windows these are
    sample_hz = 1.0      # the grid samples are aligned to; a window is the model's T samples
    max_gap_s = 5.0      # a hole longer than this drops the partial window (counted)
    reorder_s = 2.0      # optional: how late a sample may arrive (default 2 samples)
    [[signal]]
    topic = "plant/{machine}/temperature"   # {machine} is exactly one topic level
    channel = "temperature"                 # a model channel; every one mapped exactly once
    value = "value"      # optional: JSON key of the number; bare numeric payloads need none
    time = "ts"          # optional: JSON key of the sample time; else the arrival time
    scale = 1.0          # optional: value * scale + offset (unit conversion)
    offset = 0.0

One file is one machine type's: its channels, its grid and its windows. A node serving several
types (a site file) takes one file per type, each naming its `machine_type`; a file that names
none is the node's first type's (a node of the built-in type alone: every file before machine
types). A type other than the built-in one is sampled at its declared `sample_hz`: the file may
leave `sample_hz` out (the type's rate is used) and may not give another one (`rate`). Files of
different types may use the same topic patterns: pi_edge gives a reading to the file of its
machine's type (pi_edge/intake/signal_types.py).

Sample times (`time` key) are numbers since the Unix epoch; the unit follows from the
magnitude: below 1e11 seconds, below 1e14 milliseconds, below 1e17 microseconds, else
nanoseconds (today is ~1.7e9 s = 1.7e12 ms = 1.7e15 µs = 1.7e18 ns). A sample belongs to grid
slot `round(t * sample_hz)`.

>>> m = SignalMap.from_dict({"sample_hz": 2.0, "signal": [
...     {"topic": "plant/{machine}/temp", "channel": "t", "value": "v", "time": "ts"},
...     {"topic": "plant/{machine}/+/power", "channel": "p", "scale": 1000.0}]},
...     channels=("t", "p"))
>>> m.filters()
['plant/+/temp', 'plant/+/+/power']
>>> m.match("plant/press3/temp"), m.match("plant/press3/hall/power"), m.match("plant/x")
(('press3', 0), ('press3', 1), None)
>>> m.parse(0, b'{"ts": 1700000000500, "v": 48.25}', arrival_s=0.0)
(1700000000.5, 48.25)
>>> m.parse(1, b"1.5", arrival_s=1700000000.0)
(1700000000.0, 1500.0)
>>> m.encode(0, 1700000000.5, 48.25)
b'{"ts":1700000000.5,"v":48.25}'
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeGuard

from ._json import loads, short
from .errors import ConfigError, PayloadError
from .schema import CHANNELS
from .sources import MAX_POINTS, MAX_SOURCES, ModbusSource, OpcUaSource, Point, Source
from .topics import check_id

__all__ = [
    "MACHINE",
    "MAX_SAMPLE_BYTES",
    "SignalMap",
    "SignalSpec",
    "read_signals_file",
    "signals_type",
    "slot_ns",
    "slot_of",
    "to_seconds",
]

MACHINE = "{machine}"  # the one topic level that names the machine
MAX_SAMPLE_BYTES = 4096  # one reading with its time: a few dozen bytes; refuse floods early
MAX_SIGNALS = 64
MAX_SAMPLE_HZ = 1000.0
MAX_GAP_S = 86_400.0
MAX_TIME_S = 9_000_000_000.0  # year 2255: slot times in ns still fit an int64
_TOP_KEYS = frozenset(
    {"machine_type", "sample_hz", "max_gap_s", "reorder_s", "signal", "opcua", "modbus"}
)
_SIGNAL_KEYS = frozenset({"topic", "channel", "value", "time", "scale", "offset"})


def to_seconds(t: float) -> float:
    """A sample time in seconds from a number in s, ms, µs or ns since the epoch (by magnitude).

    >>> [to_seconds(x) for x in (1.7e9, 1.7e12, 1.7e15, 1.7e18)]
    [1700000000.0, 1700000000.0, 1700000000.0, 1700000000.0]
    """
    a = abs(t)
    if a < 1e11:
        return t
    if a < 1e14:
        return t / 1e3
    if a < 1e17:
        return t / 1e6
    return t / 1e9


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 256 or not value.isprintable():
        raise ValueError(f"{what} must be printable text of 1..256 characters, got {short(value)}")
    return value


def _number(value: object, what: str, lo: float, hi: float, *, open_low: bool = False) -> float:
    ok = type(value) in (int, float) and math.isfinite(float(value))  # type: ignore[arg-type]
    number = float(value) if ok else math.nan  # type: ignore[arg-type]
    if not ok or number > hi or number < lo or (open_low and number == lo):
        span = f"({lo:g}, {hi:g}]" if open_low else f"[{lo:g}, {hi:g}]"
        raise ValueError(f"{what} must be a number in {span}, got {short(value)}")
    return number


@dataclass(frozen=True, slots=True)
class SignalSpec:
    """One `[[signal]]` entry: a topic pattern with one `{machine}` level, and its channel."""

    topic: str
    channel: str
    value: str | None = None
    time: str | None = None
    scale: float = 1.0
    offset: float = 0.0

    def __post_init__(self) -> None:
        levels = self.topic.split("/")
        if levels.count(MACHINE) != 1:
            raise ValueError(
                f"topic {self.topic!r} must have exactly one level '{MACHINE}' "
                "(the machine id), e.g. 'plant/{machine}/temperature'"
            )
        for level in levels:
            if level in (MACHINE, "+"):
                continue
            if not level or any(c in level for c in "#+{}") or "\x00" in level:
                raise ValueError(
                    f"topic {self.topic!r} has level {level!r}: levels are non-empty literals, "
                    f"'+' or '{MACHINE}'; '#', empty levels and other braces are not allowed"
                )

    @property
    def filter(self) -> str:
        """The MQTT subscription filter: `{machine}` becomes `+`."""
        return self.topic.replace(MACHINE, "+")


class SignalMap:
    """A checked signals file: the grid, the gap and reorder limits, one spec per MQTT channel,
    and the plant sources (OPC UA servers, Modbus devices; protocol/sources.py).

    `signals[i]` carries channel `channels.index(signals[i].channel)`; `channel_of[i]` is that
    index, so an assembler indexes arrays by it. A reading's index runs over the MQTT signals
    first, then every source's points in file order (`points`): `columns[index]` is its
    channel's index, `reading_indices(k)` the indices of source k's points.

    Without sources every channel is mapped by exactly one `[[signal]]`. With sources a channel
    may come from MQTT for every machine, or from a source point per machine: every machine a
    point names must have each channel from a `[[signal]]` or from one point of its own.
    """

    def __init__(
        self,
        signals: Sequence[SignalSpec],
        channels: Sequence[str] = CHANNELS,
        *,
        sample_hz: float = 1.0,
        max_gap_s: float = 5.0,
        reorder_s: float | None = None,
        sources: Sequence[Source] = (),
        machine_type: str | None = None,
    ) -> None:
        self.machine_type = machine_type  # the file's `machine_type` (None: the node's first)
        self.sample_hz = _number(sample_hz, "sample_hz", 0.0, MAX_SAMPLE_HZ, open_low=True)
        self.max_gap_s = _number(max_gap_s, "max_gap_s", 0.0, MAX_GAP_S)
        self.reorder_s = (
            2.0 / self.sample_hz
            if reorder_s is None
            else _number(reorder_s, "reorder_s", 0.0, MAX_GAP_S)
        )
        self.signals = tuple(signals)
        self.channels = tuple(channels)
        self.sources = tuple(sources)
        if len(self.signals) > MAX_SIGNALS:
            raise ValueError(f"a signals file has at most {MAX_SIGNALS} [[signal]] entries")
        if not self.signals and not self.sources:
            raise ValueError("no [[signal]], [[opcua]] or [[modbus]] entries; map every channel")
        mapped = [s.channel for s in self.signals]
        unknown = sorted({c for c in mapped if c not in self.channels})
        twice = sorted({c for c in mapped if mapped.count(c) > 1})
        missing = [] if self.sources else [c for c in self.channels if c not in mapped]
        if unknown or twice or missing:
            problems = []
            if unknown:
                problems.append(f"unknown channel(s) {unknown}")
            if twice:
                problems.append(f"channel(s) mapped more than once {twice}")
            if missing:
                problems.append(f"channel(s) not mapped {missing}")
            raise ValueError(
                f"{'; '.join(problems)}: map each of the model's channels {list(self.channels)} "
                "by exactly one [[signal]]"
            )
        topics = [s.topic for s in self.signals]
        if len(set(topics)) != len(topics):
            raise ValueError(f"a topic pattern appears twice in {topics}; each must be unique")
        self.channel_of = tuple(self.channels.index(s.channel) for s in self.signals)
        self.points: tuple[Point, ...] = tuple(p for src in self.sources for p in src.points)
        self._check_sources(set(mapped))
        self.columns = self.channel_of + tuple(self.channels.index(p.channel) for p in self.points)
        starts = [len(self.signals)]
        for src in self.sources:
            starts.append(starts[-1] + len(src.points))
        self._starts = starts
        # matcher: per spec (level count, machine level, the literal levels to compare)
        self._match: list[tuple[int, int, tuple[tuple[int, str], ...]]] = []
        for s in self.signals:
            levels = s.topic.split("/")
            literal = tuple((i, lv) for i, lv in enumerate(levels) if lv not in (MACHINE, "+"))
            self._match.append((len(levels), levels.index(MACHINE), literal))

    def _check_sources(self, mqtt: set[str]) -> None:
        if len(self.sources) > MAX_SOURCES:
            raise ValueError(f"a signals file names at most {MAX_SOURCES} [[opcua]]/[[modbus]]")
        if len(self.points) > MAX_POINTS:
            raise ValueError(
                f"{len(self.points)} source points (node ids and registers); at most {MAX_POINTS}"
            )
        names = [src.name for src in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"two sources share a name in {names}; give each its own 'name'")
        unknown = sorted({p.channel for p in self.points} - set(self.channels))
        if unknown:
            raise ValueError(
                f"source point(s) map unknown channel(s) {unknown}; the model's channels are "
                f"{list(self.channels)}"
            )
        per_machine: dict[str, list[str]] = {}
        for p in self.points:
            per_machine.setdefault(p.machine, []).append(p.channel)
        for machine, chans in per_machine.items():
            twice = sorted({c for c in chans if chans.count(c) > 1})
            if twice:
                raise ValueError(
                    f"machine {machine!r} has channel(s) {twice} from more than one source point"
                )
            missing = [c for c in self.channels if c not in chans and c not in mqtt]
            if missing:
                raise ValueError(
                    f"machine {machine!r} has no source point and no [[signal]] for channel(s) "
                    f"{missing}: its windows could never be complete"
                )

    def reading_indices(self, source: int) -> range:
        """The reading indices of source `source`'s points (for `columns` and the assembler).

        >>> from protocol.sources import ModbusSource
        >>> src = ModbusSource.from_dict({"host": "h", "register": [
        ...     {"machine": "m1", "channel": "a", "address": 0},
        ...     {"machine": "m1", "channel": "b", "address": 1}]}, 0)
        >>> m = SignalMap([SignalSpec("x/{machine}/a", "a")], ("a", "b"), sources=[src])
        >>> m.reading_indices(0), m.columns
        (range(1, 3), (0, 0, 1))
        """
        return range(self._starts[source], self._starts[source + 1])

    # ---- reading the file ----------------------------------------------------------------
    @classmethod
    def from_toml(cls, path: Path, channels: Sequence[str] = CHANNELS) -> SignalMap:
        """Read and check a signals file; ConfigError naming the file and what is wrong."""
        return cls.from_dict(read_signals_file(path), channels, source=str(path))

    @classmethod
    def from_dict(
        cls,
        obj: Mapping[str, Any],
        channels: Sequence[str] = CHANNELS,
        *,
        source: str = "signals",
        rate: float | None = None,
    ) -> SignalMap:
        """A SignalMap from a parsed TOML document; unknown keys are refused (ConfigError).

        `channels` are the file's machine type's; `rate`, if given, is the type's declared
        sample rate: the grid's, which the file may leave out but not contradict.

        >>> doc = {"machine_type": "fan", "signal": [{"topic": "f/{machine}/x", "channel": "x"}]}
        >>> m = SignalMap.from_dict(doc, ("x",), rate=1000.0)
        >>> m.machine_type, m.sample_hz
        ('fan', 1000.0)
        >>> try:
        ...     SignalMap.from_dict({**doc, "sample_hz": 50.0}, ("x",), rate=1000.0)
        ... except ConfigError as exc:
        ...     print(str(exc).split(": ", 1)[1][:66])
        sample_hz 50.0 is not machine type fan's sample_hz 1000 (its windo
        """
        try:
            unknown = sorted(set(obj) - _TOP_KEYS)
            if unknown:
                raise ValueError(f"unknown key(s) {unknown}; allowed are {sorted(_TOP_KEYS)}")
            kind = signals_type(obj)
            entries = obj.get("signal", [])
            opcua, modbus = obj.get("opcua", []), obj.get("modbus", [])
            for key, value in (("signal", entries), ("opcua", opcua), ("modbus", modbus)):
                if not isinstance(value, list):
                    raise ValueError(f"'{key}' must be an array of tables: write [[{key}]]")
            if not entries and not opcua and not modbus:
                raise ValueError("no [[signal]] entries; add one per channel")
            sample_hz = obj.get("sample_hz", 1.0 if rate is None else rate)
            if rate is not None and sample_hz != rate:
                raise ValueError(
                    f"sample_hz {short(sample_hz)} is not machine type {kind or 'of this file'}"
                    f"'s sample_hz {rate:g} (its windows are sampled at that rate): leave "
                    f"sample_hz out or write {rate:g}"
                )
            specs = []
            for i, entry in enumerate(entries):
                specs.append(cls._spec(entry, i))
            sources: list[Source] = [OpcUaSource.from_dict(e, i) for i, e in enumerate(opcua)]
            sources += [ModbusSource.from_dict(e, i) for i, e in enumerate(modbus)]
            return cls(
                specs,
                channels,
                sample_hz=sample_hz,
                max_gap_s=obj.get("max_gap_s", 5.0),
                reorder_s=obj.get("reorder_s"),
                sources=sources,
                machine_type=kind,
            )
        except ValueError as exc:
            raise ConfigError(f"signals file {source}: {exc}") from exc

    @staticmethod
    def _spec(entry: object, i: int) -> SignalSpec:
        if not isinstance(entry, dict):
            raise ValueError(f"[[signal]] #{i + 1} must be a table")
        unknown = sorted(set(entry) - _SIGNAL_KEYS)
        if unknown:
            raise ValueError(
                f"[[signal]] #{i + 1} has unknown key(s) {unknown}; allowed are "
                f"{sorted(_SIGNAL_KEYS)}"
            )
        for key in ("topic", "channel"):
            if key not in entry:
                raise ValueError(f"[[signal]] #{i + 1} has no '{key}'")
        what = f"[[signal]] #{i + 1}"
        value, time = entry.get("value"), entry.get("time")
        return SignalSpec(
            _text(entry["topic"], f"{what} topic"),
            _text(entry["channel"], f"{what} channel"),
            None if value is None else _text(value, f"{what} value"),
            None if time is None else _text(time, f"{what} time"),
            _number(entry.get("scale", 1.0), f"{what} scale", -1e12, 1e12),
            _number(entry.get("offset", 0.0), f"{what} offset", -1e12, 1e12),
        )

    # ---- the wire --------------------------------------------------------------------------
    def filters(self) -> list[str]:
        """The subscription filters, each once, in file order."""
        return list(dict.fromkeys(s.filter for s in self.signals))

    def match(self, topic: str) -> tuple[str, int] | None:
        """(machine level, signal index) of the first pattern `topic` matches, else None.

        The machine level is returned as is: the caller checks it is a valid id.
        """
        levels = topic.split("/")
        n = len(levels)
        for index, (size, at, literal) in enumerate(self._match):
            if size == n and all(levels[i] == lv for i, lv in literal):
                return levels[at], index
        return None

    @property
    def timed(self) -> bool:
        """Whether every signal carries its sample time (else arrival times are used)."""
        return all(s.time is not None for s in self.signals)

    def parse(self, index: int, payload: bytes, arrival_s: float) -> tuple[float, float]:
        """(time in s, scaled value) of one reading of signal `index`; PayloadError otherwise.

        The payload is a bare JSON number, or an object holding the number under the signal's
        `value` key (default "value") and, if the signal has a `time` key, the sample time.
        Kinds: signal_bad_json (not JSON, too large), signal_bad_value (missing, not a number,
        NaN/inf), signal_bad_time (missing, not a number, negative or beyond year 2255).
        """
        spec = self.signals[index]
        try:
            obj = loads(payload, "signal sample", max_bytes=MAX_SAMPLE_BYTES, max_depth=2)
        except PayloadError as exc:
            kind = "signal_bad_value" if exc.kind in ("non_finite", "bad_number") else None
            raise PayloadError(str(exc), kind or "signal_bad_json") from exc
        t = arrival_s
        if isinstance(obj, dict):
            key = spec.value or "value"
            raw = obj.get(key)
            if spec.time is not None:
                stamp = obj.get(spec.time)
                if not _is_number(stamp):
                    raise PayloadError(
                        f"signal sample has {spec.time!r} = {short(stamp)}; send the sample time "
                        "as a number of s, ms, µs or ns since the epoch",
                        "signal_bad_time",
                    )
                t = to_seconds(float(stamp))
                if not 0.0 <= t <= MAX_TIME_S:
                    raise PayloadError(
                        f"signal sample time {short(stamp)} is before 1970 or after 2255",
                        "signal_bad_time",
                    )
        elif spec.time is not None:
            raise PayloadError(
                f"signal sample {short(obj)} is not a JSON object with {spec.time!r} (its time) "
                f"and {spec.value or 'value'!r}; send both, or drop 'time' from the signal",
                "signal_bad_time",
            )
        else:
            key, raw = "the payload", obj
        if not _is_number(raw):
            raise PayloadError(
                f"signal sample value ({key}) is {short(raw)}; send a finite number",
                "signal_bad_value",
            )
        value = float(raw) * spec.scale + spec.offset
        if not math.isfinite(value):
            raise PayloadError(
                f"signal sample value {short(raw)} is not finite", "signal_bad_value"
            )
        return t, value

    def encode(self, index: int, t_s: float, value: float) -> bytes:
        """The payload of one reading of signal `index` in the file's form (`parse`'s inverse).

        With neither `value` nor `time` keys: a bare number; else a JSON object. Floats are
        written with `repr`, so a float32 value reads back exactly. `scale`/`offset` are undone.
        """
        spec = self.signals[index]
        raw = (value - spec.offset) / spec.scale if (spec.scale, spec.offset) != (1, 0) else value
        if spec.value is None and spec.time is None:
            return repr(float(raw)).encode()
        parts = []
        if spec.time is not None:
            parts.append(f'"{_escape(spec.time)}":{float(t_s)!r}')
        parts.append(f'"{_escape(spec.value or "value")}":{float(raw)!r}')
        return ("{" + ",".join(parts) + "}").encode()

    def topic(self, index: int, machine: str) -> str:
        """The concrete topic of signal `index` for `machine` (`+` levels are not allowed here).

        >>> m = SignalMap([SignalSpec("a/{machine}/x", "temperature")], ("temperature",))
        >>> m.topic(0, "m01")
        'a/m01/x'
        """
        spec = self.signals[index]
        if "+" in spec.topic.split("/"):
            raise ValueError(
                f"topic pattern {spec.topic!r} has a '+' level: a publisher needs a concrete "
                "topic; write the level out"
            )
        return spec.topic.replace(MACHINE, machine)


def read_signals_file(path: Path) -> dict[str, Any]:
    """The parsed TOML of a signals file, unchecked; ConfigError if it cannot be read."""
    try:
        return tomllib.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read signals file {path}: {exc}") from exc


def signals_type(obj: Mapping[str, Any]) -> str | None:
    """The machine type a parsed signals file names (`machine_type`), None if it names none;
    ValueError if it is not a valid type name. A reader picks the type's channels with it.

    >>> signals_type({"machine_type": "fan"}), signals_type({})
    ('fan', None)
    """
    kind = obj.get("machine_type")
    if kind is None:
        return None
    if not isinstance(kind, str):
        raise ValueError(f"machine_type must be a type name, got {short(kind)}")
    try:
        return check_id(kind, "machine_type")
    except PayloadError as exc:
        raise ValueError(str(exc)) from None


def _is_number(value: object) -> TypeGuard[int | float]:
    return type(value) is int or type(value) is float  # never a bool


def _escape(key: str) -> str:
    return key.replace("\\", "\\\\").replace('"', '\\"')


def slot_of(t_s: float, sample_hz: float) -> int:
    """The grid slot of a sample time: `round(t * sample_hz)` (halves round up).

    >>> slot_of(1700000000.49, 1.0), slot_of(1700000000.5, 1.0), slot_of(10.26, 10.0)
    (1700000000, 1700000001, 103)
    """
    return math.floor(t_s * sample_hz + 0.5)


def slot_ns(slot: int, sample_hz: float) -> int:
    """The time of grid slot `slot` in ns since the epoch, exact for decimal rates (no float).

    >>> slot_ns(17_000_000_001, 10.0), slot_ns(3, 0.3)
    (1700000000100000000, 10000000000)
    """
    return math.floor(Fraction(slot) * 1_000_000_000 / Fraction(repr(float(sample_hz))))
