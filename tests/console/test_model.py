"""SiteModel without a broker or a screen: rows, series and the loop's timeline from statuses."""

from __future__ import annotations

from typing import Any

import pytest

from console.model import SiteModel, gate_text
from protocol import Prediction, Status
from protocol.machine_state import MachineState
from protocol.status_detail import (
    DriftDetail,
    EstimateDetail,
    GateDetail,
    MachineDrift,
    RecentMachines,
    SimMachine,
    SimMachines,
    TrainerPhase,
    TrainerStage,
)

T0 = 1_700_000_000.0


def edge(node: str = "pi-1", version: int | None = 1, **kw: Any) -> Status:
    metrics = {
        "windows_per_s": 160.0,
        "queue_depth": 3.0,
        "queue_capacity": 1024.0,
        "drops": 2.0,
        "latency_p99_ms": 4.0,
        "cpu_percent": 17.0,
        "rss_mb": 81.5,
        **kw.pop("metrics", {}),
    }
    return Status(node, "edge", kw.pop("state", "online"), "0.1.0", version, T0, metrics, **kw)


def drift_detail(
    machines: dict[str, str], seen: int = 0, wrong: int = 0, recent: list[str] | None = None
) -> dict[str, Any]:
    levels = {m: MachineDrift(s, 0.1, 0.0) for m, s in machines.items()}
    drift = DriftDetail("ok", 0.0, "ok", seen, wrong, levels, len(levels))
    return {
        "v": 1,
        "drift": drift.to_json_obj(),
        "machines": RecentMachines(tuple(recent or sorted(machines))).to_json_obj(),
    }


IDLE = TrainerStage("idle")


def trainer(
    stage: TrainerStage, batches: int = 0, gate: GateDetail | None = None, v: int = 1
) -> Status:
    detail: dict[str, Any] = {
        "v": 1,
        "phase": TrainerPhase(stage.text()).to_json_obj(),
        "stage": stage.to_json_obj(),
        "policy": "waiting",
    }
    if gate is not None:
        detail["last_gate"] = gate.to_json_obj()
    metrics = {"batches": float(batches), "stored_labeled": 10.0 * batches}
    return Status("trainer", "trainer", "online", "0.1.0", v, T0, metrics, detail=detail)


def sim(drifts: dict[str, str]) -> Status:
    machines = SimMachines({m: SimMachine("normal", d, 0) for m, d in drifts.items()})
    detail = {"v": 1, "machines": machines.to_json_obj()}
    return Status(
        "sim", "simulator", "online", "0.1.0", None, T0, {"windows_per_s": 160.0}, detail=detail
    )


def pred(machine: str, label: str = "normal", drift: str = "ok", total: float = 3.5) -> Prediction:
    return Prediction(
        machine, 1, label, 0.9, (0.9, 0.05, 0.03, 0.02), 1, drift=drift, latency_ms={"total": total}
    )


def texts(site: SiteModel) -> list[str]:
    return [e.text for e in site.timeline]


def kinds(site: SiteModel) -> list[str]:
    return [e.kind for e in site.timeline]


def test_a_node_row_shows_rate_inbox_drops_cpu_rss_and_model() -> None:
    site = SiteModel()
    site.status(edge(), T0)
    [(key, cells)] = site.node_rows(T0 + 1)
    assert key == "pi-1"
    assert cells == (
        "pi-1",
        "edge",
        "online",
        "160.0",
        "3/1024",
        "2",
        "17",
        "82",
        "v1",
        "-",
        "-",
        "1s",
    )


def test_a_node_row_shows_the_label_free_accuracy_estimate() -> None:
    site = SiteModel()
    estimate = EstimateDetail(0.8125, 512, None, 0, "atc", 1).to_json_obj()
    site.status(edge(detail={"v": 1, "estimate": estimate}), T0)
    [(_, cells)] = site.node_rows(T0 + 1)
    assert cells[9] == "0.812"
    unknown = EstimateDetail(None, 0, None, 0, "atc", 1).to_json_obj()
    site.status(edge(detail={"v": 1, "estimate": unknown}), T0 + 2)
    assert site.node_rows(T0 + 3)[0][1][9] == "-"


def test_after_a_fleet_member_took_a_machine_its_newer_state_counts_in_any_order() -> None:
    """Each node keeps its own retained state; a subscriber gets both in no set order."""
    site = SiteModel()
    old = MachineState("m01", "pi-1", "fault", "pump_fault", 0.9, T0 - 60, "ok", 3, T0 - 60)
    new = MachineState("m01", "pi-2", "normal", "normal", 0.97, T0 - 5, "ok", 3, T0 - 5)
    site.machine_state(new, T0)
    site.machine_state(old, T0)  # pi-1's, retained before it gave m01 away: older
    [(_, cells)] = site.machine_rows(T0)
    assert cells[1:3] == ("normal", "normal") and cells[5] == "pi-2"
    later = MachineState("m01", "pi-1", "fault", "drive_wear", 0.8, T0 + 1, "ok", 3, T0 + 1)
    site.machine_state(later, T0 + 1)  # pi-1 took it back: newer, shown
    [(_, cells)] = site.machine_rows(T0 + 1)
    assert cells[2] == "drive_wear" and cells[5] == "pi-1"


