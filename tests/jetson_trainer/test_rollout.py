"""The staged rollout policy (jetson_trainer/versions/rollout.py): when a canary version is
promoted, when it is bad, and what it waits for — tables of observations, no broker."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import Any

import pytest

from jetson_trainer.versions.rollout import CanaryReport, Phase, Rollout
from protocol import Status
from protocol.status_detail import HealthFigures, ModelHealthDetail, Rollback

V = 7
WATCH = 60.0


def _r(
    node: str,
    serving: int | None = V,
    verdict: str | None = "watching",
    *,
    group: str | None = "canary",
    watched: int | None = None,
    rolled_back: tuple[int, ...] = (),
) -> CanaryReport:
    return CanaryReport(
        node,
        group,
        serving,
        serving if watched is None else watched,
        verdict,
        frozenset(rolled_back),
    )


def _run(
    steps: list[tuple[float, list[CanaryReport]]], bad: Collection[int] = frozenset()
) -> Rollout:
    r = Rollout.start(V, ("canary", "line-2"), watch_s=WATCH, now=0.0)
    for now, reports in steps:
        r = r.observe(reports, bad=bad, now=now)
    return r


PROMOTE_TABLE = [
    # (case, steps, expected phase, first_serving)
    ("no canary serves it yet", [(5.0, [_r("a", serving=6, verdict="passed")])], "canary", None),
    ("nothing heard at all, long after", [(1e6, [])], "canary", None),
    (
        "a non-canary node serving it does not count",
        [(5.0, [_r("x", group=None, verdict="passed")]), (500.0, [_r("x", group=None)])],
        "canary",
        None,
    ),
    (
        "a node of another group does not count",
        [(5.0, [_r("x", group="line-9", verdict="passed")])],
        "canary",
        None,
    ),
    ("the one canary is still watching", [(5.0, [_r("a")]), (30.0, [_r("a")])], "canary", 5.0),
    (
        "the one canary passed",
        [(5.0, [_r("a")]), (30.0, [_r("a", verdict="passed")])],
        "promoted",
        5.0,
    ),
    (
        "inconclusive is a watch that ended without a rollback",
        [(5.0, [_r("a", verdict="inconclusive")])],
        "promoted",
        5.0,
    ),
    (
        "one of two canaries still watching",
        [(5.0, [_r("a", verdict="passed"), _r("b")])],
        "canary",
        5.0,
    ),
    (
        "both canaries (two groups) passed",
        [(5.0, [_r("a", verdict="passed"), _r("b", group="line-2", verdict="passed")])],
        "promoted",
        5.0,
    ),
    (
        "a passed verdict of the version before does not count",
        [(5.0, [_r("a", verdict="passed", watched=6)])],
        "canary",
        5.0,
    ),
    (
        "watch off on the node: the canary watch decides",
        [(5.0, [_r("a", verdict="off")])],
        "canary",
        5.0,
    ),
    (
        "canary watch over since the first canary served it",
        [(5.0, [_r("a", verdict="off")]), (5.0 + WATCH, [_r("a", verdict="off")])],
        "promoted",
        5.0,
    ),
    (
        "the canary watch counts from first serving, not from the offer",
        [(50.0, [_r("a")]), (50.0 + WATCH - 0.1, [_r("a")])],
        "canary",
        50.0,
    ),
    (
        "a canary that went offline after serving it: the canary watch still ends it",
        [(5.0, [_r("a")]), (20.0, [_r("a", serving=None)]), (5.0 + WATCH, [_r("a", serving=None)])],
        "promoted",
        5.0,
    ),
    (
        "a canary finding it worse holds it back until its rollback is reported",
        [(5.0, [_r("a", verdict="worse")]), (4.0 + WATCH, [_r("a", verdict="worse")])],
        "canary",
        5.0,
    ),
]


@pytest.mark.parametrize(
    ("case", "steps", "phase", "first"), PROMOTE_TABLE, ids=[row[0] for row in PROMOTE_TABLE]
)
def test_promotion_table(
    case: str, steps: list[tuple[float, list[CanaryReport]]], phase: str, first: float | None
) -> None:
    r = _run(steps)
    assert (r.phase.value, r.first_serving) == (phase, first), r.reason


BAD_TABLE = [
    ("a canary rolled back from it", [(5.0, [_r("a", serving=6, rolled_back=(V,))])], frozenset()),
    (
        "a rollback after it passed its own watch but before promotion",
        [
            (5.0, [_r("a", verdict="passed"), _r("b")]),
            (9.0, [_r("a", verdict="passed"), _r("b", serving=6, rolled_back=(V,))]),
        ],
        frozenset(),
    ),
    (
        "marked bad in the registry (a node outside the groups rolled back)",
        [(5.0, [])],
        frozenset({V}),
    ),
]


@pytest.mark.parametrize(("case", "steps", "bad"), BAD_TABLE, ids=[row[0] for row in BAD_TABLE])
def test_bad_table(
    case: str, steps: list[tuple[float, list[CanaryReport]]], bad: frozenset[int]
) -> None:
    r = _run(steps, bad)
    assert r.phase is Phase.BAD and "never promoted" in r.reason


def test_the_reason_names_who_rolled_back_whichever_saw_it_first() -> None:
    by_report = _run([(5.0, [_r("a", rolled_back=(V,))])], bad={V: ("b",)})
    assert by_report.reason.startswith(f"canary a rolled back from v{V}")
    start = Rollout.start(V, ("canary",), watch_s=WATCH, now=0.0)
    by_registry = start.observe([_r("a")], bad={V: ("a", "z")}, now=5.0)
    assert by_registry.phase is Phase.BAD
    assert by_registry.reason.startswith(f"a, z rolled back from v{V} (model registry)")
    by_set = start.observe([_r("a")], bad={V}, now=5.0)
    assert by_set.reason.startswith(f"v{V} is marked bad in the model registry")


def test_a_rollback_of_another_version_is_not_this_ones() -> None:
    r = _run([(5.0, [_r("a", verdict="passed", rolled_back=(V - 1,))])])
    assert r.phase is Phase.PROMOTED


def test_a_final_phase_never_changes_again() -> None:
    promoted = _run([(5.0, [_r("a", verdict="passed")])])
    assert promoted.phase is Phase.PROMOTED and promoted.since == 5.0
    later = promoted.observe([_r("a", serving=6, rolled_back=(V,))], bad={V}, now=99.0)
    assert later is promoted
    bad = _run([(5.0, [_r("a", rolled_back=(V,))])])
    assert bad.observe([_r("a", verdict="passed")], bad=(), now=99.0) is bad


def test_promotion_by_the_watches_names_the_canaries_and_by_time_says_so() -> None:
    r = _run([(5.0, [_r("b", verdict="passed"), _r("a", verdict="passed")])])
    assert r.passed == ("a", "b") and r.canaries == ("a", "b")
    assert (
        r.reason == f"every canary serving v{V} (a, b) finished its health watch without a rollback"
    )
    r = _run([(5.0, [_r("a")]), (70.0, [_r("a")])])
    assert r.reason == f"no canary rolled back v{V} within 60 s of a serving it"
    assert r.since == 70.0


def test_the_status_detail_gives_unix_times() -> None:
    r = _run([(5.0, [_r("a")])])
    d = r.to_dict(now=10.0, wall=1000.0)
    assert d["phase"] == "canary" and d["canaries"] == ["a"] and d["passed"] == []
    assert (d["since"], d["first_serving"], d["promote_by"]) == (990.0, 995.0, 1055.0)
    assert d["groups"] == ["canary", "line-2"]


def _health(watched: int, verdict: str) -> dict[str, Any]:
    """An edge node's `detail.model_health` after its watch of `watched` (protocol codec)."""
    none = HealthFigures(0, None, None, 0, None)
    return ModelHealthDetail(
        None, watched, watched - 1, None, verdict, None, None, 60.0, None, none, none
    ).to_json_obj()


