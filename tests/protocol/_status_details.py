"""Valid status-detail parts drawn from one seed each, as JSON values (what a writer puts in a
detail), for the codec's tests, fuzzing and the README check."""

from __future__ import annotations

import random
from typing import Any

from protocol.status_detail import (
    ENDED_PHASES,
    ESTIMATE_METHODS,
    HEALTH_SIGNALS,
    HEALTH_VERDICTS,
    PARTS,
    ROLLOUT_PHASES,
    BufferDetail,
    DriftDetail,
    EstimateDetail,
    FleetDetail,
    GateDetail,
    ModelHealthDetail,
    Part,
    RecentMachines,
    Rollbacks,
    RolloutDetail,
    RolloutGroup,
    ShipperDetail,
    SimMachines,
    TrainerPhase,
    TrainerStage,
    TypeLoops,
    TypeModels,
)

IDS = ("m01", "pi-1", "M.x_2", "a", "m" * 64, "canary")
DRIFT = ("ok", "suspect", "drift")
MAX_V = 2**31 - 1


def _version(rng: random.Random) -> int:
    return rng.choice([1, 2, 7, MAX_V, rng.randint(1, MAX_V)])


def _opt(rng: random.Random, value: Any) -> Any:
    return None if rng.random() < 0.3 else value


def _time(rng: random.Random) -> float | int:
    return rng.choice([0, 0.0, 1.5, 1_700_000_000.125, float(2**32), rng.random() * 2e9])


def _count(rng: random.Random) -> int:
    return rng.choice([0, 1, 7, 2**63 - 1, rng.randrange(10**6)])


def _text(rng: random.Random, limit: int = 200) -> str:
    return rng.choice(["", "x", "accuracy 0.41 < 0.90 → worse", "é…", "r" * limit])


def _ids(rng: random.Random, most: int = 6) -> list[str]:
    return rng.sample(IDS, rng.randint(0, min(most, len(IDS))))


def _figures(rng: random.Random) -> dict[str, Any]:
    windows, labeled = rng.choice([0, 3, 500]), rng.choice([0, 2, 200])
    return {
        "windows": windows,
        "mean_confidence": None if windows == 0 else rng.random(),
        "ood_rate": None if windows == 0 else rng.choice([0, 0.0, 1.0, rng.random()]),
        "labeled": labeled,
        "accuracy": None if labeled == 0 else rng.random(),
    }


def _rollback(rng: random.Random) -> dict[str, Any]:
    return {
        "from": _version(rng),
        "to": _opt(rng, _version(rng)),
        "reason": _text(rng),
        "ts": _time(rng),
        "auto": rng.random() < 0.5,
    }