def test_a_machine_row_joins_its_state_prediction_and_owning_node() -> None:
    site = SiteModel()
    site.prediction(pred("m01", "bearing_fault", drift="suspect", total=7.25), T0)
    state = MachineState("m01", "pi-2", "fault", "bearing_fault", 0.93, T0 - 5, "ok", 3, T0)
    site.machine_state(state, T0)
    [(key, cells)] = site.machine_rows(T0 + 2)
    assert key == "m01"
    assert cells == ("m01", "fault", "bearing_fault", "0.93", "suspect", "pi-2", "7.2", "2s")
    assert site.current_class("m01") == "bearing_fault"
    assert site.current_class("m99") is None


def test_the_loop_from_drift_to_gate_swap_and_rollback_reads_as_a_timeline() -> None:
    site = SiteModel()
    site.prediction(pred("m03"), T0)
    site.status(sim({"m03": "off"}), T0)
    site.status(edge(detail=drift_detail({"m03": "ok"})), T0)
    site.status(trainer(IDLE), T0)
    start = len(site.timeline)
    site.status(sim({"m03": "step"}), T0 + 1)
    site.status(edge(detail=drift_detail({"m03": "suspect"})), T0 + 2)
    site.status(edge(detail=drift_detail({"m03": "drift"})), T0 + 3)
    site.status(trainer(IDLE, batches=2), T0 + 4)
    site.status(trainer(IDLE, batches=3), T0 + 4.5)  # within 30 s: summed into the next
    site.status(trainer(TrainerStage("fine_tuning", 1, 480), batches=5), T0 + 34)
    gate = GateDetail(
        accepted=True,
        reason="beats the champion on drift data",
        labels_used=480,
        seconds=3.0,
        holdout=96,
        champion_drift=0.41,
        challenger_drift=0.95,
        champion_original=0.97,
        challenger_original=0.965,
    )
    site.status(trainer(IDLE, batches=5, gate=gate, v=2), T0 + 6)
    site.status(edge(version=2, detail=drift_detail({"m03": "drift"})), T0 + 7)
    site.status(sim({"m03": "off"}), T0 + 8)
    site.status(edge(version=2, detail=drift_detail({"m03": "ok"})), T0 + 9)
    site.status(edge(version=1, detail=drift_detail({"m03": "ok"})), T0 + 10)
    new = list(zip(kinds(site), texts(site), strict=True))[start:]
    assert new == [
        ("drift", "simulator: drift started (step) on m03"),
        ("drift", "m03 suspect on pi-1"),
        ("drift", "drift detected on m03 by pi-1"),
        ("batches", "trainer stored 2 drift batch(es) (total 2; 20 labeled windows stored)"),
        ("batches", "trainer stored 3 drift batch(es) (total 5; 50 labeled windows stored)"),
        ("fine-tune", "trainer: fine-tuning v1 on 480 labels"),
        ("swap", "trainer published model v2 (was v1)"),
        ("phase", "trainer: idle"),
        ("gate", gate_text(gate)),
        ("swap", "pi-1 swapped model v1 → v2"),
        ("drift", "simulator: drift stopped on m03"),
        ("drift", "m03 back to ok on pi-1 (was drift)"),
        ("rollback", "pi-1 rolled back model v2 → v1"),
    ]
    assert "0.410 → 0.950" in gate_text(gate) and "0.970 → 0.965" in gate_text(gate)


def test_changes_of_many_machines_at_once_are_one_entry() -> None:
    site = SiteModel()
    machines = [f"m{i:02d}" for i in range(1, 17)]
    for m in machines:
        site.prediction(pred(m), T0)
    site.status(sim(dict.fromkeys(machines, "off")), T0)
    site.status(edge(detail=drift_detail(dict.fromkeys(machines, "ok"))), T0)
    start = len(site.timeline)
    site.status(sim(dict.fromkeys(machines, "step")), T0 + 1)
    site.status(
        edge(detail=drift_detail({**dict.fromkeys(machines, "drift"), "m05": "ok"})), T0 + 2
    )
    assert texts(site)[start:] == [
        "simulator: drift started (step) on 16 machines (m01 … m16)",
        "drift detected on 15 machines (m01 … m16) by pi-1",
    ]


def test_offline_and_back_are_on_the_timeline_and_the_will_keeps_the_last_figures() -> None:
    site = SiteModel()
    site.status(edge(version=3), T0)
    site.status(Status.offline("pi-1", "edge", "0.1.0"), T0 + 1)
    site.status(edge(version=3), T0 + 2)
    site.status(edge(version=3, state="degraded", reason="worker thread died"), T0 + 3)
    assert texts(site) == [
        "pi-1 (edge) online",
        "pi-1 (edge) offline",
        "pi-1 (edge) online",
        "pi-1 (edge) degraded: worker thread died",
    ]
    assert "swapped" not in " ".join(texts(site))  # the Will's missing version is no swap


