"""The trainer's model history: every version with its parent, data, labels, gate scores,
where it is deployed and its status — and the versions the nodes rolled back, never offered again.

Pure core (`Registry`, `parse_rollbacks`, `parse_registry`, `format_table`) apart from a thin
shell (`RegistryFile`). On disk it is `model_registry.jsonl` in the trainer's state dir
(`serve --store`): one JSON object per line, one line per *change*: a change appends (and
fsyncs) the records it changed; loading replays the lines in order (a later line of a version
replaces its earlier one; a `refused` attempt is always a new record). The file is compacted —
rewritten whole, atomically (temporary file, fsync, rename) — only when its lines outgrow its
records (`COMPACT_LINES`) or after damage, so a status never costs a rewrite. A line that does
not parse (a disk error, a torn append, a hand edit) is refused with its line number and
skipped; the other records are kept, and the damaged file is copied aside
(`model_registry.jsonl.corrupt-<UTC time>`) before it is next compacted.

Nodes never create records: a node's status moves it between the `deployed` (and `served`)
lists of versions the trainer made, and a rollback marks a version bad only if the trainer
published it and that node was seen serving it before (`rollback_refusal`). Every version
number stays within the manifest's range (1..2³¹−1, `protocol.manifest.MAX_VERSION`), so the
next version is always one a manifest accepts.

A record's `status`:

- `champion`: the model the trainer offers now (one at most);
- `candidate`: a bundle on disk the trainer has not offered (newer than its champion);
- `refused`: a fine-tune the gate refused (no bundle was written; its version number is
  reused by the next attempt, so several `refused` records may carry one version);
- `bad`: a node rolled back away from it (`detail.rollbacks` in its status, see
  protocol/README.md): never published again; `bad` is final;
- `retired`: offered once, replaced by a newer champion.

>>> r = Registry().upsert(ModelRecord(1, "champion", published=1.0))
>>> r = r.upsert(ModelRecord(2, "champion", parent=1, published=2.0))
>>> [(m.version, m.status) for m in r.records]
[(1, 'retired'), (2, 'champion')]
>>> rb, bad = parse_rollbacks({"rollbacks": [{"from": 2, "to": 1, "reason": "accuracy 0.4",
...                                          "ts": 5.0, "auto": True}, {"from": "x"}]})
>>> bad, r.mark_bad(rb[0], "pi-1")[1], r.rollback_refusal(rb[0], "pi-1")
(1, False, 'not_served')
>>> r = r.set_deployed("pi-1", 2).set_deployed("pi-1", 1)  # pi-1 served v2, now serves v1
>>> r.mark_bad(rb[0], "pi-1")[1], sorted(r.mark_bad(rb[0], "pi-1")[0].bad_versions())
(True, [2])
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol.errors import PayloadError
from protocol.manifest import MAX_VERSION
from protocol.status_detail import MAX_ROLLBACKS, DetailReader, Rollback, Rollbacks

__all__ = [
    "COMPACT_LINES",
    "MAX_NODES",
    "MAX_ROLLBACKS",
    "MAX_VERSION",
    "REFUSALS",
    "REGISTRY_NAME",
    "STATUSES",
    "BadMark",
    "ModelRecord",
    "Registry",
    "RegistryFile",
    "Rollback",
    "format_table",
    "parse_registry",
    "parse_rollbacks",
    "record_from_manifest",
]

log = logging.getLogger(__name__)

REGISTRY_NAME = "model_registry.jsonl"
FORMAT = 1
STATUSES = ("champion", "candidate", "refused", "bad", "retired")
MAX_REASON = 200
MAX_MARKS = 16  # bad marks kept per version (different nodes, or operator and auto)
MAX_NODES = 1024  # nodes kept in a record's `deployed` and `served` lists (the newest)
COMPACT_LINES = 4  # the file is compacted when it has more than 4 lines per record (+ 64)
# why a node's rollback was not taken (ModelHistory counts them; the status shows the total)
REFUSALS = ("unknown_version", "not_published", "not_served")


def _opt_int(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_VERSION:
        raise ValueError(f"{what} must be an integer 0..{MAX_VERSION} or null, got {value!r}")
    return value


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def parse_rollbacks(
    detail: Any, on_bad: Callable[[PayloadError], object] | None = None
) -> tuple[list[Rollback], int]:
    """The well-formed entries of an edge status `detail`'s `rollbacks` (of its newest 8) and
    how many were not, read by the contract's codec (`protocol.status_detail`).

    Never raises: anything malformed (not a list, an entry that is not an object, a missing or
    wrong-typed field, entries beyond the newest 8) is counted and ignored (and told to
    `on_bad`, as is a detail of an unknown version).

    >>> parse_rollbacks({})
    ([], 0)
    >>> parse_rollbacks({"rollbacks": "v3"})
    ([], 1)
    >>> ok, bad = parse_rollbacks({"rollbacks": [
    ...     {"from": 3, "to": None, "reason": "", "ts": 1.0, "auto": False},
    ...     {"from": 3, "to": 2, "reason": "x", "ts": 1.0, "auto": "yes"}, 7]})
    >>> [(r.from_version, r.to, r.auto) for r in ok], bad
    ([(3, None, False)], 2)
    """
    entries, bad = DetailReader(detail, Rollbacks.ROLE, on_bad).rollbacks()
    return list(entries), bad


@dataclass(frozen=True, slots=True)
class BadMark:
    """Why a version is bad: which node rolled back from it, when, why, by itself or not."""

    node: str
    reason: str
    ts: float
    auto: bool
    to: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class ModelRecord:
    """One version (or one refused fine-tune attempt) in the history."""

    version: int
    status: str
    parent: int | None = None
    created: float = 0.0
    site: str = ""
    arch: str = ""
    quantization: str = ""
    data: dict[str, Any] = field(default_factory=dict)  # counts, sources, train_stats_source
    labels: dict[str, Any] = field(default_factory=dict)  # total, per_class, source
    gate: dict[str, Any] | None = None  # accepted, reason, both models' scores
    metrics: dict[str, Any] = field(default_factory=dict)  # the manifest's validation metrics
    reissue_of: int | None = None
    path: str | None = None  # the bundle's directory
    published: float | None = None  # first time the trainer published it retained
    deployed: tuple[str, ...] = ()  # nodes whose latest status says they serve it
    bad: tuple[BadMark, ...] = ()
    served: tuple[str, ...] = ()  # nodes seen serving it at some time (newest last)

    def __post_init__(self) -> None:
        if _opt_int(self.version, "version") is None:
            raise ValueError("version must be an integer")
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {', '.join(STATUSES)}")
        _opt_int(self.parent, "parent")
        _opt_int(self.reissue_of, "reissue_of")
        _number(self.created, "created")
        if self.published is not None:
            _number(self.published, "published")
        for name in ("data", "labels", "metrics"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"{name} must be an object")
        if self.gate is not None and not isinstance(self.gate, dict):
            raise ValueError("gate must be an object or null")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["deployed"] = list(self.deployed)
        d["bad"] = [m.to_dict() for m in self.bad]
        d["served"] = list(self.served)
        if not self.served:  # as a trainer of before `served` wrote it
            del d["served"]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelRecord:
        """The record `to_dict` wrote; ValueError names an unknown key or a wrong field."""
        if not isinstance(d, Mapping):
            raise ValueError("a record must be a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown keys {unknown}")
        kw = dict(d)
        try:
            kw["deployed"] = tuple(str(n) for n in kw.get("deployed", ()))
            kw["served"] = tuple(str(n) for n in kw.get("served", ()))
            kw["bad"] = tuple(BadMark(**m) for m in kw.get("bad", ()))
        except TypeError as exc:
            raise ValueError(f"bad deployed/bad field: {exc}") from exc
        return cls(**kw)


@dataclass(frozen=True, slots=True)
class Registry:
    """The history, oldest record first; every change returns a new Registry."""

    records: tuple[ModelRecord, ...] = ()

    def get(self, version: int) -> ModelRecord | None:
        """The version's record (not a refused attempt that only carried its number)."""
        for m in reversed(self.records):
            if m.version == version and m.status != "refused":
                return m
        return None

    def bad_versions(self) -> frozenset[int]:
        """Versions a node rolled back from: never to be published again."""
        return frozenset(m.version for m in self.records if m.status == "bad")

    def bad_nodes(self) -> dict[int, tuple[str, ...]]:
        """Each bad version → the nodes that rolled back from it (in the order seen)."""
        return {m.version: tuple(b.node for b in m.bad) for m in self.records if m.status == "bad"}

    def champion(self) -> int | None:
        return next((m.version for m in self.records if m.status == "champion"), None)

    def highest(self) -> int:
        """The highest version anything saw: on disk, published, run by a node or rolled back."""
        return max((m.version for m in self.records if m.status != "refused"), default=0)

    def highest_offered(self) -> int:
        """The highest version that reached the nodes (published, deployed or rolled back)."""
        return max(
            (
                m.version
                for m in self.records
                if m.published is not None or m.deployed or m.status == "bad"
            ),
            default=0,
        )

    def _replace(self, version: int, new: ModelRecord | None) -> Registry:
        """Replace (or drop, `new` None) the version's record; append `new` if it had none."""
        out: list[ModelRecord] = []
        done = False
        for m in self.records:
            if not done and m.version == version and m.status != "refused":
                done = True
                if new is not None:
                    out.append(new)
                continue
            out.append(m)
        if not done and new is not None:
            out.append(new)
        return Registry(tuple(out))

    def add_refused(self, record: ModelRecord) -> Registry:
        """Append a fine-tune the gate refused."""
        return Registry((*self.records, dataclasses.replace(record, status="refused")))

    def upsert(self, record: ModelRecord) -> Registry:
        """Add or replace a version's record. A new champion retires the old one; a version once
        `bad` stays bad (its marks are kept)."""
        old = self.get(record.version)
        if old is not None and old.status == "bad":
            record = dataclasses.replace(record, status="bad", bad=old.bad)
        if old is not None:
            record = dataclasses.replace(
                record,
                deployed=record.deployed or old.deployed,
                published=old.published if record.published is None else record.published,
            )
        reg = self._replace(record.version, record)
        if record.status == "champion":
            reg = Registry(
                tuple(
                    dataclasses.replace(m, status="retired")
                    if m.status == "champion" and m.version != record.version
                    else m
                    for m in reg.records
                )
            )
        return reg

    def set_champion(self, version: int, *, published: float | None = None) -> Registry:
        """Make an existing, not bad, version the champion (and note when it was published)."""
        m = self.get(version)
        if m is None or m.status == "bad":
            return self
        if published is not None and m.published is None:
            m = dataclasses.replace(m, published=published)
        return self.upsert(dataclasses.replace(m, status="champion"))

    def rollback_refusal(self, rollback: Rollback, node: str) -> str | None:
        """Why `node`'s rollback cannot mark its version bad (one of REFUSALS), or None.

        Only a version the trainer made (`unknown_version`) and published (`not_published`),
        that this node was seen serving in an earlier status (`not_served`): a status can
        name any node and any version, and must not mark the champion bad by itself.
        """
        m = self.get(rollback.from_version)
        if m is None:
            return "unknown_version"
        if m.published is None:
            return "not_published"
        if node not in m.served and node not in m.deployed:
            return "not_served"
        return None

    def mark_bad(self, rollback: Rollback, node: str) -> tuple[Registry, bool]:
        """Mark `rollback.from_version` bad for `node`; (new registry, whether it is news).

        Refused (nothing changes, not news) when `rollback_refusal` says why. The same node's
        rollback of a version it already marked (a retained status after a restart, a
        duplicate) changes nothing: one mark per node and version.
        """
        if self.rollback_refusal(rollback, node) is not None:
            return self, False
        v = rollback.from_version
        mark = BadMark(node, rollback.reason, rollback.ts, rollback.auto, rollback.to)
        m = self.get(v)
        assert m is not None  # rollback_refusal checked it
        if any(b.node == node for b in m.bad):
            return self, False
        marks = (*m.bad, mark)[-MAX_MARKS:]
        return self._replace(v, dataclasses.replace(m, status="bad", bad=marks)), True

    def set_deployed(self, node: str, version: int | None) -> Registry:
        """`node` now serves `version` (None: nothing, e.g. offline); moves it between records
        of versions the registry knows (an unknown version creates nothing). A node serving a
        version is also noted in its `served` list, which a later rollback of it needs."""
        out = []
        for m in self.records:
            serving = m.version == version and m.status != "refused"
            has = node in m.deployed
            if serving and (not has or node not in m.served):
                out.append(
                    dataclasses.replace(
                        m,
                        deployed=m.deployed if has else (*m.deployed, node)[-MAX_NODES:],
                        served=(*(n for n in m.served if n != node), node)[-MAX_NODES:],
                    )
                )
            elif has and not serving:
                out.append(
                    dataclasses.replace(m, deployed=tuple(n for n in m.deployed if n != node))
                )
            else:
                out.append(m)
        return Registry(tuple(out))

    def apply(self, record: ModelRecord) -> Registry:
        """Replay one line of the file: a refused attempt is appended, any other record
        replaces its version's (or is appended if the version has none)."""
        if record.status == "refused":
            return Registry((*self.records, record))
        return self._replace(record.version, record)


