"""protocol/README.md's status-detail schemas match the codecs (protocol/status_detail): every
part and entry type is documented, with its fields in wire order and each vocabulary word for
word; and a word outside a documented vocabulary is refused, every word in it accepted."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

import protocol.status_detail as sd
from protocol import PayloadError
from protocol.status_detail import PARTS, json_fields

from ._status_details import part_obj

README = Path(__file__).resolve().parents[2] / "protocol" / "README.md"
HEADER = re.compile(r"^(?:(edge|trainer|simulator) detail\.(\w+)|(\w+)): (.+)$")
FIELD = re.compile(r"^  (\w+)\s+(.+?)(?:\s{2,}(.*))?$")
CHOICE = re.compile(r"^one of ([\w, ]+?)(?: \| null)?$")
ENTRIES: dict[str, type] = {  # the entry types the schemas name
    "rollback": sd.Rollback,
    "figures": sd.HealthFigures,
    "machine_drift": sd.MachineDrift,
    "ended_rollout": sd.EndedRollout,
    "sim_machine": sd.SimMachine,
    "type_model": sd.TypeModel,
    "type_loop": sd.TypeLoop,
}
OBJECT_PARTS = {p for p in PARTS if isinstance(part_obj(p, 1), dict) and p is not sd.SimMachines}


@dataclasses.dataclass
class Block:
    shape: str
    fields: list[tuple[str, str]]  # (JSON name, type as written)


def schemas() -> dict[str, Block]:
    """'edge detail.model_health' / 'figures' → its shape line and fields, from the README."""
    text = README.read_text()
    fenced = re.findall(r"```detail-schema\n(.*?)```", text, re.S)
    assert len(fenced) == 1, "protocol/README.md has one ```detail-schema block"
    out: dict[str, Block] = {}
    current: Block | None = None
    for line in fenced[0].splitlines():
        if not line.strip():
            continue
        if header := HEADER.match(line):
            role, key, entry, shape = header.groups()
            name = f"{role} detail.{key}" if role else entry
            assert name not in out, f"{name} is documented twice"
            current = out[name] = Block(shape, [])
            continue
        field = FIELD.match(line)
        assert field is not None and current is not None, f"cannot read the line {line!r}"
        current.fields.append((field.group(1), field.group(2).strip()))
    return out


def _documented(cls: type) -> Block:
    docs = schemas()
    name = next((n for n, c in ENTRIES.items() if c is cls), None)
    if name is None:
        name = f"{cls.ROLE} detail.{cls.KEY}"  # type: ignore[attr-defined]
    assert name in docs, f"protocol/README.md does not document {name}"
    return docs[name]


def test_every_part_and_entry_type_is_documented_and_nothing_else() -> None:
    documented = set(schemas())
    expected = {f"{p.ROLE} detail.{p.KEY}" for p in PARTS} | set(ENTRIES)
    assert documented == expected
    public = {
        getattr(sd, name)
        for name in sd.__all__
        if dataclasses.is_dataclass(getattr(sd, name)) and isinstance(getattr(sd, name), type)
    }
    assert public == set(PARTS) | set(ENTRIES.values())  # no typed class left undocumented


@pytest.mark.parametrize(
    "cls",
    [*sorted(OBJECT_PARTS, key=lambda c: c.__name__), *ENTRIES.values()],
    ids=lambda c: c.__name__,
)
def test_an_object_is_documented_field_by_field_in_wire_order(cls: type) -> None:
    assert tuple(name for name, _ in _documented(cls).fields) == json_fields(cls)


@pytest.mark.parametrize("part", sorted(set(PARTS) - OBJECT_PARTS, key=lambda c: c.__name__))
def test_a_part_that_is_no_object_says_its_shape_in_one_line(part: type) -> None:
    block = _documented(part)
    assert block.fields == [] and not block.shape.startswith("object,")
    for entry in ENTRIES:
        if entry in block.shape:
            assert (
                entry
                == {
                    sd.Rollbacks: "rollback",
                    sd.SimMachines: "sim_machine",
                    sd.TypeModels: "type_model",
                    sd.TypeLoops: "type_loop",
                }[part]
            )


def _choices(cls: type) -> dict[str, tuple[str, ...]]:
    return dict(getattr(cls, "CHOICES", {}))


@pytest.mark.parametrize("cls", [*PARTS, *ENTRIES.values()], ids=lambda c: c.__name__)
def test_every_vocabulary_is_documented_word_for_word(cls: type) -> None:
    if cls not in OBJECT_PARTS and cls not in ENTRIES.values():
        assert not _choices(cls)
        return
    documented = {}
    for name, kind in _documented(cls).fields:
        if match := CHOICE.match(kind):
            documented[name] = tuple(w.strip() for w in match.group(1).split(","))
    assert documented == _choices(cls)


def _example(cls: type) -> tuple[type, Any, Any]:
    """(part to decode, a valid full JSON value of it, the object in it that is a `cls`)."""
    if cls is sd.MachineDrift:
        inner = {"state": "ok", "input_level": 0.5, "confidence_level": 0.1}
        drift = _full(sd.DriftDetail)
        return sd.DriftDetail, {**drift, "machines": {"m01": inner}}, inner
    if cls is sd.EndedRollout:
        inner = {"version": 2, "phase": "bad", "reason": "x"}
        return sd.RolloutDetail, {**_full(sd.RolloutDetail), "ended": [inner]}, inner
    obj = _full(cls)
    return cls, obj, obj


def _full(part: type) -> Any:
    """The first example of `part` that has every field."""
    return next(
        obj
        for obj in (part_obj(part, seed) for seed in range(500))
        if len(obj) == len(json_fields(part))
    )


def _set(cls: type, obj: dict[str, Any], name: str, word: str) -> None:
    """`obj[name] = word`, and what the word needs beside it."""
    obj[name] = word
    if cls is sd.TrainerStage:  # only fine_tuning has a version and labels
        fine = word == "fine_tuning"
        obj["version"], obj["labels"] = (3, 480) if fine else (None, None)


@pytest.mark.parametrize(
    "cls",
    [c for c in [*PARTS, *ENTRIES.values()] if _choices(c)],
    ids=lambda c: c.__name__,
)
def test_a_documented_vocabulary_is_what_the_codec_accepts(cls: type) -> None:
    part, obj, inner = _example(cls)
    for name, words in _choices(cls).items():
        for word in words:
            if (part, name, word) == (sd.RolloutDetail, "phase", "idle"):
                continue  # idle has its own shape (version null, no progress; round-tripped)
            _set(cls, inner, name, word)
            assert part.from_obj(obj) is not None
        inner[name] = "not-a-word"
        with pytest.raises(PayloadError):
            part.from_obj(obj)
        _set(cls, inner, name, words[-1])
