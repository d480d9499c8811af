"""`jetson_trainer import` in a machine type's own words: a site file's type gives the channels,
the maintenance log's class names, the healthy class and the window length; the data set it
writes names its type, so `train` builds a model of that shape without further flags."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from jetson_trainer.__main__ import main
from jetson_trainer.build.data import machine_type_of
from nodekit.cli import EXIT_USAGE

SITE = """
[[types]]
name = "press"
channels = [{name = "Force", unit = "kN"}, {name = "stroke", unit = "mm"}, "oil_temp"]
sample_hz = 10.0
window_length = 20
classes = ["running", "die_wear", "leak"]
normal = "running"
machines = ["press-*"]
"""
HZ = 10.0


def _historian(tmp: Path) -> tuple[Path, Path, Path]:
    """Two presses, 10 Hz, one hour each; press-1 has die wear in the middle, press-2 a leak."""
    rng = np.random.default_rng(0)
    site = tmp / "site.toml"
    site.write_text(SITE)
    signals, log = tmp / "historian.csv", tmp / "maintenance.csv"
    t0 = 1_700_000_000.0
    with signals.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", "machine", "channel", "value"])
        for machine, fault_from in (("press-1", 1200.0), ("press-2", 2400.0)):
            for k in range(int(3600 * HZ)):
                t = k / HZ
                bad = fault_from <= t < fault_from + 900
                force = 50 + rng.normal(0, 1) + (8 if bad and machine == "press-1" else 0)
                oil = 40 + rng.normal(0, 0.5) - (6 if bad and machine == "press-2" else 0)
                stroke = 100 + 20 * np.sin(2 * np.pi * t / 2)
                for name, value in (("F_101", force), ("stroke", stroke), ("TT_OIL", oil)):
                    w.writerow([t0 + t, machine, name, f"{value:.4f}"])
    with log.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["machine", "from", "to", "class"])
        w.writerow(["press-1", t0 + 1200, t0 + 2100, "Die_Wear"])
        w.writerow(["press-2", t0 + 2400, t0 + 3300, "leak"])
    return site, signals, log


@pytest.fixture(scope="module")
def historian(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return _historian(tmp_path_factory.mktemp("press"))


def _import(historian: tuple[Path, Path, Path], out: Path, *extra: str) -> int:
    site, signals, log = historian
    files = [str(signals), "--maintenance", str(log), "--out", str(out)]
    kind = ["--site-file", str(site), "--machine-type", "press", "--sample-hz", str(HZ)]
    rest = ["--unlabeled-normal", "--channel-map", "F_101=force,TT_OIL=oil_temp", *extra]
    return main(["import", *files, *kind, *rest])


def test_an_import_speaks_the_types_words(historian: tuple[Path, Path, Path], tmp_path: Path):
    out = tmp_path / "data"
    assert _import(historian, out) == 0
    x = np.load(out / "train_data.npy")
    y = np.load(out / "train_labels.npy")
    assert x.shape[1:] == (20, 3)  # the type's window length and channels
    assert set(np.unique(y).tolist()) == {0, 1, 2}
    report = json.loads((out / "import_report.json").read_text())
    assert report["machine_type"] == "press"
    assert set(report["splits"]["train"]) == {"running", "die_wear", "leak"}
    assert report["splits"]["train"]["running"] > report["splits"]["train"]["leak"] > 0
    kind = machine_type_of(out)
    assert kind.name == "press" and kind.channel_names == ("Force", "stroke", "oil_temp")
    rows = list(csv.DictReader((out / "windows.csv").open()))
    assert {r["label"] for r in rows} == {"running", "die_wear", "leak"}
    # the force channel is 8 kN up in die-wear windows: the columns are in the type's order
    assert x[y == 1][:, :, 0].mean() - x[y == 0][:, :, 0].mean() == pytest.approx(8, abs=0.5)
    assert x[y == 2][:, :, 2].mean() - x[y == 0][:, :, 2].mean() == pytest.approx(-6, abs=0.5)


def test_an_import_refuses_what_the_type_has_not(
    historian: tuple[Path, Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    site, signals, _ = historian
    bad_log = tmp_path / "log.csv"
    bad_log.write_text("machine,from,to,class\npress-1,1700000000,1700000100,bearing_fault\n")
    base = ["import", str(signals), "--out", str(tmp_path / "o"), "--site-file", str(site)]
    base += ["--machine-type", "press", "--sample-hz", str(HZ)]
    assert main([*base, "--maintenance", str(bad_log)]) == EXIT_USAGE
    assert "'bearing_fault' is not one of running, die_wear, leak" in caplog.text
    caplog.clear()
    assert main([*base, "--channel-map", "F_101=force,X=force"]) == EXIT_USAGE
    assert "both map onto force" in caplog.text.lower()
    caplog.clear()
    assert main([*base, "--channel-map", "F_101=power"]) == EXIT_USAGE
    assert "map onto one of Force, stroke, oil_temp" in caplog.text
    caplog.clear()
    assert main([*base, "--unlabeled-normal"]) == EXIT_USAGE  # F_101 and TT_OIL unmapped
    assert "machine type press has Force, stroke, oil_temp" in caplog.text


def test_the_imported_type_trains_a_model_of_its_shape(
    historian: tuple[Path, Path, Path], tmp_path: Path
):
    from protocol import decode_bundle

    data, out = tmp_path / "data", tmp_path / "v1"
    assert _import(historian, data, "--holdout", "0.2") == 0
    assert main(["train", "--data", str(data), "--out", str(out), "--epochs", "10"]) == 0
    m = decode_bundle((out / "model.bundle").read_bytes(), None, allow_unsigned=True).manifest
    assert (m.type_name, m.classes, m.input_shape) == (
        "press",
        ("running", "die_wear", "leak"),
        (20, 3),
    )
    assert m.machine().unit_of("Force") == "kN"


def test_an_open_type_s_maintenance_log_may_name_a_class_the_site_does_not_list(
    historian: tuple[Path, Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`open_classes = true`: the log's `leak` (undeclared) becomes the type's class after the
    declared ones; the same log for the closed type is refused, listing its classes."""
    _, signals, log = historian
    open_site = tmp_path / "open.toml"
    open_site.write_text(
        SITE.replace(
            'classes = ["running", "die_wear", "leak"]', 'classes = ["running", "die_wear"]'
        )
        + "open_classes = true\n"
    )
    out = tmp_path / "data"
    assert _import((open_site, signals, log), out) == 0
    meta = json.loads((out / "classes.json").read_text())
    assert meta["classes"] == ["running", "die_wear", "leak"]
    assert meta["machine_type"]["open_classes"] is True
    y = np.load(out / "train_labels.npy")
    assert set(np.unique(y).tolist()) == {0, 1, 2}
    closed = tmp_path / "closed.toml"
    closed.write_text(
        SITE.replace(
            'classes = ["running", "die_wear", "leak"]', 'classes = ["running", "die_wear"]'
        )
    )
    assert _import((closed, signals, log), tmp_path / "refused") == EXIT_USAGE
    assert "class 'leak' is not one of running, die_wear" in caplog.text