def changed_records(old: Registry, new: Registry) -> list[ModelRecord] | None:
    """The lines to append so that replaying them on `old` gives `new`, or None if no list of
    lines does (a record was dropped or moved: the file must be compacted).

    >>> a = Registry().upsert(ModelRecord(1, "champion"))
    >>> b = a.upsert(ModelRecord(2, "champion"))
    >>> [(m.version, m.status) for m in changed_records(a, b)]
    [(1, 'retired'), (2, 'champion')]
    """
    lines = [m for i, m in enumerate(new.records) if i >= len(old.records) or old.records[i] != m]
    replayed = old
    for m in lines:
        replayed = replayed.apply(m)
    return lines if replayed == new else None


def parse_registry(text: str) -> tuple[Registry, list[str]]:
    """Records from the file's text, and one line per refused line ("line 3: why").

    >>> good = json.dumps({"v": 1, **ModelRecord(1, "champion").to_dict()})
    >>> reg, refused = parse_registry(good + "\\n{not json\\n" + '{"v": 9}\\n')
    >>> [m.version for m in reg.records], refused
    ([1], ['line 2: not JSON', 'line 3: format 9, this trainer reads 1'])
    >>> later = json.dumps({"v": 1, **ModelRecord(1, "retired").to_dict()})
    >>> [m.status for m in parse_registry(good + "\\n" + later + "\\n")[0].records]  # replayed
    ['retired']
    """
    reg = Registry()
    refused: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            refused.append(f"line {n}: not JSON")
            continue
        if not isinstance(obj, dict) or obj.get("v") != FORMAT:
            got = obj.get("v") if isinstance(obj, dict) else None
            refused.append(f"line {n}: format {got}, this trainer reads {FORMAT}")
            continue
        obj.pop("v")
        try:
            if set(obj) == {"node", "serves"}:  # a deployment line (`serving_line`)
                reg = reg.set_deployed(_node_of(obj["node"]), _opt_int(obj["serves"], "serves"))
                continue
            reg = reg.apply(ModelRecord.from_dict(obj))
        except (TypeError, ValueError) as exc:
            refused.append(f"line {n}: {exc}")
    return reg, refused


