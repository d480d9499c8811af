"""The typed status-detail parts (protocol/status_detail): round trips, the detail's version,
exact refusals, a reader that never raises, and the rollbacks read entry by entry."""

from __future__ import annotations

import json
from typing import Any

import pytest

from protocol import PayloadError, Status
from protocol._json import loads
from protocol.status_detail import (
    DETAIL_VERSION,
    PARTS,
    DetailReader,
    DriftDetail,
    FleetDetail,
    GateDetail,
    HealthFigures,
    ModelHealthDetail,
    Part,
    RecentMachines,
    Rollback,
    Rollbacks,
    RolloutDetail,
    RolloutGroup,
    SimMachines,
    TrainerPhase,
    TrainerStage,
    clip_text,
    detail_version,
    finite_or_none,
    json_fields,
)

from ._status_details import detail_obj, part_obj

PART_IDS = [p.__name__ for p in PARTS]
LEVELS = {"state": "ok", "input_level": 0, "confidence_level": 0.5}


def _wire(obj: Any) -> Any:
    """`obj` after the trip through a status on the wire (JSON text, the bounded reader)."""
    return loads(json.dumps(obj, separators=(",", ":")), "test", max_bytes=1 << 20)


@pytest.mark.parametrize("part", PARTS, ids=PART_IDS)
def test_every_part_round_trips_through_the_wire_unchanged(part: type[Part]) -> None:
    for seed in range(200):
        obj = part_obj(part, seed)
        typed = part.from_obj(_wire(obj))
        assert typed.to_json_obj() == obj
        assert json.dumps(typed.to_json_obj()) == json.dumps(obj)  # key order and int/float
        assert part.from_obj(typed.to_json_obj()) == typed


@pytest.mark.parametrize("part", PARTS, ids=PART_IDS)
def test_an_object_part_writes_its_fields_in_declared_order(part: type[Part]) -> None:
    seen: set[tuple[str, ...]] = set()
    for seed in range(200):
        obj = part_obj(part, seed)
        if isinstance(obj, dict) and part is not SimMachines:
            keys = tuple(obj)
            names = json_fields(part)
            assert keys == tuple(n for n in names if n in keys), keys
            seen.add(keys)
    if part in (ModelHealthDetail, FleetDetail, GateDetail, TrainerStage):
        assert seen == {json_fields(part)}  # always every field


def test_a_detail_without_v_reads_as_version_1_and_another_v_is_refused_whole() -> None:
    assert detail_version({}) == 0 and detail_version({"v": 1}) == DETAIL_VERSION == 1
    group = {"rollout_group": "canary"}
    assert DetailReader(group, "edge").get(RolloutGroup) == RolloutGroup("canary")
    assert DetailReader({"v": 1, **group}, "edge").get(RolloutGroup) == RolloutGroup("canary")
    # version 2 is version 1's parts plus `types` (a node serving other machine types)
    assert DetailReader({"v": 2, **group}, "edge").get(RolloutGroup) == RolloutGroup("canary")
    for v in (3, 0, True, "1", 1.0, None, [1]):
        bad: list[PayloadError] = []
        reader = DetailReader({"v": v, **group}, "edge", bad.append)
        assert reader.get(RolloutGroup) is None and reader.rollbacks() == ((), 0)
        assert [e.kind for e in bad] == ["bad_version"], v  # counted once, not per part
    bad = []
    assert DetailReader([1], "edge", bad.append).get(RolloutGroup) is None
    assert [e.kind for e in bad] == ["bad_field"]


def test_a_part_is_read_only_from_the_role_that_writes_it() -> None:
    sim = {"machines": {"m01": {"state": "normal", "drift": "off", "labels": 0}}}
    assert DetailReader(sim, "edge").get(RecentMachines) is None
    assert DetailReader(sim, "simulator").get(SimMachines) is not None
    assert DetailReader({"machines": ["m01"]}, "edge").get(RecentMachines) == RecentMachines(
        ("m01",)
    )
    assert DetailReader({"phase": "idle"}, "edge").get(TrainerPhase) is None


