"""Cold start: a type with normal running only gets an anomaly model — one score per window,
a threshold in the manifest, the same bundle format, checked against its own definition."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jetson_trainer.__main__ import main
from jetson_trainer.build.anomaly import anomaly_scores, fit_whitening, window_features
from jetson_trainer.build.interpreter import LiteModel
from jetson_trainer.errors import TrainerError
from protocol import decode_bundle
from sensor_sim.dataset import write_datasets


def _normal_only(src: Path, dst: Path) -> Path:
    """A data set of the healthy class alone: months of normal running, no fault history."""
    dst.mkdir()
    x, y = np.load(src / "train_data.npy"), np.load(src / "train_labels.npy")
    np.save(dst / "train_data.npy", x[y == 0])
    np.save(dst / "train_labels.npy", y[y == 0])
    (dst / "classes.json").write_text((src / "classes.json").read_text())
    return dst


@pytest.mark.parametrize("machine_type", ["default", "fan"])
def test_a_normal_only_data_set_gives_an_anomaly_model_that_flags_faults(
    tmp_path: Path, machine_type: str
) -> None:
    full = tmp_path / "full"
    sizes = {"train": 2400, "infer": 800, "drift_train": 8, "drift_infer": 8}
    write_datasets(full, seed=3, sizes=sizes, sim_type=machine_type)
    data, out = _normal_only(full, tmp_path / "normal"), tmp_path / "v1"
    assert main(["train", "--data", str(data), "--out", str(out), "--task", "anomaly"]) == 0
    bundle = decode_bundle((out / "model.bundle").read_bytes(), None, allow_unsigned=True)
    m = bundle.manifest
    kind = m.machine()
    assert m.task == "anomaly" and m.classes == (kind.normal,) and m.quantization == "float32"
    assert kind.name == machine_type and m.anomaly is not None
    threshold = float(m.anomaly["threshold"])
    x, y = np.load(full / "infer_data.npy"), np.load(full / "infer_labels.npy")
    scores = LiteModel(bundle.model, m.normalisation).predict(x)[:, 0]
    flagged = {int(c): float(np.mean(scores[y == c] > threshold)) for c in np.unique(y)}
    report = json.loads((out / "report.json").read_text())
    print(
        f"\n{machine_type}: threshold {threshold:.2f}, false alarms on held-out normal "
        f"{report['false_alarm_rate']:.4f}, on infer normal {flagged[0]:.4f}; faults flagged "
        + ", ".join(f"{c}: {flagged[i]:.3f}" for i, c in enumerate(full_classes(full)) if i)
    )
    assert flagged[0] <= 0.02  # a healthy machine seldom raises anomaly
    assert np.mean([flagged[c] for c in flagged if c]) >= 0.6  # most faulty windows stand out
    for g in m.golden:  # the Pi's vetting: the model reproduces its golden scores
        got = LiteModel(bundle.model, m.normalisation).predict(np.asarray([g["x"]], np.float32))
        assert abs(float(got[0, 0]) - g["probs"][0]) <= m.golden_tolerance


def full_classes(data: Path) -> list[str]:
    return list(json.loads((data / "classes.json").read_text())["classes"])


def test_the_whitening_needs_enough_windows_and_scores_about_one() -> None:
    rng = np.random.default_rng(1)
    f = window_features(rng.normal(size=(500, 20, 3)))
    fit = fit_whitening(f)
    assert 0.9 < float(anomaly_scores(f, fit).mean()) < 1.1
    assert float(anomaly_scores(f + 5.0, fit).mean()) > 100  # far from normal: a large score
    with pytest.raises(TrainerError, match="more normal windows"):
        fit_whitening(f[:5])