def _node_of(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 128:
        raise ValueError(f"node must be a name of 1..128 characters, got {value!r}")
    return value


def serving_line(node: str, version: int | None) -> str:
    """One line saying which version `node` serves now (replayed as `set_deployed`): a status
    costs one short line, not its records with their node lists.

    >>> serving_line("pi-1", 2)
    '{"v":1,"node":"pi-1","serves":2}\\n'
    """
    return json.dumps({"v": FORMAT, "node": node, "serves": version}, separators=(",", ":")) + "\n"


def record_line(m: ModelRecord) -> str:
    """One line of the file."""
    return json.dumps({"v": FORMAT, **m.to_dict()}, separators=(",", ":"), default=str) + "\n"


def dump_registry(reg: Registry) -> str:
    """The compacted file's text: one JSON line per record."""
    return "".join(record_line(m) for m in reg.records)


def record_from_manifest(
    manifest: Mapping[str, Any], report: Mapping[str, Any] | None, path: str, status: str
) -> ModelRecord:
    """A record for a bundle found on disk, from its manifest.json (and report.json).

    >>> m = {"version": 2, "parent": 1, "created": 5.0, "site": "s/v1", "quantization": "int8",
    ...      "arch": "compact", "train_stats": {"n_windows": 40},
    ...      "extra": {"labels_used": 48, "reissue_of": 1}}
    >>> r = record_from_manifest(m, None, "/m/v0002", "retired")
    >>> r.data, r.labels, r.reissue_of
    ({'train_stats_windows': 40}, {'total': 48}, 1)
    """
    extra = manifest.get("extra") or {}
    extra = extra if isinstance(extra, Mapping) else {}
    stats = manifest.get("train_stats") or {}
    data: dict[str, Any] = {}
    if isinstance(stats, Mapping) and "n_windows" in stats:
        data["train_stats_windows"] = stats["n_windows"]
    if "train_stats_source" in extra:
        data["train_stats_source"] = extra["train_stats_source"]
    labels: dict[str, Any] = {}
    rep = report or {}
    for key in ("n_train", "n_validation", "n_labeled", "n_replay"):
        if key in rep:
            data[key] = rep[key]
    counts = rep.get("class_counts")
    if isinstance(counts, Mapping) and counts:
        labels["per_class"] = dict(counts)
    if "labels_used" in extra:
        labels["total"] = extra["labels_used"]
    elif "n_labeled" in rep:
        labels["total"] = rep["n_labeled"]
    elif "per_class" in labels:
        labels["total"] = sum(int(v) for v in labels["per_class"].values())
    metrics = manifest.get("metrics") or {}
    reissue = extra.get("reissue_of")
    return ModelRecord(
        version=int(manifest["version"]),
        status=status,
        parent=manifest.get("parent"),
        created=float(manifest.get("created") or 0.0),
        site=str(manifest.get("site") or ""),
        arch=str(manifest.get("arch") or ""),
        quantization=str(manifest.get("quantization") or ""),
        data=data,
        labels=labels,
        metrics=dict(metrics) if isinstance(metrics, Mapping) else {},
        reissue_of=reissue if isinstance(reissue, int) and not isinstance(reissue, bool) else None,
        path=path,
    )


def _gate_text(gate: Mapping[str, Any] | None) -> str:
    if not gate:
        return "-"
    try:
        return (
            f"drift {gate['champion_drift']:.3f}→{gate['challenger_drift']:.3f} "
            f"orig {gate['champion_original']:.3f}→{gate['challenger_original']:.3f}"
        )
    except (KeyError, TypeError, ValueError):
        return str(gate.get("reason", "?"))[:40]


def _labels_text(labels: Mapping[str, Any]) -> str:
    per = labels.get("per_class")
    if isinstance(per, Mapping) and per:
        return "/".join(str(v) for v in per.values())
    return str(labels.get("total", "-"))


def format_table(reg: Registry) -> str:
    """The `models` listing: one row per record, oldest first.

    >>> r = Registry().upsert(ModelRecord(1, "champion", created=0.0, deployed=("pi-1",)))
    >>> print(format_table(r))  # doctest: +NORMALIZE_WHITESPACE
    version  parent  created           status    labels  gate  deployed on
    v1       -       1970-01-01 00:00  champion  -       -     pi-1
    """
    head = ("version", "parent", "created", "status", "labels", "gate", "deployed on")
    rows = [head]
    for m in reg.records:
        status = m.status
        if m.reissue_of is not None:
            status += f" (=v{m.reissue_of})"
        if m.bad:
            last = m.bad[-1]
            status += f" ({last.node}: {last.reason[:40]})"
        rows.append(
            (
                f"v{m.version}",
                "-" if m.parent is None else f"v{m.parent}",
                time.strftime("%Y-%m-%d %H:%M", time.gmtime(m.created)),
                status,
                _labels_text(m.labels),
                _gate_text(m.gate),
                ", ".join(m.deployed) or "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


class RegistryFile:
    """The registry on disk, shared by the daemon's threads: `view()`, `update(change)`.

    `lines` and `bytes_written` say what the file holds and what this object wrote (benches).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self.refused: list[str] = []  # lines of the file that did not parse
        self._keep_damaged = False
        self.lines = 0  # lines in the file (records and changes)
        self.bytes_written = 0
        self.compactions = 0
        self._torn = False  # the file does not end with a newline (a torn append)
        self._behind = False  # a write failed: the file misses a change
        self._reg = self._load()

    def _load(self) -> Registry:
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return Registry()
        except OSError as exc:
            log.error(
                "cannot read the model registry %s (%s); starting with an empty one", self.path, exc
            )
            self._keep_damaged = True
            return Registry()
        self.lines = sum(1 for line in text.splitlines() if line.strip())
        self._torn = bool(text) and not text.endswith("\n")
        reg, refused = parse_registry(text)
        if refused:
            self.refused = refused
            self._keep_damaged = True
            log.error(
                "model registry %s: refused %d damaged line(s) (%s); kept the %d good records. "
                "The file is copied aside before it is next written; check the disk",
                self.path,
                len(refused),
                "; ".join(refused[:5]),
                len(reg.records),
            )
        return reg

    def view(self) -> Registry:
        with self._lock:
            return self._reg

    def update(self, change: Callable[[Registry], Registry]) -> Registry:
        """Apply a pure change and append the records it changed (compacting if due).

        An OSError writing (disk full) is logged and the change kept in memory; the next
        change compacts the file from memory.
        """
        with self._lock:
            old = self._reg
            new = change(old)
            if new == old:
                return new
            self._reg = new
            lines = changed_records(old, new)
            try:
                due = self._keep_damaged or self._behind
                if lines is None or due or self.lines + len(lines) > self._limit(new):
                    self._compact(new)
                else:
                    self._append(lines)
            except OSError as exc:
                self._behind = True  # the file may miss this change: compact next time
                log.error("cannot write the model registry %s (%s); kept in memory", self.path, exc)
            return new

    def serving(self, node: str, version: int | None) -> Registry:
        """`node` serves `version` now (`Registry.set_deployed`): one short line if that changed
        anything (compacting if due)."""
        with self._lock:
            old = self._reg
            new = old.set_deployed(node, version)
            if new == old:
                return new
            self._reg = new
            try:
                if self._keep_damaged or self._behind or self.lines + 1 > self._limit(new):
                    self._compact(new)
                else:
                    self._append([serving_line(node, version)])
            except OSError as exc:
                self._behind = True
                log.error("cannot write the model registry %s (%s); kept in memory", self.path, exc)
            return new

    @staticmethod
    def _limit(reg: Registry) -> int:
        return COMPACT_LINES * len(reg.records) + 64

    def _append(self, lines: list[ModelRecord] | list[str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(m if isinstance(m, str) else record_line(m) for m in lines)
        data = ("\n" if self._torn else "") + text
        raw = data.encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, raw)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._torn = False
        self.lines += len(lines)
        self.bytes_written += len(raw)

    def _compact(self, reg: Registry) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._keep_damaged and self.path.exists():
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
            shutil.copy2(self.path, aside)
            log.warning("copied the damaged model registry aside to %s", aside)
        text = dump_registry(reg)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._keep_damaged = self._behind = self._torn = False
        self.lines = len(reg.records)
        self.bytes_written += len(text.encode("utf-8"))
        self.compactions += 1
