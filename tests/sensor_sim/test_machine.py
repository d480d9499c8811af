"""The per-machine state machine: spontaneous faults, repairs, forced states."""

from __future__ import annotations

import numpy as np
import pytest

from protocol import CLASSES
from sensor_sim import Machine, MachineConfig, SimError


def test_spontaneous_faults_happen_at_the_configured_mean_rate():
    rng = np.random.default_rng(0)
    faults = 0
    for i in range(200):
        m = Machine(f"m{i:03d}", MachineConfig(mtbf_s=100.0, repair_s=10.0))
        for _ in range(100):  # 100 s in 1 s steps: P(fault) = 1 - e^-1 ≈ 0.63
            m.advance(1.0, rng)
            if m.state != 0:
                faults += 1
                break
    assert 0.55 < faults / 200 < 0.72


def test_spontaneous_fault_picks_a_fault_class_and_is_repaired_later():
    rng = np.random.default_rng(3)
    m = Machine("m01", MachineConfig(mtbf_s=1.0, repair_s=5.0))
    seen = set()
    repaired = False
    for _ in range(2000):
        before = m.state
        m.advance(0.5, rng)
        seen.add(m.state_name)
        repaired |= before != 0 and m.state == 0
    assert seen == set(CLASSES)
    assert repaired


def test_zero_mtbf_never_faults():
    rng = np.random.default_rng(0)
    m = Machine("m01", MachineConfig(mtbf_s=0.0))
    for _ in range(100):
        m.advance(100.0, rng)
    assert m.state_name == "normal"


def test_forced_fault_holds_until_repair_and_fault_normal_repairs():
    rng = np.random.default_rng(0)
    m = Machine("m01", MachineConfig(mtbf_s=0.0, repair_s=1.0))
    m.force("drive_wear")
    m.advance(1000.0, rng)
    assert m.state_name == "drive_wear"
    m.force("normal")
    assert m.state_name == "normal"


def test_ramp_elapsed_time_counts_from_the_command():
    from sensor_sim import DriftSettings

    rng = np.random.default_rng(0)
    m = Machine("m01", MachineConfig(mtbf_s=0.0))
    m.advance(50.0, rng)
    m.set_drift(DriftSettings("ramp", {"duration_s": 10.0}))
    m.advance(2.5, rng)
    assert m.drift_effect().blend == pytest.approx(0.25)


@pytest.mark.parametrize("dt", [-1.0, float("nan"), float("inf")])
def test_invalid_time_step_is_refused(dt):
    with pytest.raises(SimError):
        Machine("m01").advance(dt, np.random.default_rng(0))
