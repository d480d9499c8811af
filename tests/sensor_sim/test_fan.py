"""The fan, the simulator's second machine type: its physics shows each fault's textbook
signature, a mixed fleet plays both types, and its data set trains a model in its own words."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jetson_trainer.__main__ import main as trainer
from protocol import Command, decode_bundle
from sensor_sim.__main__ import main as sim
from sensor_sim.errors import SimError
from sensor_sim.fan import FAN_TYPE, RPM_HZ, SAMPLE_HZ, generate
from sensor_sim.fleet import Fleet, FleetConfig

N = 400


def _spectrum(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean amplitude spectrum of vib_x over windows (Hann), and its frequencies."""
    t = x.shape[1]
    amp = np.abs(np.fft.rfft(x[:, :, 0] * np.hanning(t), axis=1)).mean(axis=0)
    return np.fft.rfftfreq(t, 1 / SAMPLE_HZ), amp


def _at(freqs: np.ndarray, amp: np.ndarray, hz: float) -> float:
    return float(amp[np.argmin(abs(freqs - hz))])


@pytest.fixture(scope="module")
def by_class() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        c: generate(np.full(N, i), rng, window_length=1024) for i, c in enumerate(FAN_TYPE.classes)
    }


def test_each_fault_has_its_signature(by_class: dict[str, np.ndarray]) -> None:
    spectra = {c: _spectrum(x) for c, x in by_class.items()}
    one = {c: _at(f, a, RPM_HZ) for c, (f, a) in spectra.items()}
    two = {c: _at(f, a, 2 * RPM_HZ) for c, (f, a) in spectra.items()}
    five = {c: _at(f, a, 5 * RPM_HZ) for c, (f, a) in spectra.items()}
    assert one["imbalance"] > 4 * one["ok"]  # 1×: a heavy spot on the rotor
    assert two["misalignment"] > 2 * one["misalignment"] > 0  # 2× dominates
    assert five["looseness"] > 5 * five["ok"]  # a comb of harmonics
    kurt = {
        c: float(((x[..., 0] - x[..., 0].mean()) ** 4).mean() / x[..., 0].var() ** 2)
        for c, x in by_class.items()
    }
    assert kurt["looseness"] > kurt["ok"]  # impacts
    current = {c: float(x[..., 2].mean()) for c, x in by_class.items()}
    assert current["ok"] < current["imbalance"] < current["misalignment"]


def test_the_drift_regime_is_a_faster_stiffer_belt() -> None:
    rng = np.random.default_rng(3)
    before, after = (
        generate(np.zeros(N, np.int64), rng, window_length=1024),
        generate(np.zeros(N, np.int64), rng, blend=1.0, window_length=1024),
    )
    f, a0 = _spectrum(before)
    _, a1 = _spectrum(after)
    assert abs(f[np.argmax(a0[1:]) + 1] - 25) < 2 and abs(f[np.argmax(a1[1:]) + 1] - 30) < 2
    assert after[..., 2].mean() - before[..., 2].mean() == pytest.approx(1.0, abs=0.05)
    with pytest.raises(SimError):
        generate([4], rng)
    with pytest.raises(SimError):
        generate([0], rng, blend=1.5)


def test_a_mixed_fleet_plays_each_machine_in_its_types_words() -> None:
    fleet = Fleet(
        FleetConfig(machines=2, fans=2, mtbf_s=0.0, label_fraction=1.0), np.random.default_rng(0)
    )
    assert fleet.ids == ("m01", "m02", "fan-01", "fan-02")
    assert fleet.apply(Command("fault", machines=("fan-02",), state="misalignment")) == ["fan-02"]
    assert fleet.apply(Command("fault", state="bearing_fault")) == ["m01", "m02"]
    with pytest.raises(SimError, match="machine type default: normal, bearing_fault"):
        fleet.apply(Command("fault", machines=("m01",), state="looseness"))
    with pytest.raises(SimError, match="machine type fan has not: vib_x, vib_y, current"):
        fleet.apply(Command("drift", machines=("fan-01",), mode="offset", params={"power": 1}))
    assert fleet.apply(Command("drift", mode="gain", params={"current": 2.0})) == [
        "fan-01",
        "fan-02",
    ]
    windows = fleet.tick(0.1, 1)
    shapes = [(w.machine, w.data.shape, w.label) for w in windows]
    assert shapes == [
        ("m01", (60, 4), 1),
        ("m02", (60, 4), 1),
        ("fan-01", (128, 3), 0),
        ("fan-02", (128, 3), 2),
    ]
    assert 9.0 < float(windows[2].data[:, 2].mean()) < 11.0  # 5 A, doubled by the gain drift
    assert [m.state_name for m in fleet.machines] == ["bearing_fault"] * 2 + ["ok", "misalignment"]


def test_a_fan_data_set_trains_a_model_in_the_fans_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, out = tmp_path / "fan", tmp_path / "v1"
    sizes = ["train=800", "infer=200", "drift_train=200", "drift_infer=200"]
    argv = ["dataset", "--out", str(data), "--machine-type", "fan", "--seed", "5"]
    assert sim([*argv, *(a for s in sizes for a in ("--size", s))]) == 0
    meta = json.loads((data / "classes.json").read_text())
    assert meta["machine_type"]["name"] == "fan" and meta["classes"] == list(FAN_TYPE.classes)
    assert trainer(["train", "--data", str(data), "--out", str(out), "--epochs", "20"]) == 0
    manifest = decode_bundle(
        (out / "model.bundle").read_bytes(), None, allow_unsigned=True
    ).manifest
    assert manifest.machine() == FAN_TYPE
    scores = {}
    for split in ("infer", "drift_infer"):
        capsys.readouterr()
        args = ["--model", str(out / "model.bundle"), "--data", str(data), "--split", split]
        assert trainer(["evaluate", *args, "--json", "--insecure-dev"]) == 0
        scores[split] = json.loads(capsys.readouterr().out)
    with capsys.disabled():
        for split, m in scores.items():
            print(f"\nfan model on {split}: accuracy {m['accuracy']}, macro-F1 {m['macro_f1']}")
    assert scores["infer"]["macro_f1"] >= 0.9
    assert scores["drift_infer"]["macro_f1"] < scores["infer"]["macro_f1"]  # the belt swap drifts
