"""The per-machine debouncer: exact switch indices on seeded streams, no broker."""

from __future__ import annotations

import numpy as np
import pytest

from pi_edge.report.debounce import Change, Debouncer
from protocol import CLASSES
from protocol.machine_state import MachineEvent, MachineState


def _switches(d: Debouncer, labels: list[str], machine: str = "m01") -> list[tuple[int, str]]:
    out = []
    for i, label in enumerate(labels):
        change = d.update(machine, label, 0.9, float(i))
        if change is not None:
            out.append((i, change.cls))
    return out


def test_unknown_becomes_a_class_after_exactly_n_windows() -> None:
    for n in (1, 2, 5, 9):
        d = Debouncer(windows=n)
        assert _switches(d, ["drive_wear"] * (n + 3)) == [(n - 1, "drive_wear")]
        assert d.current("m01") == "drive_wear"
    assert Debouncer(windows=3).current("m01") is None


def test_switch_indices_on_a_stream_with_interruptions() -> None:
    labels = (
        ["normal"] * 5  # 0-4: normal at 4
        + ["pump_fault"] * 4  # 5-8: one short of 5
        + ["normal"]  # 9: breaks the run
        + ["pump_fault"] * 5  # 10-14: pump_fault at 14
        + ["bearing_fault"] * 2  # 15-16
        + ["pump_fault"]  # 17: back to the debounced class: breaks the run
        + ["bearing_fault"] * 5  # 18-22: change at 22
        + ["normal"] * 5  # 23-27: normal at 27
    )
    assert _switches(Debouncer(windows=5), labels) == [
        (4, "normal"),
        (14, "pump_fault"),
        (22, "bearing_fault"),
        (27, "normal"),
    ]


def test_flapping_never_changes_state() -> None:
    rng = np.random.default_rng(7)
    d = Debouncer(windows=5)
    assert _switches(d, ["normal"] * 5) == [(4, "normal")]
    # runs of 1..4 windows of random classes never reach 5
    labels: list[str] = []
    while len(labels) < 2_000:
        cls = CLASSES[int(rng.integers(1, 4))]
        labels += [cls] * int(rng.integers(1, 5)) + ["normal"]
    assert _switches(d, labels) == []
    assert d.current("m01") == "normal"


def test_a_run_of_mixed_fault_classes_does_not_count_as_one() -> None:
    d = Debouncer(windows=3)
    _switches(d, ["normal"] * 3)
    assert _switches(d, ["bearing_fault", "pump_fault", "bearing_fault", "pump_fault"]) == []


def test_events_durations_and_confidence() -> None:
    d = Debouncer(windows=2)
    times = [10.0, 11.0, 20.0, 21.0, 35.0, 36.0, 50.0, 51.0]
    labels = ["normal", "normal", "bearing_fault", "bearing_fault"]
    labels += ["drive_wear", "drive_wear", "normal", "normal"]
    confs = [0.5, 0.7, 0.8, 1.0, 0.6, 0.6, 0.9, 0.9]
    changes = [
        c
        for c in (
            d.update("m01", lab, c, t) for lab, c, t in zip(labels, confs, times, strict=True)
        )
        if c is not None
    ]
    got = [(c.event, c.previous, c.cls, c.since, c.ts, c.duration_s) for c in changes]
    assert got == [
        (None, None, "normal", 10.0, 11.0, None),
        ("fault_start", "normal", "bearing_fault", 20.0, 21.0, 10.0),
        ("fault_change", "bearing_fault", "drive_wear", 35.0, 36.0, 15.0),
        ("fault_end", "drive_wear", "normal", 50.0, 51.0, 15.0),
    ]
    assert [c.state for c in changes] == ["normal", "fault", "fault", "normal"]
    assert [c.confidence for c in changes] == pytest.approx([0.6, 0.9, 0.6, 0.9])


def test_first_class_a_fault_is_a_fault_start_without_previous() -> None:
    d = Debouncer(windows=1)
    change = d.update("m01", "pump_fault", 0.8, 5.0)
    assert change is not None and change.event == "fault_start" and change.previous is None
    state, event = change.messages("pi-1", "suspect", 7)
    assert event is not None and event.duration_s is None and event.previous_class is None
    assert state.state == "fault" and state.drift == "suspect" and state.model_version == 7


def test_low_confidence_windows_neither_extend_nor_break_a_run() -> None:
    d = Debouncer(windows=3, min_confidence=0.6)
    seen = [
        d.update("m01", lab, conf, float(i))
        for i, (lab, conf) in enumerate(
            [
                ("normal", 0.9),
                ("pump_fault", 0.3),  # ignored
                ("normal", 0.9),
                ("normal", 0.59),  # ignored
                ("normal", 0.9),  # third confident normal: change
            ]
        )
    ]
    assert [i for i, c in enumerate(seen) if c is not None] == [4]
    assert Debouncer(windows=1, min_confidence=0.5).update("m", "normal", 0.4, 0.0) is None


def test_machines_are_independent_and_forgotten() -> None:
    d = Debouncer(windows=2)
    for i in range(2):
        d.update("a", "normal", 0.9, float(i))
        d.update("b", "pump_fault", 0.9, float(i))
    assert (d.current("a"), d.current("b"), len(d)) == ("normal", "pump_fault", 2)
    d.forget(["a", "zzz"])
    assert (d.current("a"), len(d)) == (None, 1)
    first = [d.update("a", "pump_fault", 0.9, 9.0), d.update("a", "pump_fault", 0.9, 9.5)]
    assert first[0] is None and first[1] is not None and first[1].previous is None


def test_change_messages_decode_with_the_protocol_codec() -> None:
    change = Change("m01", "normal", "bearing_fault", 0.912345, 100.0, 101.0, 42.5)
    state, event = change.messages("pi-1", "ok", 3)
    assert MachineState.from_json(state.to_json()) == state
    assert event is not None and MachineEvent.from_json(event.to_json()) == event
    assert (event.event, event.duration_s, event.confidence) == ("fault_end", 42.5, 0.9123)
    assert Change("m01", "normal", None, 0.9, 0.0, 1.0, None).messages("pi-1", "ok", 1)[1] is None


@pytest.mark.parametrize(("windows", "conf"), [(0, 0.0), (1, -0.1), (1, 1.0)])
def test_bad_parameters_are_refused(windows: int, conf: float) -> None:
    with pytest.raises(ValueError, match="state"):
        Debouncer(windows, conf)


def test_a_node_with_other_class_names_uses_its_own_normal_class() -> None:
    d = Debouncer(windows=1, normal="ok")
    first = d.update("m1", "ok", 0.9, 0.0)
    assert first is not None and first.state == "normal" and first.event is None
    second = d.update("m1", "normal", 0.9, 1.0)  # not this node's normal: a fault class here
    assert second is not None and second.state == "fault" and second.event == "fault_start"
