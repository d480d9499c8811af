"""Per-signal readings for every machine type a node serves: one signals file, grid and
assembler per type, and the type each reading goes to.

`pi_edge run --signals A,B` takes one signals file per machine type (protocol/signals.py): a
file names its type (`machine_type = "fan"`), or names none and is the node's first type's (a
node of the built-in type alone reads every file of before machine types unchanged). Each file
is checked against its own type's channels, assembled with its type's window length on its
type's grid (the type's declared `sample_hz`; the built-in type keeps the file's), and its
windows go to that type's model.

A reading is routed by its machine's type, not by which file's topic it came on: files of
different types may share topic patterns (`plant/{machine}/current` for a press and a fan), and
a reading goes to the file of its machine's type. A reading that matches only the files of
other types than its machine's is refused (PayloadError `signal_wrong_type`), as is one of a
machine no served type names (`no_type`, as for windows). A node of one type without a site
file routes nothing: every machine is its type's, as before.

Pure: `plan_signals` checks the files (ConfigError), `SignalIntake` matches and assembles; the
node holds its lock around `feed`, `forget` and `detail` (the assemblers are not thread-safe).

>>> from protocol.signals import SignalSpec
>>> plans = (
...     TypeSignals("press", SignalMap([SignalSpec("p/{machine}/force", "force")],
...                 ("force",), sample_hz=50.0), 2),
...     TypeSignals("fan", SignalMap([SignalSpec("p/{machine}/vib", "vib"),
...                 SignalSpec("p/{machine}/current", "current")], ("vib", "current"),
...                 sample_hz=10.0), 3))
>>> intake = SignalIntake(plans)
>>> intake.filters()
['p/+/force', 'p/+/vib', 'p/+/current']
>>> type_of = {"press-1": "press", "fan-1": "fan"}.get
>>> intake.match("p/fan-1/vib", type_of)
(1, 'fan-1', 0)
>>> try:
...     intake.match("p/press-1/vib", type_of)
... except PayloadError as exc:
...     print(exc.kind, "|", exc)  # doctest: +NORMALIZE_WHITESPACE
signal_wrong_type | machine 'press-1' is a press; topic 'p/press-1/vib' is a signal of the
signals file of machine type fan only: map it in press's signals file
>>> intake.match("p/x", type_of) is None
True
>>> [w.data.shape for t in (0.0, 0.02) for w in intake.feed(0, "press-1", 0, t, 1.0)]
[(2, 1)]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol import PayloadError, Window, check_id
from protocol.errors import ConfigError
from protocol.machine_type import DEFAULT_TYPE_NAME, MachineType, best_type
from protocol.signals import SignalMap, read_signals_file, signals_type

from .assembler import Assembler
from .machine_cap import DEFAULT_MAX_MACHINES

__all__ = ["SignalIntake", "TypeSignals", "plan_signals"]

TypeOf = Callable[[str], str | None]  # a machine's type name (None: no served type names it)


@dataclass(frozen=True, slots=True)
class TypeSignals:
    """One machine type's checked signals file and the window length its assembler cuts."""

    name: str
    signals: SignalMap
    window_length: int


def plan_signals(
    paths: Sequence[Path],
    types: Mapping[str, MachineType | None],
    *,
    route_all: bool = False,
) -> tuple[TypeSignals, ...]:
    """Read and check the signals files of a node serving `types` (name → what the site file or
    the node's config declares, None if only a model will tell; the first is the node's primary
    type). ConfigError naming the file and what is wrong.

    `route_all`: every machine is the primary type's (a node of the built-in type alone): source
    points are not checked against the types' members.
    """
    names = list(types)
    primary = names[0]
    out: list[TypeSignals] = []
    seen: dict[str, Path] = {}
    for path in paths:
        obj = read_signals_file(path)
        try:
            named = signals_type(obj)
        except ValueError as exc:
            raise ConfigError(f"signals file {path}: {exc}") from exc
        name = named or primary
        if name not in types:
            raise ConfigError(
                f"signals file {path} is of machine type {name!r}, which this node does not "
                f"serve (it serves {', '.join(names)}); serve it (--site, --types) or leave "
                "the file out"
            )
        kind = types[name]
        if kind is None:
            raise ConfigError(
                f"signals file {path} is of machine type {name!r}, which no site file declares: "
                "its channels and window length would only be known from its first model; "
                "declare the type in the site file (--site)"
            )
        if name in seen:
            raise ConfigError(
                f"signals files {seen[name]} and {path} are both of machine type {name!r} (a "
                f"file without machine_type is the node's first type's, {primary}); give each "
                'type one file and name its type: machine_type = "…"'
            )
        seen[name] = path
        rate = None if name == DEFAULT_TYPE_NAME else kind.sample_hz
        signals = SignalMap.from_dict(obj, kind.channel_names, source=str(path), rate=rate)
        out.append(TypeSignals(name, signals, kind.window_length))
    _check_sources(out, types, route_all, seen)
    return tuple(out)


