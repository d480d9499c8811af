"""`python -m jetson_trainer import`: historian exports + maintenance log → a data set for `train`.

The historian files are made from the simulator's physics (`sensor_sim.physics.generate`): a
timeline of class segments per machine, flattened to one sample a second, so the windows the
import cuts must be exactly the generated windows, and their classes learnable.
"""

from __future__ import annotations

import csv
import json
import logging
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jetson_trainer.__main__ import main
from jetson_trainer.build.data import load_split
from protocol import CHANNELS, CLASSES, WINDOW_LENGTH
from sensor_sim.physics import generate

T0 = 1_700_000_000  # 2023-11-14T22:13:20Z, a whole minute
T = WINDOW_LENGTH
# one cycle of a machine's life, in windows: normal, bearing, normal, wear, normal, pump
CYCLE = ((0, 8), (1, 6), (0, 4), (2, 6), (0, 4), (3, 6))


def _timeline(cycles: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    labels = np.array([c for _ in range(cycles) for c, n in CYCLE for _ in range(n)], np.int64)
    return labels, generate(labels, np.random.default_rng(seed))


@pytest.fixture(scope="module")
def plant() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Two machines, one cycle each: {machine: (labels (N,), windows (N, T, C))}."""
    return {"m01": _timeline(1, 1), "press-2": _timeline(1, 2)}


def _samples(plant: dict[str, tuple[np.ndarray, np.ndarray]]) -> list[tuple[int, str, int, str]]:
    """(epoch s, machine, channel index, value text) for every sample; float32 exact."""
    out = []
    for machine, (_, x) in plant.items():
        flat = x.reshape(-1, len(CHANNELS))
        for i, row in enumerate(flat):
            for c, v in enumerate(row):
                out.append((T0 + i, machine, c, f"{v:.9g}"))
    return out


def _write_long(
    path: Path, samples: list[tuple[int, str, int, str]], when: Callable[[int], str] = str
) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", "machine", "channel", "value"])
        w.writerows((when(t), m, CHANNELS[c], v) for t, m, c, v in samples)
    return path


def _write_wide(path: Path, samples: list[tuple[int, str, int, str]], names=CHANNELS) -> Path:
    rows: dict[tuple[int, str], list[str]] = {}
    for t, m, c, v in samples:
        rows.setdefault((t, m), [""] * len(CHANNELS))[c] = v
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Timestamp", "Machine", *names])
        w.writerows(
            [datetime.fromtimestamp(t, UTC).isoformat(), m, *vs] for (t, m), vs in rows.items()
        )
    return path


def _write_maintenance(
    path: Path, plant: dict[str, tuple[np.ndarray, np.ndarray]], shift: int = 0
) -> Path:
    """One interval per fault segment (normal ones left out), shifted by `shift` seconds."""
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["machine", "from", "to", "class"])
        for machine, (labels, _) in plant.items():
            start = 0
            for i in range(1, len(labels) + 1):
                if i == len(labels) or labels[i] != labels[start]:
                    if labels[start]:
                        w.writerow(
                            [
                                machine,
                                T0 + start * T + shift,
                                T0 + i * T + shift,
                                CLASSES[labels[start]].upper(),
                            ]
                        )
                    start = i
    return path


def _import(tmp_path: Path, *args: str, name: str = "out") -> tuple[int, Path]:
    out = tmp_path / name
    return main(["import", *args, "--out", str(out)]), out


def _all(plant: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.concatenate([x for _, x in plant.values()]),
        np.concatenate([y for y, _ in plant.values()]),
    )


def test_long_wide_and_parquet_exports_give_exactly_the_generated_windows(plant, tmp_path) -> None:
    samples = _samples(plant)
    x_true, y_true = _all(plant)
    log = _write_maintenance(tmp_path / "log.csv", plant)
    long_csv = _write_long(tmp_path / "long.csv", samples)
    wide_csv = _write_wide(tmp_path / "wide.csv", samples)
    long_pq = tmp_path / "long.parquet"  # times as a tz-aware Arrow timestamp, ns
    pq.write_table(
        pa.table(
            {
                "timestamp": pa.array([t * 10**9 for t, *_ in samples], pa.timestamp("ns", "UTC")),
                "machine": [m for _, m, _, _ in samples],
                "channel": [CHANNELS[c] for _, _, c, _ in samples],
                "value": pa.array([float(v) for *_, v in samples], pa.float32()),
            }
        ),
        long_pq,
    )
    wide_pq = tmp_path / "wide.parquet"  # epoch ms as int64, one float column per channel
    keys = sorted({(t, m) for t, m, _, _ in samples}, key=lambda k: (k[1], k[0]))
    cols = {k: [np.nan] * len(keys) for k in CHANNELS}
    where = {k: i for i, k in enumerate(keys)}
    for t, m, c, v in samples:
        cols[CHANNELS[c]][where[(t, m)]] = float(v)
    pq.write_table(
        pa.table({"time": [t * 1000 for t, _ in keys], "machine": [m for _, m in keys], **cols}),
        wide_pq,
    )
    for i, src in enumerate((long_csv, wide_csv, long_pq, wide_pq)):
        rc, out = _import(
            tmp_path,
            str(src),
            "--maintenance",
            str(log),
            "--unlabeled-normal",
            "--holdout",
            "0",
            name=f"out{i}",
        )
        assert rc == 0, src
        x, y = load_split(out, "train")  # the real loader, with its checks
        np.testing.assert_array_equal(x, x_true, err_msg=str(src))
        np.testing.assert_array_equal(y, y_true, err_msg=str(src))
        report = json.loads((out / "import_report.json").read_text())
        assert report["inputs"][0]["format"] == ("long" if "long" in src.name else "wide")
        assert report["refused"] == {} and report["machines"]["m01"]["gaps"] == 0
        assert report["splits"]["train"] == {
            c: int((y_true == i).sum()) for i, c in enumerate(CLASSES)
        }


@pytest.mark.parametrize(
    "when",
    [
        lambda t: str(t * 1000),  # ms
        lambda t: str(t * 1_000_000),  # µs
        lambda t: str(t * 1_000_000_000),  # ns
        lambda t: f"{t}.0",  # s as a float
        lambda t: datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z"),
        lambda t: datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S"),  # naive = UTC
        lambda t: datetime.fromtimestamp(t, timezone(timedelta(hours=1))).isoformat(),
    ],
    ids=["ms", "us", "ns", "s-float", "iso-z", "iso-naive", "iso-offset"],
)
def test_every_timestamp_form_gives_the_same_windows(plant, tmp_path, when) -> None:
    src = _write_long(tmp_path / "t.csv", _samples(plant), when)
    rc, out = _import(tmp_path, "--signals", str(src), "--unlabeled-normal", "--holdout", "0")
    assert rc == 0
    x, _ = load_split(out, "train")
    np.testing.assert_array_equal(x, _all(plant)[0])
    first = next(csv.DictReader((out / "windows.csv").open()))
    assert first["start"].startswith("2023-11-14T22:13:20")


def test_shuffled_rows_give_the_same_windows(plant, tmp_path) -> None:
    samples = _samples(plant)
    order = np.random.default_rng(5).permutation(len(samples))
    src = _write_long(tmp_path / "shuffled.csv", [samples[i] for i in order])
    rc, out = _import(tmp_path, str(src), "--unlabeled-normal", "--holdout", "0")
    assert rc == 0
    np.testing.assert_array_equal(load_split(out, "train")[0], _all(plant)[0])


def test_short_holes_are_filled_and_a_long_gap_drops_the_partial_window(tmp_path) -> None:
    labels, x = _timeline(1, 3)
    n = len(labels)
    flat = x.reshape(-1, len(CHANNELS))
    hole = set(range(100, 103))  # 3 s: forward-filled from t=99
    gap = set(range(600, 610))  # 10 s > --max-gap-s 5: a gap
    samples = [
        (T0 + i, "m01", c, f"{flat[i, c]:.9g}")
        for i in range(len(flat))
        if i not in hole | gap
        for c in range(len(CHANNELS))
    ]
    src = _write_long(tmp_path / "gappy.csv", samples)
    rc, out = _import(tmp_path, str(src), "--unlabeled-normal", "--holdout", "0")
    assert rc == 0
    got, _ = load_split(out, "train")
    expected = flat.copy()
    expected[100:103] = flat[99]
    # 10 windows before the gap; after it windows restart at t=610 and the last partial one
    # (n·60 − 610 = 50 mod 60 samples) is dropped
    after = (n * T - 610) // T
    assert len(got) == 10 + after
    np.testing.assert_array_equal(got[:10], expected[:600].reshape(10, T, -1))
    np.testing.assert_array_equal(got[10:], expected[610 : 610 + after * T].reshape(after, T, -1))
    m = json.loads((out / "import_report.json").read_text())["machines"]["m01"]
    assert (m["gaps"], m["gap_s"], m["filled_samples"]) == (1, 10.0, 3 * len(CHANNELS))
    assert m["partial_windows_dropped"] == 1
    assert m["covered_s"] == n * T - 10


def test_bad_rows_are_refused_counted_and_located_without_stopping(plant, tmp_path, caplog) -> None:
    samples = _samples(plant)
    src = _write_long(tmp_path / "bad.csv", samples)
    good_lines = len(samples) + 1
    with src.open("a", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([T0 + 5, "m01", "temperature", "abc"])  # good_lines + 1
        w.writerow([T0 + 5, "m01", "temperature", "nan"])
        w.writerow([T0 + 5, "m01", "vibration", "inf"])
        w.writerow([T0 + 5, "m01/x", "vibration", "1.0"])
        w.writerow([T0 + 5, "m01", "humidity", "40"])
        w.writerow(["yesterday", "m01", "power", "120"])
        w.writerow([T0 + 5, "m01"])
        w.writerow([T0 + 6, "m01", "pressure", ""])
    caplog.set_level(logging.INFO)
    rc, out = _import(tmp_path, str(src), "--unlabeled-normal", "--holdout", "0")
    assert rc == 0
    refused = json.loads((out / "import_report.json").read_text())["refused"]
    at = [f"bad.csv:{good_lines + i}" for i in range(1, 9)]
    assert refused == {
        "non_numeric": {"count": 1, "first": [at[0]]},
        "not_finite": {"count": 2, "first": at[1:3]},
        "bad_machine": {"count": 1, "first": [at[3]]},
        "unknown_channel": {"count": 1, "first": [at[4]]},
        "bad_time": {"count": 1, "first": [at[5]]},
        "short_row": {"count": 1, "first": [at[6]]},
        "empty_value": {"count": 1, "first": [at[7]]},
    }
    np.testing.assert_array_equal(load_split(out, "train")[0], _all(plant)[0])  # unharmed
    assert "refused 2 not_finite" in caplog.text and "Traceback" not in caplog.text


def test_maintenance_intervals_label_windows_and_straddling_ones_stay_unlabeled(
    plant, tmp_path
) -> None:
    src = _write_long(tmp_path / "s.csv", _samples(plant))
    log = _write_maintenance(tmp_path / "log.csv", plant, shift=30)  # half a window late
    rc, out = _import(tmp_path, str(src), "--maintenance", str(log), "--holdout", "0")
    assert rc == 0
    report = json.loads((out / "import_report.json").read_text())
    m = report["machines"]["m01"]
    # each fault segment of k windows: k−1 inside, 2 straddling (its first and the next one;
    # the last segment ends the data, so it has no next one)
    assert m["classes"] == {"normal": 0, "bearing_fault": 5, "drive_wear": 5, "pump_fault": 5}
    assert m["straddling"] == 5 and m["windows"] == 34 and m["unlabeled"] == 34 - 15
    x, y = load_split(out, "train")
    labels, windows = plant["m01"]
    inside = [i for i in range(1, len(labels)) if labels[i] and labels[i - 1] == labels[i]]
    np.testing.assert_array_equal(x[: len(inside)], windows[inside])
    np.testing.assert_array_equal(y[: len(inside)], labels[inside])
    # without --unlabeled-normal, normal windows are not invented: they are unlabeled
    assert 0 not in y
    unlabeled = np.load(out / "unlabeled_data.npy")
    assert len(unlabeled) == report["splits"]["unlabeled"] == 2 * (34 - 15)
    assert load_split(out, "unlabeled") is None  # no labels file: train never reads it
    rows = list(csv.DictReader((out / "windows.csv").open()))
    assert sum(r["split"] == "unlabeled" for r in rows) == len(unlabeled)


def test_unlabeled_normal_labels_only_windows_that_touch_no_interval(plant, tmp_path) -> None:
    src = _write_long(tmp_path / "s.csv", _samples(plant))
    log = _write_maintenance(tmp_path / "log.csv", plant, shift=30)
    rc, out = _import(
        tmp_path, str(src), "--maintenance", str(log), "--unlabeled-normal", "--holdout", "0"
    )
    assert rc == 0
    m = json.loads((out / "import_report.json").read_text())["machines"]["m01"]
    assert m["classes"] == {
        "normal": 34 - 15 - 5,
        "bearing_fault": 5,
        "drive_wear": 5,
        "pump_fault": 5,
    }
    assert m["unlabeled"] == m["straddling"] == 5


def test_holdout_takes_the_last_windows_in_time_without_sharing_a_sample(tmp_path) -> None:
    plant = {"m01": _timeline(2, 4), "m02": _timeline(2, 6)}
    src = _write_long(tmp_path / "s.csv", _samples(plant))
    rc, out = _import(
        tmp_path, str(src), "--unlabeled-normal", "--holdout", "0.25", "--stride", "30"
    )
    assert rc == 0
    rows = list(csv.DictReader((out / "windows.csv").open()))
    total = (68 * T - T) // 30 + 1  # windows every 30 s in 68 windows' worth of samples
    for machine in plant:
        starts = {
            s: [
                datetime.fromisoformat(r["start"]).timestamp()
                for r in rows
                if r["machine"] == machine and r["split"] == s
            ]
            for s in ("train", "infer")
        }
        assert len(starts["infer"]) == round(0.25 * total)
        assert max(starts["train"]) + T <= min(starts["infer"])
        # the one window that would overlap both sides is dropped
        assert len(starts["train"]) + len(starts["infer"]) == total - 1
    assert len(load_split(out, "infer")[0]) == 2 * 34


def test_channel_map_renames_historian_columns(plant, tmp_path) -> None:
    src = _write_wide(tmp_path / "w.csv", _samples(plant), names=("TT101", "VIB", "PT7", "power"))
    rc, out = _import(
        tmp_path,
        str(src),
        "--unlabeled-normal",
        "--holdout",
        "0",
        "--channel-map",
        "TT101=temperature,vib=vibration,pt7=pressure",
    )
    assert rc == 0
    np.testing.assert_array_equal(load_split(out, "train")[0], _all(plant)[0])


@pytest.mark.parametrize(
    ("log_rows", "message"),
    [
        ([["m01", T0, T0 + 60, "rust"]], "line 2: class 'rust' is not one of normal"),
        (
            [["m01", T0, T0 + 600, "pump_fault"], ["m01", T0 + 300, "", "drive_wear"]],
            "line 3: drive_wear from 1700000300.0 to open overlaps line 2",
        ),
        ([["m01", T0 + 60, T0, "normal"]], "line 2: to (1700000000.0) is not after from"),
        ([["m 01", T0, T0 + 60, "normal"]], "line 2: machine id 'm 01' is invalid"),
    ],
    ids=["unknown-class", "conflict", "reversed", "bad-machine"],
)
def test_a_bad_maintenance_log_exits_2_naming_the_line(
    plant, tmp_path, caplog, log_rows, message
) -> None:
    src = _write_long(tmp_path / "s.csv", _samples(plant))
    log = tmp_path / "log.csv"
    with log.open("w", newline="") as fh:
        csv.writer(fh).writerows([["machine", "from", "to", "class"], *log_rows])
    rc, out = _import(tmp_path, str(src), "--maintenance", str(log))
    assert rc == 2
    assert message in caplog.text and not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.csv"], "missing.csv is not a file"),
        (["{src}", "--holdout", "2"], "holdout 2.0 must be a number in 0.0..0.9"),
        (["{src}", "--channel-map", "TT101"], "is not OLD=NEW"),
        (["{src}", "--sample-hz", "0"], "sample_hz 0.0 must be a number"),
        (["{src}"], "no labeled window for train"),
        (["{src}", "--unlabeled-normal", "--format", "wide"], "no sample was accepted"),
        (["--unlabeled-normal"], "no historian file given"),
        (["{empty}", "--unlabeled-normal"], "is empty"),
        (["{other}", "--unlabeled-normal"], "has no time column"),
    ],
)
def test_bad_arguments_and_files_exit_2_with_what_to_do(
    plant, tmp_path, caplog, args, message
) -> None:
    src = _write_long(tmp_path / "s.csv", _samples(plant))
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    paths = {"src": src, "empty": tmp_path / "empty.csv", "other": tmp_path / "other.csv"}
    rc, _ = _import(tmp_path, *(a.format(**paths) for a in args))
    assert rc == 2
    assert message in caplog.text


def test_import_and_help_never_load_tensorflow(plant, tmp_path) -> None:
    src = _write_long(tmp_path / "s.csv", _samples(plant))
    code = (
        "import sys\nfrom jetson_trainer.__main__ import main\n"
        "rc = main(sys.argv[1:])\n"
        "print(rc, 'tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    args = ["import", str(src), "--unlabeled-normal", "--out", str(tmp_path / "o")]
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["0", "False", "False"]
    helped = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "jetson_trainer", "import", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--unlabeled-normal" in helped.stdout and "--max-gap-s" in helped.stdout
    assert "tensorflow" not in helped.stderr  # the import-time log names every module


@pytest.mark.tensorflow
def test_train_learns_the_imported_history_better_than_chance(tmp_path) -> None:
    plant = {"m01": _timeline(4, 10), "m02": _timeline(4, 11)}
    src = _write_long(tmp_path / "s.csv", _samples(plant))
    log = _write_maintenance(tmp_path / "log.csv", plant)
    rc, data = _import(tmp_path, str(src), "--maintenance", str(log), "--unlabeled-normal")
    assert rc == 0
    infer_y = load_split(data, "infer")[1]
    assert set(infer_y.tolist()) == {0, 1, 2, 3}  # the held-out last cycle has every class
    rc = main(["train", "--data", str(data), "--out", str(tmp_path / "model"), "--epochs", "6"])
    assert rc == 0
    report = json.loads((tmp_path / "model" / "report.json").read_text())
    infer = report["splits"]["infer"]
    assert infer["n"] == len(infer_y)
    assert infer["accuracy"] > 0.9  # chance: 0.25 (4 classes); measured 1.0


def test_a_parquet_file_without_pyarrow_says_how_to_install_it(
    plant, tmp_path, caplog, monkeypatch
) -> None:
    src = tmp_path / "h.parquet"
    pq.write_table(pa.table({"timestamp": [T0], "machine": ["m01"], "temperature": [1.0]}), src)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # what an install without it sees
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    rc, _ = _import(tmp_path, str(src), "--unlabeled-normal")
    assert rc == 2
    assert "install pyarrow on the trainer (pip install pyarrow)" in caplog.text


def test_a_corrupt_parquet_file_exits_2(tmp_path, caplog) -> None:
    src = tmp_path / "broken.parquet"
    src.write_bytes(b"PAR1 this is not a parquet file")
    rc, _ = _import(tmp_path, str(src), "--unlabeled-normal")
    assert rc == 2
    assert "cannot read Parquet file" in caplog.text and "broken.parquet" in caplog.text


def test_a_slot_keeps_its_latest_sample_and_sample_hz_sets_the_grid(plant, tmp_path) -> None:
    x_true = _all(plant)[0]
    samples = _samples(plant)
    # every second twice: the real value at t + 0.5 s, an older junk one at t, rows reversed
    rows = [(f"{t}.5", m, c, v) for t, m, c, v in samples]
    rows += [(str(t), m, c, "999") for t, m, c, _ in samples]
    src = _write_long(tmp_path / "twice.csv", rows[::-1])
    rc, out = _import(tmp_path, str(src), "--unlabeled-normal", "--holdout", "0", name="one")
    assert rc == 0
    np.testing.assert_array_equal(load_split(out, "train")[0], x_true)
    m = json.loads((out / "import_report.json").read_text())["machines"]["m01"]
    assert m["merged_samples"] == 34 * T * len(CHANNELS)
    # on a 2 Hz grid each sample has a slot of its own: 30 s windows, junk and real in turn
    rc, out = _import(
        tmp_path,
        str(src),
        "--unlabeled-normal",
        "--holdout",
        "0",
        "--sample-hz",
        "2",
        name="two",
    )
    assert rc == 0
    x2, _ = load_split(out, "train")
    assert len(x2) == 2 * len(x_true) and x2.shape[1] == T
    np.testing.assert_array_equal(x2[0, ::2], np.full((T // 2, len(CHANNELS)), 999, np.float32))
    np.testing.assert_array_equal(x2[0, 1::2], x_true[0, : T // 2])


def test_import_settings_have_their_own_env_prefix(plant, tmp_path) -> None:
    """EDGELOOP_IMPORT_*: a variable meant for `serve` (EDGELOOP_DATA…) never steers import."""
    from jetson_trainer.config import ImportConfig
    from nodekit.settings import env_names

    assert all(var == "EDGELOOP_IMPORT_" + f.upper() for var, f in env_names(ImportConfig).items())
    src = _write_long(tmp_path / "s.csv", _samples(plant))
    env = {"EDGELOOP_IMPORT_UNLABELED_NORMAL": "1", "EDGELOOP_IMPORT_HOLDOUT": "0"}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        rc, out = _import(tmp_path, str(src))
    assert rc == 0 and load_split(out, "infer") is None
    assert len(load_split(out, "train")[0]) == 68


def test_one_channel_silent_longer_than_max_gap_is_a_gap_for_the_machine(tmp_path) -> None:
    _, x = _timeline(1, 8)
    flat = x.reshape(-1, len(CHANNELS))
    silent = range(1200, 1220)  # temperature only, 20 s; the other channels go on
    samples = [
        (T0 + i, "m01", c, f"{flat[i, c]:.9g}")
        for i in range(len(flat))
        for c in range(len(CHANNELS))
        if not (c == 0 and i in silent)
    ]
    rc, out = _import(
        tmp_path,
        str(_write_long(tmp_path / "s.csv", samples)),
        "--unlabeled-normal",
        "--holdout",
        "0",
    )
    assert rc == 0
    got, _ = load_split(out, "train")
    after = (len(flat) - 1220) // T  # windows restart at t=1220
    assert len(got) == 20 + after
    np.testing.assert_array_equal(got[:20], x[:20])
    np.testing.assert_array_equal(got[20], flat[1220 : 1220 + T])
    m = json.loads((out / "import_report.json").read_text())["machines"]["m01"]
    assert (m["gaps"], m["gap_s"], m["filled_samples"]) == (1, 20.0, 0)


def test_a_value_beyond_float32_and_a_200kb_field_refuse_their_row_only(plant, tmp_path) -> None:
    samples = _samples(plant)
    src = _write_long(tmp_path / "big.csv", samples)
    good_lines = len(samples) + 1
    with src.open("a", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([T0 + 5, "m01", "temperature", "1e308"])  # finite in float64, inf in float32
        w.writerow([T0 + 5, "m01", "vibration", "-3.5e38"])
        w.writerow([T0 + 5, "m01", "temperature", "x" * 200_000])  # beyond the CSV field limit
        w.writerow([T0 + 5, "m01", "temperature", "1" * 2_000])  # a 2 KB cell
        w.writerow([T0 + 5, "m01", "pressure", "abc"])  # the rows after are still read
    rc, out = _import(tmp_path, str(src), "--unlabeled-normal", "--holdout", "0")
    assert rc == 0
    refused = json.loads((out / "import_report.json").read_text())["refused"]
    at = [f"big.csv:{good_lines + i}" for i in range(1, 6)]
    assert refused == {
        "out_of_range": {"count": 2, "first": at[0:2]},
        "unreadable_row": {"count": 1, "first": [at[2]]},
        "oversized_field": {"count": 1, "first": [at[3]]},
        "non_numeric": {"count": 1, "first": [at[4]]},
    }
    x, _ = load_split(out, "train")
    np.testing.assert_array_equal(x, _all(plant)[0])  # unharmed, and finite as float32
    assert np.isfinite(x).all()