def _rollback(version: int) -> dict[str, Any]:
    return Rollback(version, version - 1, "worse", 5.0, True).to_json_obj()


STATUS_TABLE = [
    ("no detail", {}, "online", (None, 3, None, None, frozenset())),
    (
        "group and health",
        {"rollout_group": "canary", "model_health": _health(3, "passed")},
        "online",
        ("canary", 3, 3, "passed", frozenset()),
    ),
    (
        "offline serves nothing",
        {"rollout_group": "canary"},
        "offline",
        ("canary", None, None, None, frozenset()),
    ),
    (
        "wrong types are absent",
        {"rollout_group": 5, "model_health": [], "rollbacks": {"from": 3}},
        "online",
        (None, 3, None, None, frozenset()),
    ),
    (
        "bools are not versions",
        {
            "model_health": {**_health(3, "passed"), "watched": True},
            "rollbacks": [{**_rollback(2), "from": True}, _rollback(2), "x"],
        },
        "online",
        (None, 3, None, None, frozenset({2})),
    ),
    (
        "a part missing fields is absent",
        {"model_health": {"watched": 3, "verdict": "passed"}, "rollbacks": [{"from": 2}]},
        "online",
        (None, 3, None, None, frozenset()),
    ),
    (
        "a detail of an unknown version is absent whole",
        {"v": 3, "rollout_group": "canary", "model_health": _health(3, "passed")},
        "online",
        (None, 3, None, None, frozenset()),
    ),
    (
        "version 1 reads as before",
        {"v": 1, "rollout_group": "canary", "rollbacks": [_rollback(3)]},
        "online",
        ("canary", 3, None, None, frozenset({3})),
    ),
]


@pytest.mark.parametrize(
    ("case", "detail", "state", "want"), STATUS_TABLE, ids=[r[0] for r in STATUS_TABLE]
)
def test_a_report_is_read_from_any_status_without_raising(
    case: str, detail: dict[str, object], state: str, want: tuple[object, ...]
) -> None:
    version = None if state == "offline" else 3
    s = Status("pi-1", "edge", state, "0.1.0", model_version=version, detail=detail)
    r = CanaryReport.of_status(s)
    assert (r.group, r.serving, r.watched, r.verdict, r.rolled_back) == want


@pytest.mark.parametrize(
    ("field", "value"),
    [("version", 0), ("groups", ()), ("watch_s", 0.0), ("watch_s", float("nan"))],
)
def test_a_rollout_refuses_impossible_settings(field: str, value: Any) -> None:
    r = Rollout.start(V, ("canary",), watch_s=WATCH, now=0.0)
    changes: dict[str, Any] = {field: value}
    with pytest.raises(ValueError):
        dataclasses.replace(r, **changes)