def part_obj(part: type[Part], seed: int) -> Any:
    """One valid JSON value of `part`, drawn from `seed`."""
    rng = random.Random(seed)
    if part is Rollbacks:
        return [_rollback(rng) for _ in range(rng.randint(0, 8))]
    if part is ModelHealthDetail:
        verdict = rng.choice(HEALTH_VERDICTS)
        return {
            "watching": _opt(rng, _version(rng)),
            "watched": _opt(rng, _version(rng)),
            "against": _opt(rng, _version(rng)),
            "until": _opt(rng, _time(rng)),
            "verdict": verdict,
            "reason": _opt(rng, _text(rng)),
            "signal": rng.choice(HEALTH_SIGNALS) if verdict == "worse" else None,
            "watch_s": rng.choice([0.0, 60.0, 120]),
            "since_swap": _opt(rng, _figures(rng)),
            "baseline": _opt(rng, _figures(rng)),
            "serving": _figures(rng),
            "auto_rollbacks": _count(rng),
            "operator_rollbacks": _count(rng),
        }
    if part is RolloutGroup:
        return rng.choice(IDS)
    if part is FleetDetail:
        seen = _count(rng)
        return {
            "group": rng.choice(IDS),
            "members": sorted(_ids(rng)),
            "owned": rng.randint(0, min(seen, 10**6)),
            "seen": seen,
            "skipped": _count(rng),
            "generation": _count(rng),
            "moved": _count(rng),
            "timeout_s": rng.choice([6.0, 0.5, 30]),
        }
    if part is DriftDetail:
        if rng.random() < 0.2:
            return {"overall": rng.choice(DRIFT)}
        machines = {}
        for m in _ids(rng):
            machines[m] = {
                "state": rng.choice(DRIFT),
                "input_level": rng.choice([0, 0.0, 1.25, rng.random() * 2]),
                "confidence_level": rng.random(),
            }
            if rng.random() < 0.3:
                machines[m]["stuck_windows"] = rng.randint(1, 300)
        seen = _count(rng)
        return {
            "overall": rng.choice(DRIFT),
            "accuracy_level": rng.random() * 2,
            "accuracy_state": rng.choice(DRIFT),
            "labeled_seen": seen,
            "labeled_wrong": rng.randint(0, min(seen, 10**6)),
            "machines": machines,
            "machines_total": len(machines) + rng.choice([0, 5, 900]),
        }
    if part is RecentMachines:
        return _ids(rng)
    if part is EstimateDetail:
        return {
            "accuracy_est": _opt(rng, rng.random()),
            "windows": _count(rng),
            "labeled_accuracy": _opt(rng, rng.random()),
            "labeled": _count(rng),
            "method": rng.choice(ESTIMATE_METHODS),
            "model_version": _opt(rng, _version(rng)),
        }
    if part is BufferDetail:
        if rng.random() < 0.2:
            return {"unreadable": _text(rng, 500)}
        return {
            name: _count(rng)
            for name in (
                "pending",
                "inflight",
                "labeled",
                "acknowledged",
                "evicted_unlabeled",
                "evicted_labeled",
            )
        }
    if part is ShipperDetail:
        return {
            "batches_sent": _count(rng),
            "batches_delivered": _count(rng),
            "batches_acked": _count(rng),
            "batches_resent": _count(rng),
            "awaiting_ack": _count(rng),
            "awaiting_ack_windows": _count(rng),
            "oldest_unacked_s": rng.choice([0.0, 12.5, 0]),
            "refused": rng.choice([{}, {"not_authorized": 3, "reason_0x9A": 1}]),
            "windows_refused_by_trainer": _count(rng),
            "acks_unknown": _count(rng),
            "acks_bad": _count(rng),
            "subscribe_refused": _count(rng),
            "no_subscriber": _count(rng),
        }
    if part is TrainerPhase:
        return _text(rng)
    if part is TrainerStage:
        stage = rng.choice(
            [
                ("starting", None, None),
                ("training", None, None),
                ("idle", None, None),
                ("fine_tuning", _version(rng), _count(rng)),
            ]
        )
        return dict(zip(("name", "version", "labels"), stage, strict=True))
    if part is GateDetail:
        return {
            "accepted": rng.random() < 0.5,
            "reason": _text(rng),
            "labels_used": _count(rng),
            "seconds": rng.choice([0, 3.25, 1e4]),
            "holdout": _count(rng),
            "champion_drift": _opt(rng, rng.random()),
            "challenger_drift": _opt(rng, rng.random()),
            "champion_original": _opt(rng, 1.0),
            "challenger_original": _opt(rng, 0),
        }
    if part is RolloutDetail:
        tail = {
            "current_version": _opt(rng, _version(rng)),
            "canary_nodes": _ids(rng),
            "ended": [
                {"version": _version(rng), "phase": rng.choice(ENDED_PHASES), "reason": _text(rng)}
                for _ in range(rng.randint(0, 5))
            ],
        }
        head = {"groups": _ids(rng)}
        if rng.random() < 0.2:
            return {"version": None, "phase": "idle", **head, **tail}
        return {
            "version": _version(rng),
            "phase": rng.choice([p for p in ROLLOUT_PHASES if p != "idle"]),
            **head,
            "canaries": _ids(rng),
            "passed": _ids(rng),
            "since": _time(rng),
            "first_serving": _opt(rng, _time(rng)),
            "promote_by": _opt(rng, _time(rng)),
            "watch_s": rng.choice([120.0, 0.5, 60]),
            "reason": _text(rng),
            **tail,
        }
    if part is SimMachines:
        return {
            m: {
                "state": rng.choice(["normal", "bearing_fault", "x" * 64]),
                "drift": rng.choice(["off", "offset temperature=5.0", _text(rng)]),
                "labels": _count(rng),
            }
            for m in _ids(rng)
        }
    if part is TypeModels:
        names = rng.sample(["default", "press", "fan", "t" * 64], rng.randint(0, 4))
        out = []
        for name in names:
            version = _opt(rng, _version(rng))
            out.append(
                {
                    "type": name,
                    "model_version": version,
                    "classes": 0 if version is None else rng.choice([1, 3, 64]),
                    "windows": _count(rng),
                    "unclassified": _count(rng),
                }
            )
        return out
    if part is TypeLoops:
        names = rng.sample(["default", "press", "fan", "t" * 64], rng.randint(0, 4))
        return [
            {
                "type": name,
                "label_events": _count(rng),
                "labels_refused": _count(rng),
                "windows_labeled": _count(rng),
                "windows_asked": _count(rng),
                "accuracy_est": _opt(rng, rng.random()),
                "waiting": _count(rng),
            }
            for name in names
        ]
    raise AssertionError(f"no example for {part.__name__}")


def detail_obj(role: str, seed: int) -> dict[str, Any]:
    """A valid detail of `role`: `v`, every typed part of that role, an untyped key."""
    rng = random.Random(seed)
    detail: dict[str, Any] = {"v": rng.choice([1, 2])} if rng.random() < 0.8 else {}  # some old
    for i, part in enumerate(PARTS):
        if role == part.ROLE and rng.random() < 0.9:
            detail[part.KEY] = part_obj(part, seed * 31 + i)
    detail["policy"] = "waiting"  # a key for people: open
    return detail
