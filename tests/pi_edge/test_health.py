"""The health rule after a swap (pure), the rollback record on disk, and the model manager's
automatic rollback without a broker (real bundles, figures fed as the worker would)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from pi_edge.intake.inbox import BatchPolicy
from pi_edge.model.health_watch import (
    Figures,
    HealthPolicy,
    HealthState,
    ModelHealth,
    Rolling,
    Verdict,
    accuracy_drop_z,
    judge,
)
from pi_edge.model.lifecycle import ModelManager
from pi_edge.model.state_dir import ModelStore
from pi_edge.model.vetting import Expected
from protocol import CHANNELS, CLASSES, DEFAULT_PREFIX, Bundle, Manifest, decode_bundle

from ._model import EdgeModels

P = HealthPolicy()
OLD = Figures(windows=500, confidence_sum=475.0, ood=5, labeled=100, correct=97)  # v1 on site
OLD_UNLABELED = Figures(windows=500, confidence_sum=475.0, ood=5)


def f(windows: int, conf: float, ood: float = 0.0, labeled: int = 0, acc: float = 0.0) -> Figures:
    """Figures from rates: mean confidence, out-of-distribution share, labeled accuracy."""
    return Figures(windows, conf * windows, round(ood * windows), labeled, round(acc * labeled))


# (name, baseline, since the swap, final, expected state, deciding figure)
CASES = [
    ("too few windows yet", OLD_UNLABELED, f(150, 0.3), False, "watching", None),
    ("too few windows at the end", OLD_UNLABELED, f(150, 0.3), True, "inconclusive", None),
    ("no baseline at the end", Figures(), f(900, 0.3), True, "inconclusive", None),
    ("confidence drop > 0.15", OLD_UNLABELED, f(200, 0.79), False, "worse", "confidence"),
    ("confidence drop 0.14 is no reason", OLD_UNLABELED, f(400, 0.81), False, "watching", None),
    ("confidence drop 0.14 passes", OLD_UNLABELED, f(400, 0.81), True, "passed", None),
    ("confidence up (fine-tuned)", OLD_UNLABELED, f(400, 0.99), True, "passed", None),
    ("ood up > 0.2", OLD_UNLABELED, f(300, 0.95, ood=0.25), False, "worse", "ood"),
    ("ood up 0.15 is no reason", OLD_UNLABELED, f(300, 0.95, ood=0.16), True, "passed", None),
    ("accuracy collapse on 20 labels", OLD, f(100, 0.95, 0, 20, 0.1), False, "worse", "accuracy"),
    ("19 labels: not yet", OLD, f(100, 0.95, 0, 19, 0.0), False, "watching", None),
    ("accuracy 0.85 on 25: not proven", OLD, f(100, 0.95, 0, 25, 0.84), False, "watching", None),
    ("accuracy 0.80 on 200: proven", OLD, f(900, 0.95, 0, 200, 0.80), False, "worse", "accuracy"),
    ("accuracy 0.95 passes", OLD, f(900, 0.95, 0, 200, 0.95), True, "passed", None),
    # labels outrank: accurate on labels, unsure and flagged on all windows → kept
    ("labels outrank confidence", OLD, f(900, 0.5, 0.5, 100, 0.97), True, "passed", None),
    # labels flowed before the swap: confidence waits for them...
    ("confidence waits for labels", OLD, f(900, 0.5, 0, 5, 1.0), False, "watching", None),
    # ... and decides at the end if too few came
    ("too few labels by the end", OLD, f(900, 0.5, 0, 5, 1.0), True, "worse", "confidence"),
    # a drift: the old model was unsure and often wrong; the new one is better → kept
    (
        "fine-tuned for a drift",
        Figures(500, 0.7 * 500, 150, 100, 55),
        f(900, 0.93, 0.02, 100, 0.97),
        True,
        "passed",
        None,
    ),
]


@pytest.mark.parametrize(
    ("baseline", "current", "final", "state", "signal"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_judge_table(
    baseline: Figures, current: Figures, final: bool, state: str, signal: str | None
) -> None:
    verdict = judge(baseline, current, P, final)
    assert (verdict.state.value, verdict.signal) == (state, signal), verdict.reason
    assert 0 < len(verdict.reason) <= 200


def test_accuracy_test_is_one_sided_and_honest_at_the_extremes() -> None:
    perfect = Figures(100, 90.0, 0, 100, 100)
    assert accuracy_drop_z(perfect, Figures(20, 18.0, 0, 20, 20), 0.05) < 0  # no division by 0
    assert accuracy_drop_z(perfect, Figures(20, 18.0, 0, 20, 0), 0.05) > 10
    better = Figures(100, 90.0, 0, 100, 99)
    assert accuracy_drop_z(Figures(100, 90.0, 0, 100, 60), better, 0.05) < -5  # up, not down


def test_rolling_keeps_the_last_windows_and_longer_labels() -> None:
    r = Rolling(windows=100, labeled=10)
    for i in range(50):  # 50 batches of 10 windows, one labeled each, the last 10 wrong
        r.add(Figures(10, 10.0 if i < 40 else 5.0, 0, 1, 1 if i < 40 else 0))
    got = r.figures()
    assert (got.windows, got.labeled) == (100, 10)
    assert got.mean_confidence == pytest.approx(0.5) and got.accuracy == 0.0
    r.clear()
    assert r.figures() == Figures()


def test_a_watch_without_traffic_ends_on_tick_and_a_verdict_is_reported_once() -> None:
    h = ModelHealth(watch_s=10.0)
    h.installed(None, 1, now=0.0, watch=True)
    for _ in range(20):
        h.observe(1, f(32, 0.95), now=1.0)
    h.installed(1, 2, now=2.0, watch=True)
    assert h.tick(now=5.0) is None
    ended = h.tick(now=12.0)
    assert ended is not None and ended.state is HealthState.INCONCLUSIVE
    assert h.tick(now=13.0) is None
    assert h.snapshot(13.0, 100.0)["verdict"] == "inconclusive"


def test_no_watch_when_off_at_start_or_for_an_older_version() -> None:
    off = ModelHealth(watch_s=0.0)
    off.installed(1, 2, now=0.0, watch=True)
    assert off.snapshot(0.0, 0.0)["verdict"] == "off" and off.watch is None
    h = ModelHealth(watch_s=5.0)
    h.installed(3, 2, now=0.0, watch=True)
    assert h.watch is None and h.snapshot(0.0, 0.0)["verdict"] == "idle"
    h.installed(2, 4, now=0.0, watch=False)  # from the state dir after a rollback
    assert h.watch is None
    h.installed(4, 5, now=0.0, watch=True)
    assert h.snapshot(0.0, 50.0)["until"] == 55.0
    h.installed(5, 6, now=1.0, watch=True)  # v6 before v5's watch ended
    assert h.last is None and h.snapshot(1.0, 0.0)["watching"] == 6


def test_policy_and_figures_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="min_windows"):
        HealthPolicy(min_windows=0)
    with pytest.raises(ValueError, match="rolling"):
        HealthPolicy(min_windows=600)
    with pytest.raises(ValueError):
        Figures(windows=2, confidence_sum=3.0)
    with pytest.raises(ValueError):
        Figures(windows=2, labeled=1, correct=2)
    assert len(Verdict(HealthState.WORSE, "x" * 500).reason) == 200


def test_the_store_records_rollbacks_newest_last_and_survives_a_bad_file(
    models: EdgeModels, tmp_path: Path
) -> None:
    store = ModelStore(tmp_path)
    store.save(decode(models, 1))
    for v in range(2, 12):
        store.save(decode(models, v))
        assert store.rollback("r" * 300, auto=v % 2 == 0, now=float(v)) == (v, v - 1)
        store.save(decode(models, v))  # the trainer's next version: rolled forward again
    got = store.rollbacks()
    assert [r["from"] for r in got] == list(range(4, 12))  # the last 8
    assert got[-1] == {"from": 11, "to": 10, "reason": "r" * 200, "ts": 11.0, "auto": False}
    path = store.dir / "rollbacks.json"
    body = json.loads(path.read_text())
    body["rollbacks"].append({"from": "x"})
    path.write_text(json.dumps(body))
    assert len(store.rollbacks()) == 8  # the bad entry skipped
    path.write_text("{not json")
    assert store.rollbacks() == []


def decode(models: EdgeModels, version: int) -> Bundle:
    return decode_bundle(models.bundle(version), models.public_key)


class _Worker:
    """What the service does around the manager: install pending models between batches."""

    def __init__(self) -> None:
        self.pending = threading.Event()
        self.refused: list[str] = []
        self.installed: list[int] = []

    def on_install(self, manifest: Manifest) -> None:
        self.installed.append(manifest.version)

    def take(self, manager: ModelManager, timeout: float = 10.0) -> int:
        assert self.pending.wait(timeout), "no model was handed over"
        self.pending.clear()
        pending = manager.take_pending()
        assert pending is not None
        manager.install(*pending)
        return pending[0].version


def _batch(manager: ModelManager, version: int, right: bool) -> None:
    """A batch of 32 confident windows, 8 labeled, right or wrong."""
    probs = np.full((32, 4), 0.01, np.float32)
    probs[:, 0] = 0.97
    top = probs.argmax(axis=1)
    labels: list[int | None] = [None] * 32
    for i in range(0, 32, 4):
        labels[i] = 0 if right else 1
    manager.observe(version, probs, top, np.zeros(32, bool), labels)


def test_the_manager_rolls_a_worse_model_back_by_itself(models: EdgeModels, tmp_path: Path) -> None:
    w = _Worker()
    manager = ModelManager(
        tmp_path,
        public_key=models.public_key,
        allow_unsigned=False,
        site=DEFAULT_PREFIX,
        expected=Expected(CLASSES, CHANNELS, 60),
        threads=1,
        policy=BatchPolicy(),
        on_pending=w.pending.set,
        on_refused=w.refused.append,
        on_install=w.on_install,
        disk_poll_s=0.05,
        watch_s=60.0,
    )
    manager.load_startup(models.bundle_path)
    manager.start()
    try:
        for _ in range(20):  # v1: 640 windows, 160 labeled, all right
            _batch(manager, 1, right=True)
        manager.submit(models.bundle(2))
        assert w.take(manager) == 2
        assert manager.health_detail()["model_health"]["watching"] == 2
        for _ in range(3):  # v2: 24 labeled, all wrong
            _batch(manager, 2, right=False)
        assert w.take(manager) == 1, "no automatic rollback"
        detail = manager.health_detail()
        (entry,) = detail["rollbacks"]
        assert (entry["from"], entry["to"], entry["auto"]) == (2, 1, True)
        assert detail["model_health"]["verdict"] == "worse"
        assert detail["model_health"]["auto_rollbacks"] == 1
        assert ModelStore(tmp_path).blocked() == [2]
        manager.submit(models.bundle(2))  # the retained copy again: ignored
        assert not w.pending.wait(0.5)
        assert w.refused == []
    finally:
        manager.stop()
