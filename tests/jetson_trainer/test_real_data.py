"""A real recorded data set (BasicMotions, tests/realdata/basic_motions.py) through the build
the way a plant engineer would: a historian export and an activity log in the data set's own
channel and class names → `import` with a site file → `train` → the shipped model on the
held-out test cases, beside the published and the locally computed 1-NN baselines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jetson_trainer.__main__ import main
from protocol import decode_bundle
from scripts.tools import ToolMissingError, installed

from ..realdata import basic_motions as bm


@pytest.fixture(scope="module")
def motions() -> dict[str, tuple[np.ndarray, list[str]]]:
    try:
        wheel = installed("real-data").path("wheel")
    except ToolMissingError as exc:  # `make test` installs it; a bare pytest may not have
        pytest.fail(str(exc))
    return bm.load(wheel)


def test_the_ts_reader_reads_the_archives_split(motions) -> None:
    for split in ("TRAIN", "TEST"):
        x, y = motions[split]
        assert x.shape == (40, 100, 6) and x.dtype == np.float32
        assert sorted(set(y)) == ["Badminton", "Running", "Standing", "Walking"]
        assert all(y.count(c) == 10 for c in set(y))
    with pytest.raises(ValueError):
        bm.read_ts("@classLabel true a\n@data\n1,2:3:a\n")  # ragged dimensions


@pytest.fixture(scope="module")
def built(motions, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("basic_motions")
    (root / "site.toml").write_text(bm.SITE_TOML)
    signals, log = bm.historian_files(motions, root)
    data, out = root / "data", root / "v1"
    files = [str(signals), "--maintenance", str(log), "--out", str(data)]
    kind = ["--site-file", str(root / "site.toml"), "--machine-type", "wrist"]
    grid = ["--sample-hz", "10", "--holdout", "0.5", "--channel-map", bm.channel_map()]
    assert main(["import", *files, *kind, *grid]) == 0
    report = json.loads((data / "import_report.json").read_text())
    keys = ["train", "--data", str(data), "--out", str(out), "--epochs", "60", "--seed", "1"]
    assert main([*keys, "--quantization", "int8"]) == 0
    return data, out, report


def test_the_import_holds_out_exactly_the_archives_test_cases(motions, built) -> None:
    data, _, report = built
    assert report["splits"]["train"] == dict.fromkeys(bm.machine_type().classes, 10)
    assert report["splits"]["infer"] == dict.fromkeys(bm.machine_type().classes, 10)
    x_infer = np.load(data / "infer_data.npy")
    names = bm.machine_type().classes
    y_infer = np.load(data / "infer_labels.npy")
    x_test, y_test = motions["TEST"]
    assert np.allclose(x_infer, x_test, atol=1e-5)  # the very cases, in order, through the CSV
    assert [names[i] for i in y_infer] == y_test


def test_the_shipped_model_reaches_the_1nn_dtw_baseline(motions, built, capsys) -> None:
    data, out, _ = built
    bundle = decode_bundle((out / "model.bundle").read_bytes(), None, allow_unsigned=True)
    m = bundle.manifest
    assert (m.type_name, m.classes, m.channels) == ("wrist", bm.machine_type().classes, bm.CHANNELS)
    report = json.loads((out / "report.json").read_text())
    int8 = report["conversion"]["int8"]
    capsys.readouterr()
    args = ["--model", str(out / "model.bundle"), "--data", str(data), "--split", "infer"]
    assert main(["evaluate", *args, "--json", "--insecure-dev"]) == 0
    shipped = json.loads(capsys.readouterr().out)
    names = bm.machine_type().classes
    train = (motions["TRAIN"][0], np.array([names.index(c) for c in motions["TRAIN"][1]]))
    test = (motions["TEST"][0], np.array([names.index(c) for c in motions["TEST"][1]]))
    ed, dtw = bm.one_nn(train, test, dtw=False), bm.one_nn(train, test, dtw=True)
    with capsys.disabled():
        print(
            f"\nBasicMotions test split: shipped {report['shipped']} accuracy "
            f"{shipped['accuracy']}, macro-F1 {shipped['macro_f1']}; int8 agreement "
            f"{int8.get('agreement')} ({'passed' if int8.get('passed') else 'failed'}); "
            f"1-NN ED {ed:.3f}, 1-NN DTW_D {dtw:.3f} computed here; published {bm.PUBLISHED}"
        )
    assert shipped["accuracy"] >= max(dtw, bm.PUBLISHED["1-NN DTW_D"])
    assert int8["passed"] == (report["shipped"] == "int8")  # int8 ships only when it agrees
