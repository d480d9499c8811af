"""Machine types: what a kind of machine measures and what can be wrong with it, as data.

A site has several kinds of machine. Each is a `MachineType`: its channels (name, unit, native
sample rate), the rate its windows are sampled at, window length and hop, its class names (one of
them the healthy one), whether technicians may add classes (`open_classes`: a type that starts
with no fault history), and which machines belong to it (ids or glob patterns). A site declares
its types once, in a TOML site file (`Site.from_toml`); the trainer puts each model's type into
its signed manifest, and a node takes a type's vocabulary only from a model it verified. The seed
machine is the built-in type `default` (`DEFAULT_TYPE`): with no site file every machine is one.

Class and channel names are short strings of printable characters: `"3"` is a name, never an
index. A type has 1..64 classes and 1..16 channels.

>>> fan = MachineType("fan", (Channel("vib_x", "g"), Channel("vib_y", "g")), sample_hz=1000.0,
...                   window_length=256, classes=("normal", "imbalance"), machines=("fan-*",))
>>> fan.input_shape, fan.normal, fan.class_of("imbalance"), fan.unit_of("vib_y")
((256, 2), 'normal', 1, 'g')
>>> fan.class_of("3")
Traceback (most recent call last):
...
protocol.errors.PayloadError: class '3' is not one of machine type fan's classes: normal, imbalance
>>> site = Site((fan, DEFAULT_TYPE))
>>> site.type_of("fan-07").name, site.type_of("m01").name
('fan', 'default')
"""

from __future__ import annotations

import fnmatch
import math
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError, PayloadError
from .names import MAX_NAME_CHARS, check_name
from .schema import CHANNELS, CLASSES, UNITS, WINDOW_LENGTH
from .topics import DEFAULT_TYPE_NAME, check_id
from .window import MAX_LABEL, MAX_SAMPLES, Window

__all__ = [
    "DEFAULT_TYPE",
    "DEFAULT_TYPE_NAME",
    "MAX_CHANNELS",
    "MAX_CLASSES",
    "MAX_NAME_CHARS",
    "MAX_WINDOW_SAMPLES",
    "Channel",
    "MachineType",
    "Site",
    "check_name",
]

MAX_CLASSES = MAX_LABEL + 1  # a binary window's label byte indexes them
MAX_CHANNELS = 16
MAX_UNIT_CHARS = 16
MAX_PATTERNS = 1024
RESERVED_CLASS = "anomaly"  # protocol.machine_state.ANOMALY: an anomaly model's verdict
MAX_TYPES = 64
MAX_SAMPLE_HZ = 1e6
MAX_WINDOW_SAMPLES = MAX_SAMPLES  # the binary window frame's limit (protocol.window)
_SITE_KEYS = frozenset({"version", "types"})
_TYPE_KEYS = frozenset(
    {
        "name",
        "builtin",
        "channels",
        "sample_hz",
        "window_length",
        "hop",
        "classes",
        "normal",
        "open_classes",
        "machines",
    }
)
_CHANNEL_KEYS = frozenset({"name", "unit", "sample_hz"})


