"""Label requests and the label-free accuracy estimate, pure parts: which held windows the node
asks for (asklabels.py), the request codec (protocol.label_request), the answer reaching exactly
the requested held window (labels.Labeler), and the estimator (estimate.py)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pi_edge.loop.accuracy_estimate import AccuracyEstimator, Reference, atc_threshold, estimate
from pi_edge.loop.label_requests import SPAN_S, AskConfig, Budget, Candidate, LabelAsker, select
from pi_edge.loop.maintenance_labels import Labeler
from protocol import CLASSES, PayloadError, Window
from protocol.label_request import MAX_REQUESTS, LabelRequest, LabelRequests

from ._model import EdgeModels


def _c(
    machine: str, seq: int, predicted: int, confidence: float, margin: float | None = None
) -> Candidate:
    return Candidate(
        machine, seq, 1_000 + seq, predicted, confidence, confidence if margin is None else margin
    )


# -- select ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pool", "k", "per_machine", "asked", "want"),
    [
        # least sure first within a bucket; one per (class, machine) bucket per round
        ([_c("a", 1, 0, 0.9), _c("a", 2, 0, 0.3), _c("a", 3, 0, 0.5)], 2, 5, (), [2, 3]),
        # margin decides before confidence
        ([_c("a", 1, 0, 0.4, 0.30), _c("a", 2, 0, 0.6, 0.05)], 1, 5, (), [2]),
        # spread: the second window of a machine only after every bucket had one
        (
            [_c("a", 1, 0, 0.2), _c("a", 2, 0, 0.21), _c("b", 3, 1, 0.8), _c("c", 4, 2, 0.7)],
            3,
            5,
            (),
            [1, 4, 3],
        ),
        # classes of one machine are buckets of their own, capped per machine
        ([_c("a", 1, 0, 0.2), _c("a", 2, 1, 0.3), _c("a", 3, 2, 0.4)], 5, 2, (), [1, 2]),
        # never asked twice
        ([_c("a", 1, 0, 0.2), _c("a", 2, 0, 0.3)], 5, 5, {("a", 1, 1_001)}, [2]),
        ([_c("a", 1, 0, 0.2)], 0, 5, (), []),
        ([], 3, 3, (), []),
    ],
)
def test_select_picks_the_least_sure_spread_over_classes_and_machines(
    pool: list[Candidate], k: int, per_machine: int, asked: object, want: list[int]
) -> None:
    got = select(pool, k, per_machine, asked)  # type: ignore[arg-type]
    assert [c.seq for c in got] == want


def test_select_on_a_drifted_fleet_asks_every_machine_and_class_before_repeating() -> None:
    rng = np.random.default_rng(0)
    pool = [
        _c(f"m{m}", 100 * m + i, int(rng.integers(4)), float(rng.uniform(0.3, 1.0)))
        for m in range(6)
        for i in range(50)
    ]
    got = select(pool, 8, 2, ())
    assert len(got) == 8
    assert max(sum(c.machine == m for c in got) for m in {c.machine for c in got}) <= 2
    assert len({c.machine for c in got}) >= 4 and len({c.predicted for c in got}) >= 3
    worst = min(pool, key=lambda c: (c.margin, c.confidence))
    assert got[0] == worst  # the least sure of all is asked first


def test_select_covers_every_predicted_class_even_when_two_classes_hold_the_least_sure() -> None:
    # 16 machines, 4 of each class; classes 0 and 2 are confusable (their windows unsure),
    # 1 and 3 sure: 8 picks must still be 2 of each class, from 8 machines
    pool = [
        _c(f"m{m:02d}", 100 * m + i, m % 4, (0.5 if m % 2 == 0 else 0.97) + i / 1000)
        for m in range(16)
        for i in range(20)
    ]
    got = select(pool, 8, 2, ())
    assert sorted(c.predicted for c in got) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert len({c.machine for c in got}) == 8


@pytest.mark.parametrize(
    ("per_minute", "calls", "want"),
    [
        (4, [(3, 0.0), (3, 10.0), (3, 59.9), (3, 60.0)], [3, 1, 0, 3]),
        (0, [(5, 0.0)], [0]),
        (10, [(2, 0.0), (2, 1.0), (20, 2.0)], [2, 2, 6]),
    ],
)
def test_budget_allows_at_most_n_per_minute(
    per_minute: int, calls: list[tuple[int, float]], want: list[int]
) -> None:
    b = Budget(per_minute)
    assert [b.take(n, t) for n, t in calls] == want


@pytest.mark.parametrize(
    ("drift", "est", "below", "due"),
    [
        ("ok", None, 0.9, False),
        ("ok", 0.95, 0.9, False),
        ("ok", 0.85, 0.9, True),
        ("suspect", 0.99, 0.9, True),
        ("drift", None, 0.0, True),
        ("ok", 0.5, 0.0, False),  # below 0: only on drift
    ],
)
def test_asker_asks_only_while_unsure(
    drift: str, est: float | None, below: float, due: bool
) -> None:
    asker = LabelAsker(AskConfig(per_minute=8, per_machine=2, below=below))
    assert asker.due(100.0, drift, est) is due


def test_asker_never_asks_with_a_zero_budget_and_checks_at_most_every_interval() -> None:
    assert not LabelAsker(AskConfig(per_minute=0)).due(0.0, "drift", 0.1)
    asker = LabelAsker(AskConfig(per_minute=8, every_s=2.0))
    assert asker.due(0.0, "drift", None)
    assert not asker.due(1.9, "drift", None) and asker.due(2.0, "drift", None)
    with pytest.raises(ValueError, match="per_machine"):
        AskConfig(per_machine=0)


# -- the request codec and its answer --------------------------------------------------------
def test_label_requests_round_trip_and_refuse_what_is_wrong() -> None:
    reqs = LabelRequests(
        "pi-1",
        1795507200.5,
        tuple(
            LabelRequest(f"m{i}", 1795507190.25 + i, 1795507190.251 + i, "normal", 0.4, i)
            for i in range(3)
        ),
    )
    assert LabelRequests.from_json(reqs.to_json()) == reqs
    good = json.loads(reqs.to_json())
    one = good["requests"][0]
    bad_cases = {
        "bad_version": {**good, "v": 2},
        "bad_field": {**good, "extra": 1},
    }
    for field, value in (
        ("machine", "m/1"),
        ("predicted", "a/b"),
        ("confidence", 1.5),
        ("seq", -1),
        ("seq", 1.5),
        ("to", one["from"]),
        ("from", "yesterday"),
    ):
        bad_cases[f"bad_field {field}"] = {**good, "requests": [{**one, field: value}]}
    bad_cases["bad_field empty"] = {**good, "requests": []}
    bad_cases["bad_field many"] = {**good, "requests": [one] * (MAX_REQUESTS + 1)}
    for name, obj in bad_cases.items():
        with pytest.raises(PayloadError) as info:
            LabelRequests.from_json(json.dumps(obj))
        assert info.value.kind == name.split()[0], name
    with pytest.raises(PayloadError) as info:
        LabelRequests.from_json(b"x" * 20_000)
    assert info.value.kind == "too_large"


def test_the_answer_to_a_request_labels_exactly_that_held_window() -> None:
    lab = Labeler(None, hold_windows=100, hold_s=600.0)
    t0 = 1_795_507_000_000_000_000
    data = np.zeros((60, 4), np.float32)
    windows = [Window(m, i, t0 + i * 20_000_000, data) for m in ("m01", "m02") for i in range(20)]
    sureness = [(0.5 + i / 100, 0.1) for i in range(len(windows))]
    lab.hold(windows, [0] * len(windows), [0.0] * len(windows), now=1.0, sureness=sureness)
    held = {(w.machine, w.seq): (conf, margin) for w, _, conf, margin in lab.held.unlabeled()}
    assert len(held) == 40 and held[("m02", 3)] == sureness[23]
    target = windows[7]  # m01 #7, its neighbours 20 ms either side
    ts = target.timestamp_ns / 1e9
    req = LabelRequest(target.machine, ts, ts + SPAN_S, "normal", 0.5, target.seq)
    wire = LabelRequests("pi-1", 2.0, (req,)).to_json()
    answer = LabelRequests.from_json(wire).requests[0].label_event("pump_fault", source="test")
    lab.submit(answer.to_json())
    kept = lab.pump(now=3.0)
    assert [(k.window.machine, k.window.seq, k.window.label, k.reason) for k in kept] == [
        ("m01", 7, CLASSES.index("pump_fault"), "labeled")
    ]
    assert ("m01", 7) not in {(w.machine, w.seq) for w, *_ in lab.held.unlabeled()}
    new = Window("m01", 99, target.timestamp_ns + 2_000, data)  # 2 µs later: outside
    assert lab.label_new([new])[0].label is None


# -- the estimate ----------------------------------------------------------------------------
REF = Reference(1.0, 0.98, ((0.01, 0.9), (0.05, 0.95), (0.25, 0.98), (0.5, 0.99)))


@pytest.mark.parametrize(
    ("conf", "ref", "method", "want"),
    [
        ([0.99] * 99 + [0.85], REF, "atc", 0.99 / 0.99),  # validation-like: 1.0
        ([0.99] * 50 + [0.5] * 50, REF, "atc", 0.5 / 0.99),
        ([0.99] * 50 + [0.5] * 50, REF, "doc", 1.0 - (0.98 - 0.745)),
        ([0.99] * 50 + [0.5] * 50, REF, "mean_confidence", 0.745),
        ([0.99] * 50 + [0.5] * 50, None, "auto", 0.745),  # no manifest figures
        ([0.99] * 50 + [0.5] * 50, Reference(0.95, 0.97), "auto", 0.95 - (0.97 - 0.745)),
        ([1.0] * 10, Reference(0.9, 0.5), "doc", 1.0),  # clipped to [0, 1]
    ],
)
def test_estimate_table(conf: list[float], ref: Reference | None, method: str, want: float) -> None:
    assert estimate(np.array(conf), ref, method) == pytest.approx(want, abs=1e-9)


def test_atc_threshold_interpolates_the_validation_quantiles() -> None:
    assert atc_threshold(REF) == (0.9, 0.99)
    t, share = atc_threshold(Reference(0.85, 0.9, ((0.05, 0.6), (0.25, 0.8))))
    assert (round(t, 6), round(share, 6)) == (0.7, 0.85)
    with pytest.raises(ValueError, match="quantiles"):
        atc_threshold(Reference(0.9, 0.9))
    assert Reference.from_metrics({"accuracy": 2.0, "confidence_q05": 0.5}).accuracy is None


def test_estimator_keeps_the_last_n_windows_per_model_and_its_labeled_accuracy() -> None:
    est = AccuracyEstimator(window=10)
    assert est.summary()["accuracy_est"] is None
    metrics = {"accuracy": 1.0, "mean_confidence": 0.9}
    est.observe(1, metrics, np.full(25, 0.9), np.zeros(25, np.int64), [None] * 25)
    s = est.summary()
    assert (s["windows"], s["accuracy_est"], s["method"], s["labeled_accuracy"]) == (
        10,
        1.0,
        "doc",
        None,
    )
    labels = [0, 1, None, 0] + [None] * 4
    est.observe(1, metrics, np.full(8, 0.6), np.zeros(8, np.int64), labels)
    s = est.summary()  # 2 of 0.9 and 8 of 0.6 in the window: mean 0.66
    assert s["accuracy_est"] == pytest.approx(1.0 - (0.9 - 0.66))
    assert (s["labeled"], s["labeled_accuracy"]) == (3, pytest.approx(2 / 3, abs=1e-4))
    est.observe(2, {}, np.array([0.7]), np.zeros(1, np.int64), [None])  # a new model: anew
    s = est.summary()
    assert (s["windows"], s["accuracy_est"], s["method"], s["model_version"]) == (
        1,
        0.7,
        "mean_confidence",
        2,
    )
    with pytest.raises(ValueError, match="method"):
        AccuracyEstimator(method="magic")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=20,
)


@settings(max_examples=1000, deadline=None, database=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        _JSON.map(lambda o: json.dumps(o).encode()),
        st.dictionaries(
            st.sampled_from(["machine", "from", "to", "predicted", "confidence", "seq", "x"]),
            _JSON,
        ).map(lambda r: json.dumps({"v": 1, "node": "pi-1", "ts": 5.0, "requests": [r]}).encode()),
    )
)
def test_label_requests_decoder_raises_only_payload_errors(payload: bytes) -> None:
    with contextlib.suppress(PayloadError):
        LabelRequests.from_json(payload)


def test_the_estimate_bench_reports_every_mode_against_the_truth(
    models: EdgeModels, tmp_path: Path
) -> None:
    """bench/estimate.py on the test model: one row per scenario, the truth measured, and the
    estimate right where the traffic looks like validation data."""
    from bench.estimate import MODES
    from bench.estimate import main as bench_main

    out = tmp_path / "estimate.json"
    args = ["--model", str(models.bundle_path), "--public-key", str(models.public_key_path)]
    assert bench_main([*args, "--windows", "1024", "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    assert [r["mode"] for r in d["rows"]] == ["none"] + [
        m for m in MODES if m != "none" for _ in (0, 1)
    ]
    none = d["rows"][0]
    assert none["chunks"] == 2 and none["true_accuracy"] >= 0.95
    assert d["default_method"] == "doc"  # the test manifest has no confidence quantiles
    assert d["mae_undrifted"]["doc"] <= 0.05
    gain = next(r for r in d["rows"] if r["scenario"] == "gain (all)")
    assert gain["true_accuracy"] < none["true_accuracy"] - 0.1  # a drift the model suffers from


def test_the_dashboard_and_the_metrics_show_the_estimate() -> None:
    from prometheus_client.core import Metric

    from pi_edge.report.dashboard import Snapshot, render
    from pi_edge.report.prometheus import edge_families
    from protocol import Status
    from protocol.status_detail import EstimateDetail

    from .test_pure import _text

    estimate = EstimateDetail(0.8125, 512, 0.75, 12, "atc", 1).to_json_obj()
    snap = Snapshot("pi-1", 1, 3.0, "connected", 0, 8, 0, 10.0, evidence={"estimate": estimate})
    assert "accuracy estimate 0.812 (atc, last 512 windows" in _text(render(snap))
    status = Status(
        "pi-1",
        "edge",
        "online",
        "0.1.0",
        1,
        detail={"estimate": estimate, "labels": {"requests": {"requests": 2, "windows": 7}}},
    )
    fams: dict[str, Metric] = {f.name: f for f in edge_families(status, snap, 0)}
    [sample] = fams["edgeloop_accuracy_estimate"].samples
    assert (sample.labels, sample.value) == ({"method": "atc"}, 0.8125)
    assert fams["edgeloop_labeled_accuracy_recent"].samples[0].value == 0.75
    assert fams["edgeloop_label_requests_windows"].samples[0].value == 7


@pytest.mark.parametrize(
    ("drifting", "sure_at", "want"),
    [
        ((), 1.0, ["a", "b", "c"]),  # everything is a candidate
        ((), 0.9, ["a"]),  # healthy machines: only their unsure windows
        ({"c"}, 0.9, ["a", "c"]),  # a drifting machine: its confident windows too
        ({"b", "c"}, 0.1, ["b", "c"]),
    ],
)
def test_a_request_skips_the_sure_windows_of_healthy_machines(
    drifting: set[str], sure_at: float, want: list[str]
) -> None:
    asker = LabelAsker(AskConfig(per_minute=8, per_machine=1))
    pool = [_c("a", 1, 0, 0.5), _c("b", 2, 0, 0.95), _c("c", 3, 1, 0.99)]
    picks = asker.pick(pool, 0.0, drifting=drifting, sure_at=sure_at)
    assert sorted(c.machine for c in picks) == want


def test_sure_at_follows_the_serving_model() -> None:
    est = AccuracyEstimator()
    assert est.sure_at == 0.9  # no model yet
    metrics = {"accuracy": 1.0, "confidence_q01": 0.9961, "confidence_q05": 0.9961}
    est.observe(3, metrics, np.array([0.99]), np.zeros(1, np.int64), [None])
    assert est.sure_at == pytest.approx(0.9941)


def test_in_drift_the_asker_spreads_over_machines_asked_longest_ago_not_over_predictions() -> None:
    # regime drift: the model predicts class 1 for everything, so predicted classes say
    # nothing; one window per machine, and the next request goes to machines not asked yet
    asker = LabelAsker(AskConfig(per_minute=8, per_machine=2))
    pool = [_c(f"m{m:02d}", 100 * m + i, 1, 0.6 + i / 100) for m in range(12) for i in range(5)]
    drifting = {f"m{m:02d}" for m in range(12)}
    first = asker.pick(pool, 0.0, drifting=drifting)
    assert len(first) == 8 and len({c.machine for c in first}) == 8
    second = asker.pick(pool, 61.0, drifting=drifting)
    assert {c.machine for c in second[:4]} == drifting - {c.machine for c in first}
    assert all(c.seq % 100 == 0 for c in first)  # each machine's least sure window


def test_among_equally_sure_windows_the_newest_is_asked_so_the_answer_finds_it_held() -> None:
    pool = [_c("m01", seq, 1, 1.0) for seq in range(10)]  # confidently (wrong) everywhere
    assert [c.seq for c in select(pool, 2, 5, ())] == [9, 8]
