"""The fleet: commands applied per machine, labels, and the windows each tick produces."""

from __future__ import annotations

import numpy as np
import pytest

from protocol import CHANNELS, Command, ConfigError
from sensor_sim import Fleet, FleetConfig, SimError, machine_ids

TEMP = CHANNELS.index("temperature")


def _fleet(n: int = 4, label_fraction: float = 0.0) -> Fleet:
    return Fleet(
        FleetConfig(machines=n, label_fraction=label_fraction, mtbf_s=0.0), np.random.default_rng(0)
    )


def _temps(fleet: Fleet, ticks: int = 200) -> np.ndarray:
    out = [[w.data[:, TEMP].mean() for w in fleet.tick(0.1, 0)] for _ in range(ticks)]
    return np.asarray(out).mean(axis=0)


def test_machine_ids_are_zero_padded():
    assert machine_ids(16)[0] == "m01" and machine_ids(16)[-1] == "m16"


def test_tick_gives_one_window_per_machine_with_increasing_seq():
    fleet = _fleet(3)
    first, second = fleet.tick(0.1, 5), fleet.tick(0.1, 6)
    assert [w.seq for w in first] == [0, 0, 0] and [w.seq for w in second] == [1, 1, 1]
    assert [w.machine for w in second] == ["m01", "m02", "m03"]
    assert all(w.timestamp_ns == 6 and w.label is None for w in second)


def test_offset_drift_moves_only_the_named_machine_and_channel():
    fleet = _fleet(2)
    fleet.apply(Command("drift", machines=("m02",), mode="offset", params={"temperature": 5}))
    assert _temps(fleet) == pytest.approx([50, 55], abs=0.3)


def test_step_drift_on_all_then_off_restores_the_standard_means():
    fleet = _fleet(2)
    fleet.apply(Command("drift", mode="step"))
    assert _temps(fleet) == pytest.approx([58, 58], abs=0.3)
    fleet.apply(Command("drift", mode="off"))
    assert _temps(fleet) == pytest.approx([50, 50], abs=0.3)


def test_fault_and_repair_commands_change_the_true_state_and_label():
    fleet = _fleet(2, label_fraction=1.0)
    fleet.apply(Command("fault", machines=("m01",), state="pump_fault"))
    windows = fleet.tick(0.1, 0)
    assert [w.label for w in windows] == [3, 0]
    fleet.apply(Command("repair"))
    assert [w.label for w in fleet.tick(0.1, 0)] == [0, 0]
    assert fleet.labels_sent == {"m01": 2, "m02": 2}


def test_label_fraction_is_respected_and_changed_by_command():
    fleet = _fleet(10, label_fraction=0.05)
    labelled = sum(w.label is not None for _ in range(200) for w in fleet.tick(0.1, 0))
    assert 60 < labelled < 140  # 2000 windows × 5 %
    fleet.apply(Command("labels", params={"fraction": 0.0}))
    assert not any(w.label is not None for w in fleet.tick(0.1, 0))


def test_command_for_an_unknown_machine_is_refused_with_its_kind():
    fleet = _fleet(2)
    with pytest.raises(SimError, match="m99") as info:
        fleet.apply(Command("repair", machines=("m01", "m99")))
    assert info.value.kind == "unknown_machine"


@pytest.mark.parametrize(
    ("payload", "names"),
    [
        (b'{"v":1,"cmd":"drift","mode":"offset","params":{"torque":1}}', "temperature"),
        (b'{"v":1,"cmd":"fault","state":"on_fire"}', "bearing_fault"),
    ],
)
def test_a_command_naming_what_the_machine_type_has_not_is_refused_naming_what_it_has(
    payload: bytes, names: str
) -> None:
    fleet = _fleet(2)
    with pytest.raises(SimError, match=names) as info:  # the contract takes any name; the sim
        fleet.apply(Command.from_json(payload))  # knows its machines' type
    assert info.value.kind == "bad_field"


@pytest.mark.parametrize(
    "kwargs", [{"machines": 0}, {"label_fraction": 1.5}, {"mtbf_s": -1}, {"window_length": 0}]
)
def test_invalid_fleet_config_is_refused(kwargs):
    with pytest.raises(ConfigError):
        FleetConfig(**kwargs)


def test_ramp_drift_moves_halfway_after_half_its_duration_then_stays_at_the_drift_table():
    fleet = _fleet(1)
    fleet.apply(Command("drift", mode="ramp", params={"duration_s": 10.0}))
    for _ in range(50):  # 5 s of 0.1 s ticks
        fleet.tick(0.1, 0)
    assert fleet.machines[0].drift_effect().blend == pytest.approx(0.5)
    # the next 20 ticks run at blend 0.51..0.70 (mean 0.605): 50 + 8 · 0.605 °C
    assert _temps(fleet, ticks=20)[0] == pytest.approx(54.84, abs=0.5)
    for _ in range(100):
        fleet.tick(0.1, 0)
    assert _temps(fleet)[0] == pytest.approx(58, abs=0.3)


def test_regime_drift_raises_power_by_the_load_factor():
    fleet = _fleet(1)
    fleet.apply(Command("drift", mode="regime", params={"load": 1.5}))
    windows = [w for _ in range(200) for w in fleet.tick(0.1, 0)]
    power = np.mean([w.data[:, CHANNELS.index("power")].mean() for w in windows])
    temp = np.mean([w.data[:, TEMP].mean() for w in windows])
    assert power == pytest.approx(125 * 1.5, rel=0.01)
    assert temp == pytest.approx(50 + 7.5, abs=0.3)