def _finite(value: object, what: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{what} must be a number, got {str(value)[:40]}")
    if not math.isfinite(value) or not low <= value <= high:
        raise ConfigError(f"{what} {value} must be in {low:g}..{high:g}")
    return float(value)


def _int(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{what} must be an integer in {low}..{high}, got {str(value)[:40]}")
    return value


@dataclass(frozen=True, slots=True)
class Channel:
    """One sensor channel of a machine type: name, unit, and its native rate (None: the type's)."""

    name: str
    unit: str = ""
    sample_hz: float | None = None

    def __post_init__(self) -> None:
        try:
            check_name(self.name, "channel name")
        except PayloadError as exc:
            raise ConfigError(str(exc)) from None
        if not isinstance(self.unit, str) or len(self.unit) > MAX_UNIT_CHARS:
            raise ConfigError(
                f"channel {self.name}'s unit must be text of ≤ {MAX_UNIT_CHARS} characters"
            )
        if not self.unit.isprintable():
            raise ConfigError(f"channel {self.name}'s unit must be printable text")
        if self.sample_hz is not None:
            _finite(self.sample_hz, f"channel {self.name}'s sample_hz", 1e-6, MAX_SAMPLE_HZ)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "unit": self.unit}
        if self.sample_hz is not None:
            out["sample_hz"] = self.sample_hz
        return out


@dataclass(frozen=True, slots=True)
class MachineType:
    """A kind of machine: channels, window shape, classes and members (see the module doc).

    `hop` is the samples between the starts of two windows (default: the window length, windows
    side by side); `open_classes` lets label events add a class the type does not list yet (the
    trainer grows the model's class list); `machines` are ids or glob patterns (`*`, `?`, `[…]`).
    """

    name: str
    channels: tuple[Channel, ...]
    sample_hz: float = 1.0
    window_length: int = WINDOW_LENGTH
    hop: int = 0  # 0: window_length
    classes: tuple[str, ...] = ("normal",)
    normal: str = ""  # "": the first class
    open_classes: bool = False
    machines: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        try:
            check_id(self.name, "machine type")
        except PayloadError as exc:
            raise ConfigError(str(exc)) from None
        channels = tuple(self.channels)
        if not 1 <= len(channels) <= MAX_CHANNELS:
            raise ConfigError(f"machine type {self.name} needs 1..{MAX_CHANNELS} channels")
        if not all(isinstance(c, Channel) for c in channels):
            raise ConfigError(f"machine type {self.name}'s channels must be Channel values")
        names = [c.name for c in channels]
        if len(set(names)) != len(names):
            raise ConfigError(f"machine type {self.name} names a channel twice: {names}")
        object.__setattr__(self, "channels", channels)
        _finite(self.sample_hz, f"machine type {self.name}'s sample_hz", 1e-6, MAX_SAMPLE_HZ)
        _int(self.window_length, f"machine type {self.name}'s window_length", 2, MAX_WINDOW_SAMPLES)
        hop = self.hop or self.window_length
        _int(hop, f"machine type {self.name}'s hop", 1, MAX_WINDOW_SAMPLES)
        object.__setattr__(self, "hop", hop)
        classes = tuple(self.classes)
        if not 1 <= len(classes) <= MAX_CLASSES:
            raise ConfigError(f"machine type {self.name} needs 1..{MAX_CLASSES} classes")
        try:
            for c in classes:
                check_name(c)
        except PayloadError as exc:
            raise ConfigError(f"machine type {self.name}: {exc}") from None
        if RESERVED_CLASS in classes:
            raise ConfigError(
                f"machine type {self.name}: {RESERVED_CLASS!r} is reserved for an anomaly "
                "model's verdict; name the class after what is wrong"
            )
        if len(set(classes)) != len(classes):
            raise ConfigError(f"machine type {self.name} names a class twice: {list(classes)}")
        object.__setattr__(self, "classes", classes)
        normal = self.normal or classes[0]
        if normal not in classes:
            raise ConfigError(
                f"machine type {self.name}'s normal class {normal!r} is not one of its classes "
                f"{list(classes)}"
            )
        object.__setattr__(self, "normal", normal)
        if not isinstance(self.open_classes, bool):
            raise ConfigError(f"machine type {self.name}'s open_classes must be true or false")
        patterns = tuple(self.machines)
        if len(patterns) > MAX_PATTERNS:
            raise ConfigError(f"machine type {self.name} lists more than {MAX_PATTERNS} machines")
        for p in patterns:
            _check_pattern(p, self.name)
        object.__setattr__(self, "machines", patterns)

    # -- vocabulary -------------------------------------------------------------------------
    @property
    def channel_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.channels)

    @property
    def units(self) -> dict[str, str]:
        return {c.name: c.unit for c in self.channels}

    @property
    def input_shape(self) -> tuple[int, int]:
        return (self.window_length, len(self.channels))

    def unit_of(self, channel: str) -> str:
        return self.units.get(channel, "")

    def class_of(self, name: object) -> int:
        """The index of class `name` in this type's classes; PayloadError listing them if not."""
        check_name(name)
        assert isinstance(name, str)
        if name not in self.classes:
            raise PayloadError(
                f"class {name!r} is not one of machine type {self.name}'s classes: "
                + ", ".join(self.classes),
                kind="bad_label",
            )
        return self.classes.index(name)

    def label_index(self, label: int | str) -> int:
        """The class index a window label names: a class name of this type, or an index.

        >>> DEFAULT_TYPE.label_index("drive_wear"), DEFAULT_TYPE.label_index(1)
        (2, 1)
        """
        if isinstance(label, str):
            return self.class_of(label)
        if (
            isinstance(label, bool)
            or not isinstance(label, int)
            or not 0 <= label < len(self.classes)
        ):
            raise PayloadError(
                f"window label {label!r} is not a class of machine type {self.name} "
                f"(0..{len(self.classes) - 1}: " + ", ".join(self.classes) + ")",
                kind="bad_label",
            )
        return label

    def resolve(self, window: Window) -> Window:
        """`window` with its label as this type's class index (a name resolved, an index
        checked); PayloadError (`bad_label`) listing the type's classes if it names none."""
        if window.label is None or isinstance(window.label, int):
            if window.label is not None:
                self.label_index(window.label)
            return window
        return replace(window, label=self.label_index(window.label))

    def with_classes(self, classes: Sequence[str]) -> MachineType:
        """This type with the class list `classes` (a model's, which may have grown)."""
        return replace(
            self, classes=tuple(classes), normal=self.normal if self.normal in classes else ""
        )

    def with_class(self, name: object) -> MachineType:
        """This type with class `name` after its classes, for a type with `open_classes` whose
        technician named a class it does not list (itself if it has the class). PayloadError
        (`bad_label`) for a closed type (listing its classes), a bad name or `anomaly`;
        (`too_many_classes`) when it has 64 classes already.

        >>> fan = MachineType("fan", (Channel("vib"),), classes=("ok",), open_classes=True)
        >>> fan.with_class("seal leak").classes, fan.with_class("3").class_of("3")
        (('ok', 'seal leak'), 1)
        >>> DEFAULT_TYPE.with_class("seal leak")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        protocol.errors.PayloadError: class 'seal leak' is not one of machine type default's ...
        """
        check_name(name)
        assert isinstance(name, str)
        if name in self.classes:
            return self
        if not self.open_classes:
            self.class_of(name)  # raises, listing the type's classes
        if name == RESERVED_CLASS:
            raise PayloadError(
                f"class {RESERVED_CLASS!r} is an anomaly model's verdict, never a class: name "
                "what is wrong",
                kind="bad_label",
            )
        if len(self.classes) >= MAX_CLASSES:
            raise PayloadError(
                f"machine type {self.name} has {MAX_CLASSES} classes already, the most a type "
                f"may have; class {name!r} is refused",
                kind="too_many_classes",
            )
        return replace(self, classes=(*self.classes, name))

    def with_known(self, names: Iterable[str]) -> MachineType:
        """This type with the names of `names` (a verified model's classes) it lacks after its
        own, in their order and up to 64 classes: a class list only grows at its end, so an
        index once written (a kept window's label) keeps naming the same class.

        >>> fan = MachineType("fan", (Channel("vib"),), classes=("ok", "loose"))
        >>> fan.with_known(("ok", "seal leak", "loose")).classes
        ('ok', 'loose', 'seal leak')
        """
        add = [n for n in dict.fromkeys(names) if n not in self.classes]
        if not add:
            return self
        return replace(self, classes=(*self.classes, *add)[:MAX_CLASSES])

    # -- membership -------------------------------------------------------------------------
    def specificity(self, machine: str) -> int:
        """How specifically this type names `machine`: 10**6 for its id, else the length of the
        longest pattern that matches (0: not a member)."""
        best = 0
        for p in self.machines:
            if p == machine:
                return 10**6
            if _is_glob(p) and fnmatch.fnmatchcase(machine, p):
                best = max(best, len(p.replace("*", "")) + 1)
        return best

    # -- wire form --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "channels": [c.to_dict() for c in self.channels],
            "sample_hz": self.sample_hz,
            "window_length": self.window_length,
            "hop": self.hop,
            "classes": list(self.classes),
            "normal": self.normal,
            "open_classes": self.open_classes,
            "machines": list(self.machines),
        }

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any], where: str = "machine type") -> MachineType:
        """A type from its TOML/JSON form; ConfigError naming what is wrong."""
        if not isinstance(obj, Mapping):
            raise ConfigError(f"{where} must be a table/object")
        unknown = sorted(set(obj) - _TYPE_KEYS)
        if unknown:
            raise ConfigError(f"{where} has unknown key(s) {unknown}; known: {sorted(_TYPE_KEYS)}")
        builtin = obj.get("builtin")
        if builtin is not None:
            if builtin != DEFAULT_TYPE_NAME:
                raise ConfigError(f"{where}: builtin {builtin!r}: the built-in type is 'default'")
            rest = {k: v for k, v in obj.items() if k != "builtin"}
            if set(rest) - {"machines", "name"}:
                raise ConfigError(
                    f"{where}: a builtin type takes only 'machines' (and its name 'default')"
                )
            if rest.get("name", DEFAULT_TYPE_NAME) != DEFAULT_TYPE_NAME:
                raise ConfigError(f"{where}: the builtin type's name is 'default'")
            machines = rest.get("machines", DEFAULT_TYPE.machines)
            return cls._of(DEFAULT_TYPE.to_dict() | {"machines": machines}, where)
        return cls._of(obj, where)

    @classmethod
    def _of(cls, obj: Mapping[str, Any], where: str) -> MachineType:
        try:
            raw_channels = obj["channels"]
            name = obj["name"]
        except KeyError as exc:
            raise ConfigError(f"{where} needs '{exc.args[0]}'") from None
        if not isinstance(raw_channels, list):
            raise ConfigError(f"{where}'s channels must be a list of tables")
        channels = []
        for i, raw_channel in enumerate(raw_channels[: MAX_CHANNELS + 1]):
            ch: Any = {"name": raw_channel} if isinstance(raw_channel, str) else raw_channel
            if not isinstance(ch, Mapping) or set(ch) - _CHANNEL_KEYS:
                raise ConfigError(
                    f"{where}'s channel {i} must be a name or a table of {sorted(_CHANNEL_KEYS)}"
                )
            channels.append(Channel(ch.get("name", ""), ch.get("unit", ""), ch.get("sample_hz")))
        classes = obj.get("classes", ("normal",))
        machines = obj.get("machines", ())
        for key, value in (("classes", classes), ("machines", machines)):
            if not isinstance(value, list | tuple):
                raise ConfigError(f"{where}'s {key} must be a list")
        return cls(
            name=name,
            channels=tuple(channels),
            sample_hz=obj.get("sample_hz", 1.0),
            window_length=obj.get("window_length", WINDOW_LENGTH),
            hop=obj.get("hop", 0),
            classes=tuple(classes[: MAX_CLASSES + 1]),
            normal=obj.get("normal", ""),
            open_classes=obj.get("open_classes", False),
            machines=tuple(machines[: MAX_PATTERNS + 1]),
        )


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _check_pattern(pattern: object, type_name: str) -> None:
    if not isinstance(pattern, str) or not pattern:
        raise ConfigError(f"machine type {type_name}: a machine must be an id or a pattern")
    if not _is_glob(pattern):
        try:
            check_id(pattern)
        except PayloadError as exc:
            raise ConfigError(f"machine type {type_name}: {exc}") from None
        return
    if len(pattern) > 64 or any(c in pattern for c in "/+#") or not pattern.isprintable():
        raise ConfigError(
            f"machine type {type_name}: pattern {pattern[:80]!r} must be ≤ 64 printable "
            "characters without '/', '+' or '#'"
        )