def test_sparklines_sum_throughput_take_the_worst_p99_and_accuracy_from_new_labels() -> None:
    site = SiteModel()
    site.status(edge("pi-1", metrics={"latency_p99_ms": 4.0}, detail=drift_detail({}, 10, 1)), T0)
    site.status(edge("pi-2", metrics={"latency_p99_ms": 9.0}, detail=drift_detail({}, 0, 0)), T0)
    site.status(sim({}), T0)  # the simulator's rate is not classified throughput
    site.tick(T0)
    site.status(edge("pi-1", detail=drift_detail({}, 30, 1)), T0 + 2)
    site.status(edge("pi-2", metrics={"latency_p99_ms": 9.0}, detail=drift_detail({}, 20, 10)), T0)
    site.tick(T0 + 2)
    site.tick(T0 + 4)  # no new labels: no accuracy point
    site.status(edge("pi-2", state="offline"), T0 + 5)
    site.tick(T0 + 6)
    assert list(site.series["throughput"]) == [320.0, 320.0, 320.0, 160.0]
    assert list(site.series["latency_p99"]) == [9.0, 9.0, 9.0, 4.0]
    assert list(site.series["accuracy"]) == [0.75]  # 40 new labels, 10 wrong


def test_everything_is_bounded() -> None:
    site = SiteModel(series_len=5, timeline_len=3, max_machines=10, max_nodes=2)
    for i in range(50):
        site.prediction(pred(f"m{i:02d}"), T0 + i)
        site.status(edge(f"pi-{i}"), T0 + i)
        site.tick(T0 + i)
    assert len(site.machines) == 10 and min(site.machines) == "m40"
    assert sorted(site.nodes) == ["pi-48", "pi-49"]
    assert len(site.series["throughput"]) == 5
    assert len(site.timeline) == 3 and site.timeline_added == 50
    with pytest.raises(ValueError):
        SiteModel(series_len=0)


def test_a_node_status_moves_a_machine_to_its_new_owner() -> None:
    site = SiteModel()
    site.prediction(pred("m01"), T0)
    site.status(edge("pi-1", detail=drift_detail({}, recent=["m01"])), T0)
    assert site.machines["m01"].node == "pi-1"
    site.status(edge("pi-2", detail=drift_detail({}, recent=["m01"])), T0 + 1)
    assert site.machines["m01"].node == "pi-2"


def test_a_fine_tune_shorter_than_a_status_interval_is_told_from_its_gate_decision() -> None:
    site = SiteModel()
    site.status(trainer(IDLE), T0)
    gate = GateDetail(False, "no better", 300, 1.5, 60, 0.9, 0.9, None, None)
    site.status(trainer(IDLE, gate=gate), T0 + 2)
    assert kinds(site)[-2:] == ["fine-tune", "gate"]
    assert texts(site)[-2] == (
        "trainer fine-tuned on 300 labels in 1.5 s (judged on 60 held-out drift windows)"
    )
    assert texts(site)[-1].startswith("gate REFUSED challenger: drift 0.900 → 0.900, original ?")


def test_the_stage_decides_a_fine_tune_never_the_phase_text() -> None:
    site = SiteModel()
    site.status(trainer(IDLE), T0)
    prose = Status(  # a trainer from before detail.stage: its phase text is only shown
        "trainer",
        "trainer",
        "online",
        "0.1.0",
        1,
        T0,
        {},
        detail={"phase": "fine-tuning v1 on 480 labels"},
    )
    site.status(prose, T0 + 1)
    site.status(trainer(TrainerStage("training")), T0 + 2)
    assert list(zip(kinds(site), texts(site), strict=True))[-2:] == [
        ("phase", "trainer: fine-tuning v1 on 480 labels"),
        ("fine-tune", "trainer: training initial model"),
    ]
    assert site.node_rows(T0 + 3)[0][1][10] == "training initial model"


def test_a_malformed_part_is_counted_and_a_detail_of_another_version_ignored() -> None:
    site = SiteModel()
    site.prediction(pred("m01"), T0)
    site.status(edge(detail=drift_detail({"m01": "ok"})), T0)
    broken = drift_detail({"m01": "drift"})
    broken["drift"]["labeled_wrong"] = 10**6  # more wrong than seen
    site.status(edge(detail=broken), T0 + 1)
    site.status(edge(detail={**drift_detail({"m01": "drift"}), "v": 3}), T0 + 2)
    assert "drift detected" not in " ".join(texts(site))
    assert site.refused == {"bad_field": 1, "bad_version": 1}
    site.status(edge(detail=drift_detail({"m01": "drift"})), T0 + 3)
    assert texts(site)[-1] == "drift detected on m01 by pi-1"