@pytest.mark.parametrize(
    ("part", "change", "kind"),
    [
        (RolloutGroup, "a/b", "bad_id"),
        (RolloutGroup, "", "bad_id"),
        (ModelHealthDetail, {"verdict": "fine"}, "bad_field"),
        (ModelHealthDetail, {"watched": 0}, "bad_field"),
        (ModelHealthDetail, {"watched": 2**31}, "bad_field"),
        (ModelHealthDetail, {"watched": True}, "bad_field"),
        (ModelHealthDetail, {"until": -1.0}, "bad_field"),
        (ModelHealthDetail, {"reason": "x" * 201}, "bad_field"),
        (ModelHealthDetail, {"reason": "two\nlines"}, "bad_field"),
        (ModelHealthDetail, {"serving": None}, "bad_field"),
        (ModelHealthDetail, {"extra": 1}, "bad_field"),
        (FleetDetail, {"members": ["pi-a", "pi-a"]}, "bad_field"),
        (FleetDetail, {"members": ["pi a"]}, "bad_id"),
        (FleetDetail, {"owned": 5, "seen": 4}, "bad_field"),
        (FleetDetail, {"timeout_s": 0}, "bad_field"),
        (DriftDetail, {"machines_total": 0, "machines": {"m1": LEVELS}}, "bad_field"),
        (DriftDetail, {"machines": {"m1": {**LEVELS, "stuck_windows": 0}}}, "bad_field"),
        (DriftDetail, {"machines_total": None}, "bad_field"),
        (DriftDetail, {"labeled_wrong": 2, "labeled_seen": 1}, "bad_field"),
        (TrainerStage, {"name": "fine_tuning", "version": None, "labels": None}, "bad_field"),
        (TrainerStage, {"name": "idle", "version": 3, "labels": None}, "bad_field"),
        (GateDetail, {"champion_drift": 1.5}, "bad_field"),
        (GateDetail, {"seconds": -1}, "bad_field"),
        (RolloutDetail, {"phase": "idle", "version": 3}, "bad_field"),
    ],
)
def test_a_part_that_does_not_fit_is_refused_with_a_kind(
    part: type[Part], change: Any, kind: str
) -> None:
    obj = _valid(part)
    obj = {**obj, **change} if isinstance(change, dict) else change
    with pytest.raises(PayloadError) as err:
        part.from_obj(obj)
    assert err.value.kind == kind


def _valid(part: type[Part]) -> Any:
    """The first seed's example that is a full object (for the refusal table)."""
    for seed in range(100):
        obj = part_obj(part, seed)
        if not isinstance(obj, dict) or len(obj) == len(json_fields(part)):
            return obj
    raise AssertionError(part)


def test_the_reader_counts_a_malformed_part_and_reads_the_others() -> None:
    bad: list[PayloadError] = []
    detail = {"v": 1, "rollout_group": "canary", "model_health": {"verdict": "passed"}}
    reader = DetailReader(detail, "edge", bad.append)
    assert reader.get(ModelHealthDetail) is None and reader.get(RolloutGroup) is not None
    assert reader.get(FleetDetail) is None  # absent: nothing to count
    assert [e.kind for e in bad] == ["bad_field"] and "model_health" in str(bad[0])


def test_rollbacks_are_read_entry_by_entry_of_the_newest_eight() -> None:
    good = Rollback(3, 2, "worse", 5.0, True).to_json_obj()
    bad: list[PayloadError] = []
    reader = DetailReader({"rollbacks": [good, {**good, "auto": 1}, 7, good]}, "edge", bad.append)
    entries, count = reader.rollbacks()
    assert [r.from_version for r in entries] == [3, 3] and count == 2 and len(bad) == 2
    entries, count = DetailReader({"rollbacks": [good] * 11}, "edge").rollbacks()
    assert len(entries) == 8 and count == 3
    assert DetailReader({"rollbacks": {"from": 3}}, "edge").rollbacks() == ((), 1)
    with pytest.raises(PayloadError):
        Rollbacks.from_obj([good] * 9)  # the strict form: all or nothing


def test_figures_are_null_exactly_where_there_is_nothing_to_divide_by() -> None:
    HealthFigures(0, None, None, 0, None)
    HealthFigures(3, 0.5, 0.0, 1, 1.0)
    for args in ((0, 0.5, None, 0, None), (3, 0.5, None, 0, None), (3, 0.5, 0.1, 1, None)):
        with pytest.raises(PayloadError):
            HealthFigures(*args)


def test_the_stage_gives_the_phase_text_people_read() -> None:
    texts = [
        TrainerStage(*s).text()
        for s in (("starting",), ("training",), ("idle",), ("fine_tuning", 1, 480))
    ]
    assert texts == ["starting", "training initial model", "idle", "fine-tuning v1 on 480 labels"]
    assert [TrainerStage(*s).fine_tune for s in (("training",), ("idle",))] == [True, False]


def test_writer_helpers_make_prose_and_scores_fit() -> None:
    assert clip_text("ok") == "ok" and len(clip_text("x" * 500)) == 200
    assert clip_text("a\tb\x00") == "a b " and clip_text("x" * 300, 10) == "x" * 9 + "…"
    assert finite_or_none(float("nan")) is None and finite_or_none(0.5) == 0.5
    assert finite_or_none(None) is None and finite_or_none(float("inf")) is None


@pytest.mark.parametrize("role", ["edge", "trainer", "simulator"])
def test_a_whole_detail_in_a_status_reads_back_every_part(role: str) -> None:
    for seed in range(50):
        detail = detail_obj(role, seed)
        status = Status.from_json(Status("n1", role, "online", "0.1.0", detail=detail).to_json())
        bad: list[PayloadError] = []
        reader = DetailReader(status.detail, role, bad.append)
        for part in PARTS:
            got = reader.get(part)
            if role != part.ROLE or part.KEY not in detail:
                assert got is None
            else:
                assert got is not None and got.to_json_obj() == detail[part.KEY]
        assert bad == []