DEFAULT_TYPE = MachineType(
    name=DEFAULT_TYPE_NAME,
    channels=tuple(Channel(c, UNITS[c]) for c in CHANNELS),
    sample_hz=1.0,
    window_length=WINDOW_LENGTH,
    classes=CLASSES,
    normal=CLASSES[0],
    open_classes=False,
    machines=("*",),
)


@dataclass(frozen=True, slots=True)
class Site:
    """The machine types of one site, and which type each machine is.

    A machine is of the type that names its id; else of the type with the longest matching
    pattern; ties go to the type listed first. With no site file, a site has `DEFAULT_TYPE`
    alone, whose pattern `*` takes every machine.
    """

    types: tuple[MachineType, ...] = (DEFAULT_TYPE,)
    _by_name: dict[str, MachineType] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        types = tuple(self.types)
        if not 1 <= len(types) <= MAX_TYPES:
            raise ConfigError(f"a site declares 1..{MAX_TYPES} machine types")
        names = [t.name for t in types]
        if len(set(names)) != len(names):
            raise ConfigError(f"a site names a machine type twice: {names}")
        object.__setattr__(self, "types", types)
        self._by_name.update({t.name: t for t in types})

    def __getitem__(self, name: str) -> MachineType:
        try:
            return self._by_name[name]
        except KeyError:
            raise ConfigError(
                f"machine type {name!r} is not declared; this site has: {', '.join(self.names)}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.types)

    def type_of(self, machine: str) -> MachineType | None:
        """The type `machine` belongs to (see the class doc), or None if no type names it."""
        return best_type(self.types, machine)

    def to_dict(self) -> dict[str, Any]:
        return {"version": 1, "types": [t.to_dict() for t in self.types]}

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any], source: str = "site file") -> Site:
        if not isinstance(obj, Mapping):
            raise ConfigError(f"{source} must be a TOML table")
        unknown = sorted(set(obj) - _SITE_KEYS)
        if unknown:
            raise ConfigError(
                f"{source} has unknown key(s) {unknown}; a site file holds [[types]] tables"
            )
        version = obj.get("version", 1)
        if version != 1:
            raise ConfigError(f"{source} is version {version!r}; this build reads version 1")
        raw = obj.get("types")
        if not isinstance(raw, list) or not raw:
            raise ConfigError(f"{source} declares no machine type: add a [[types]] table")
        if len(raw) > MAX_TYPES:
            raise ConfigError(f"{source} declares more than {MAX_TYPES} machine types")
        return cls(
            tuple(
                MachineType.from_dict(t, f"{source}: [[types]] #{i + 1}") for i, t in enumerate(raw)
            )
        )

    @classmethod
    def from_toml(cls, path: Path) -> Site:
        """The site file at `path`; ConfigError saying what is wrong and where."""
        try:
            obj = tomllib.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read the site file {path}: {exc}") from None
        return cls.from_dict(obj, str(path))

    @classmethod
    def load(cls, path: Path | None) -> Site:
        """The site file at `path`, or the default site (the seed machine) for None."""
        return cls() if path is None else cls.from_toml(path)


def best_type(types: Iterable[MachineType], machine: str) -> MachineType | None:
    """The most specific of `types` for `machine` (ties: the first); None when none names it.

    >>> a = MachineType("a", (Channel("x"),), machines=("p-*",))
    >>> b = MachineType("b", (Channel("x"),), machines=("p-1*", "q"))
    >>> [getattr(best_type((a, b), m), "name", None) for m in ("p-17", "p-2", "q", "r")]
    ['b', 'a', 'b', None]
    """
    best: MachineType | None = None
    score = 0
    for t in types:
        s = t.specificity(machine)
        if s > score:
            best, score = t, s
    return best