def _check_sources(
    plans: Sequence[TypeSignals],
    types: Mapping[str, MachineType | None],
    route_all: bool,
    paths: Mapping[str, Path],
) -> None:
    """Source names are unique over the files; a source point's machine is of its file's type
    (when the declared types say which)."""
    sources = [src.name for plan in plans for src in plan.signals.sources]
    twice = sorted({n for n in sources if sources.count(n) > 1})
    if twice:
        raise ConfigError(
            f"signals files name the source(s) {twice} more than once; give each its own 'name'"
        )
    if route_all:
        return
    declared = [kind for kind in types.values() if kind is not None]
    every = len(declared) == len(types)  # else a type's members come with its first model
    for plan in plans:
        for point in plan.signals.points:
            best = best_type(declared, point.machine)
            if best is None and not every:
                continue
            if best is None or best.name != plan.name:
                what = "no type this node serves" if best is None else f"machine type {best.name}"
                raise ConfigError(
                    f"signals file {paths[plan.name]} (machine type {plan.name}): a source point "
                    f"names machine {point.machine!r}, which the site file makes {what}; put "
                    "the point in its type's signals file"
                )


class _Feed:
    __slots__ = ("assembler", "name", "signals")

    def __init__(self, plan: TypeSignals, assembler: Assembler) -> None:
        self.name = plan.name
        self.signals = plan.signals
        self.assembler = assembler


class SignalIntake:
    """The node's per-signal intake: an assembler per machine type's signals file (`plans`,
    index k = `feeds[k]`) and which of them a reading goes to."""

    def __init__(
        self,
        plans: Sequence[TypeSignals],
        *,
        max_machines: int = DEFAULT_MAX_MACHINES,
        on_problem: Callable[[str, int], object] | None = None,
    ) -> None:
        if not plans:
            raise ValueError("per-signal intake needs at least one signals file")
        self.feeds = tuple(
            _Feed(
                plan,
                Assembler(
                    plan.signals,
                    plan.window_length,
                    max_machines=max_machines,
                    on_problem=on_problem,
                ),
            )
            for plan in plans
        )

    def filters(self) -> list[str]:
        """Every file's subscription filters, each once, in file order."""
        return list(dict.fromkeys(f for feed in self.feeds for f in feed.signals.filters()))

    def match(self, topic: str, type_of: TypeOf | None) -> tuple[int, str, int] | None:
        """(file index, machine, reading index) of the file of the reading's machine's type
        whose pattern `topic` matches; None if no file's pattern matches (not a reading).

        `type_of` gives a machine's type (None: every machine is the first file's type, a node
        of one type). PayloadError `bad_id`, `no_type` or `signal_wrong_type` for a reading no
        file of its machine's type takes.
        """
        wrong: tuple[str, str | None, str] | None = None
        for k, feed in enumerate(self.feeds):
            found = feed.signals.match(topic)
            if found is None:
                continue
            machine, index = found
            if type_of is None:
                return k, machine, index
            check_id(machine)  # before a router remembers it
            kind = type_of(machine)
            if kind == feed.name:
                return k, machine, index
            wrong = wrong or (machine, kind, feed.name)
        if wrong is None:
            return None
        machine, kind, other = wrong
        raise _refused(machine, kind, f"topic {topic!r} is a signal of", other)

    def check(self, k: int, machine: str, type_of: TypeOf | None) -> None:
        """PayloadError unless `machine` is of file k's type (a source point's reading)."""
        if type_of is None:
            return
        kind = type_of(machine)
        name = self.feeds[k].name
        if kind != name:
            raise _refused(machine, kind, "its source point is in", name)

    def feed(self, k: int, machine: str, index: int, t_s: float, value: float) -> list[Window]:
        """One reading of file k into its type's assembler; the windows it finished."""
        return self.feeds[k].assembler.feed(machine, index, t_s, value)

    def forget(self, machines: Iterable[str]) -> None:
        """Every assembler drops `machines`' open windows (the node's machine cap)."""
        machines = list(machines)
        for feed in self.feeds:
            feed.assembler.forget(machines)

    def detail(self) -> dict[str, Any]:
        """The status `detail.signals`: the counts over every type, `machines` assembled; with
        several types' files also each type's own under `types`."""
        total: Counter[str] = Counter()
        for feed in self.feeds:
            total.update(feed.assembler.counts)
        out: dict[str, Any] = {
            **total,
            "machines": sum(len(feed.assembler) for feed in self.feeds),
        }
        if len(self.feeds) > 1:
            out["types"] = {
                feed.name: {**feed.assembler.counts, "machines": len(feed.assembler)}
                for feed in self.feeds
            }
        return out

    def with_sources(self) -> list[tuple[int, SignalMap]]:
        """(file index, signals) of the files that name OPC UA or Modbus sources."""
        return [(k, feed.signals) for k, feed in enumerate(self.feeds) if feed.signals.sources]


def _refused(machine: str, kind: str | None, how: str, other: str) -> PayloadError:
    if kind is None:
        return PayloadError(
            f"machine {machine[:80]!r} is of no machine type this node serves; {how} the "
            f"signals file of machine type {other}: declare the machine in that type's members "
            "(the site file)",
            "no_type",
        )
    return PayloadError(
        f"machine {machine[:80]!r} is a {kind}; {how} the signals file of machine type {other} "
        f"only: map it in {kind}'s signals file",
        "signal_wrong_type",
    )
