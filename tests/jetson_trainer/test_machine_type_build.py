"""The offline build in a machine type's own words: a data set that declares its type (classes,
channels, window length) trains, evaluates and fine-tunes a model of that shape whose manifest
carries the type; a data set in other words than it declares is refused before training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jetson_trainer.__main__ import main
from jetson_trainer.build.data import check_xy, machine_type_of
from jetson_trainer.errors import TrainerError
from nodekit.cli import EXIT_FAILED, EXIT_USAGE
from protocol import ConfigError, decode_bundle
from protocol.machine_type import DEFAULT_TYPE, Channel, MachineType

FAN = MachineType(
    "fan",
    (Channel("vib_x", "g", 800.0), Channel("vib_y", "g", 800.0), Channel("current", "A", 50.0)),
    sample_hz=800.0,
    window_length=32,
    hop=32,
    classes=("ok", "imbalance", "looseness"),
    normal="ok",
    machines=("fan-*",),
)


def _windows(n_per_class: int, seed: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Separable fan windows: imbalance is a 1× sine on vib_x, looseness noise on vib_y."""
    rng = np.random.default_rng(seed)
    t = np.arange(FAN.window_length) / 8.0
    xs, ys = [], []
    for label in range(len(FAN.classes)):
        x = rng.normal(0.0, 0.3, (n_per_class, FAN.window_length, 3)) + shift
        x[:, :, 2] += 4.0
        if label == 1:
            x[:, :, 0] += 2.0 * np.sin(t + rng.uniform(0, 6, (n_per_class, 1)))
        if label == 2:
            x[:, :, 1] += rng.normal(0.0, 1.5, (n_per_class, FAN.window_length))
        xs.append(x)
        ys.append(np.full(n_per_class, label))
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.int64)


def _dataset(out: Path, kind: MachineType | None = FAN, shift: float = 0.0) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", 120, 1), ("infer", 40, 2), ("drift_train", 60, 3)):
        x, y = _windows(n, seed, shift if split.startswith("drift") else 0.0)
        np.save(out / f"{split}_data.npy", x)
        np.save(out / f"{split}_labels.npy", y)
    meta: dict[str, object] = {"classes": list(FAN.classes), "channels": list(FAN.channel_names)}
    if kind is not None:
        meta["machine_type"] = kind.to_dict()
    (out / "classes.json").write_text(json.dumps(meta))
    return out


def test_a_data_set_is_of_the_type_it_declares_or_the_builtin_one(tmp_path: Path) -> None:
    assert machine_type_of(tmp_path) is DEFAULT_TYPE  # no classes.json: the seed machine
    builtin = {"classes": list(DEFAULT_TYPE.classes), "channels": list(DEFAULT_TYPE.channel_names)}
    (tmp_path / "classes.json").write_text(json.dumps(builtin))
    assert machine_type_of(tmp_path) is DEFAULT_TYPE
    assert machine_type_of(_dataset(tmp_path / "fan")) == FAN
    with pytest.raises(ConfigError, match="declare the data set's machine type"):
        machine_type_of(_dataset(tmp_path / "undeclared", kind=None))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "classes.json").write_text("[1, 2]")
    with pytest.raises(TrainerError, match="JSON object"):
        machine_type_of(tmp_path / "bad")


def test_a_site_file_names_the_type_and_needs_a_name_when_it_has_several(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(
        '[[types]]\nname = "fan"\nchannels = ["vib_x", "vib_y", "current"]\nwindow_length = 32\n'
        'classes = ["ok", "imbalance", "looseness"]\nnormal = "ok"\nmachines = ["fan-*"]\n\n'
        '[[types]]\nbuiltin = "default"\nmachines = ["m*"]\n'
    )
    assert machine_type_of(None, site, "fan").classes == FAN.classes
    with pytest.raises(ConfigError, match="--machine-type"):
        machine_type_of(None, site)
    with pytest.raises(ConfigError, match="this site has: fan, default"):
        machine_type_of(None, site, "pump")


def test_windows_and_labels_must_fit_the_type() -> None:
    x, y = _windows(4, 0)
    check_xy(x, y, "fan data", FAN)
    with pytest.raises(TrainerError, match="machine type fan: ok, imbalance, looseness"):
        check_xy(x, np.full(len(x), 3), "fan data", FAN)
    with pytest.raises(TrainerError, match="fan has 32 × 3"):
        check_xy(x[:, :30], y, "fan data", FAN)
    with pytest.raises(TrainerError, match=r"expected 0\.\.3"):  # the seed machine's 4 classes
        check_xy(np.zeros((3, 60, 4)), np.array([0, 1, 4]), "seed data", DEFAULT_TYPE)


def test_a_wrong_shape_or_undeclared_data_set_is_refused_before_training(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "fan")
    wide = np.zeros((6, 32, 5), np.float32)
    np.save(data / "train_data.npy", wide)
    np.save(data / "train_labels.npy", np.zeros(6, np.int64))
    out = tmp_path / "out"
    assert main(["train", "--data", str(data), "--out", str(out)]) == EXIT_FAILED
    assert not out.exists()
    undeclared = _dataset(tmp_path / "undeclared", kind=None)
    assert main(["train", "--data", str(undeclared), "--out", str(out)]) == EXIT_USAGE
    assert not out.exists()


@pytest.fixture(scope="module")
def fan_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("fan")
    data = _dataset(root / "data", shift=0.8)
    out = root / "v1"
    assert main(["train", "--data", str(data), "--out", str(out), "--epochs", "25"]) == 0
    return data, out


def test_train_builds_a_model_of_the_types_shape_and_names(
    fan_model: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data, out = fan_model
    bundle = decode_bundle((out / "model.bundle").read_bytes(), None, allow_unsigned=True)
    m = bundle.manifest
    assert m.machine() == FAN and m.type_name == "fan"
    assert (m.classes, m.channels, m.input_shape) == (FAN.classes, FAN.channel_names, (32, 3))
    assert set(m.train_stats) >= {"vib_x", "vib_y", "current", "features"}
    assert set(m.train_stats["features"]["per_class"]) == set(FAN.classes)
    report = json.loads((out / "report.json").read_text())
    assert report["machine_type"] == "fan"
    assert set(report["class_counts"]) == set(FAN.classes)
    assert set(report["splits"]["infer"]["per_class"]) == set(FAN.classes)
    capsys.readouterr()
    bundle_path = str(out / "model.bundle")
    rc = main(["evaluate", "--model", bundle_path, "--data", str(data), "--json", "--insecure-dev"])
    assert rc == 0
    metrics = json.loads(capsys.readouterr().out)
    print(
        f"\nfan type, infer split: accuracy {metrics['accuracy']}, macro-F1 {metrics['macro_f1']}"
    )
    assert metrics["accuracy"] >= 0.9


def test_finetune_keeps_the_parents_type(fan_model: tuple[Path, Path], tmp_path: Path) -> None:
    data, parent = fan_model
    out = tmp_path / "v2"
    args = ["--model", str(parent / "model.bundle"), "--data", str(data), "--out", str(out)]
    rc = main(["finetune", *args, "--epochs", "5", "--labels-per-class", "8", "--insecure-dev"])
    assert rc == 0
    child = decode_bundle((out / "model.bundle").read_bytes(), None, allow_unsigned=True)
    assert child.manifest.machine() == FAN and child.manifest.parent == 1
