"""The trainer end to end on tiny data: train, convert, bundle, evaluate, finetune, publish."""

from __future__ import annotations

import contextlib
import io
import json
import stat
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jetson_trainer import build_bundle, generate_keypair
from jetson_trainer.__main__ import main
from jetson_trainer.build.energy import PowerMeter, parse_power_mw
from jetson_trainer.build.interpreter import LiteModel
from nodekit.cli import EXIT_FAILED, EXIT_REFUSED, EXIT_USAGE
from nodekit.mqtt import connect, make_client
from protocol import Bundle, BundleError, SignatureError, Topics, decode_bundle, load_public_key
from scripts.broker import Broker

from .conftest import Trained

pytestmark = pytest.mark.tensorflow

ORIN_LINE = (
    "11-23-2026 14:02:11 RAM 2341/7620MB (lfb 1x4MB) SWAP 0/3810MB (cached 0MB) "
    "CPU [12%@1510,8%@1510,off,off,3%@1510,1%@1510] EMC_FREQ 0% GR3D_FREQ 45% "
    "cpu@48.1C soc2@46.2C VDD_IN 5123mW/4890mW VDD_CPU_GPU_CV 1402mW/1350mW "
    "VDD_SOC 1430mW/1420mW"
)


def _decode(trained: Trained, data: bytes | None = None) -> Bundle:
    raw = trained.bundle.read_bytes() if data is None else data
    return decode_bundle(raw, load_public_key(trained.public_key))


def test_seed_architecture_has_seed000_parameter_count() -> None:
    from jetson_trainer.build.architectures import SEED_PARAMS, build_model

    assert build_model("seed").count_params() == SEED_PARAMS == 603_844
    assert build_model("compact").count_params() < 5_000


def test_keygen_writes_private_key_0600_and_a_public_key_protocol_reads(tmp_path: Path) -> None:
    assert main(["keygen", "--out", str(tmp_path)]) == 0
    priv, pub = tmp_path / "trainer_ed25519.pem", tmp_path / "trainer_ed25519.pub.pem"
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in priv.read_bytes()
    assert len(load_public_key(pub)) == 32
    assert main(["keygen", "--out", str(tmp_path)]) == EXIT_FAILED  # never overwrites silently


def test_shipped_int8_variant_agrees_with_keras_and_resizes_its_batch(trained: Trained) -> None:
    report = json.loads((trained.out / "report.json").read_text())
    assert report["shipped"] == "int8"
    for q in ("int8", "float16", "float32"):
        conv = report["conversion"][q]
        assert conv["agreement"] >= 0.995, conv
        assert conv["batch_resize_ok"] and conv["passed"]
        assert conv["us_per_window"] > 0 and conv["size_bytes"] > 0
    assert report["energy"] == {"available": False, "reason": "tegrastats not found"}


def test_report_has_metrics_for_every_split_and_the_figures(trained: Trained) -> None:
    report = json.loads((trained.out / "report.json").read_text())
    for split in ("validation", "infer", "drift_infer"):
        m = report["splits"][split]
        assert {"accuracy", "macro_f1", "per_class", "confusion_matrix", "roc_auc_macro"} <= set(m)
        assert m["per_class"]["bearing_fault"]["precision"] >= 0
    assert report["splits"]["infer"]["n"] == 200
    for name in (
        "confusion_matrix_infer.png",
        "confusion_matrix_drift_infer.png",
        "training_curves.png",
    ):
        assert (trained.out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bundle_round_trips_with_the_public_key(trained: Trained) -> None:
    bundle = _decode(trained)
    m = bundle.manifest
    assert bundle.signed and m.version == 1 and m.parent is None
    assert m.quantization == "int8" and m.arch == "compact"
    assert m.converter.startswith("tensorflow ")
    assert bundle.model == (trained.out / "model.tflite").read_bytes()
    assert len(m.normalisation["mean"]) == 4
    stats = m.train_stats["vibration"]
    assert {"mean", "std", "q01", "q50", "q99", "window_mean_mean", "window_std_std"} <= set(stats)
    assert {"accuracy", "macro_f1", "mean_confidence"} <= set(m.metrics)
    assert len(m.golden) == 8
    lite = LiteModel(bundle.model, m.normalisation)  # raw windows, fed as the Pi feeds them
    for g in m.golden:
        probs = lite.predict(np.array(g["x"], np.float32)[None])[0]
        assert np.abs(probs - np.array(g["probs"])).max() <= m.golden_tolerance


@pytest.mark.parametrize("where", ["manifest", "model", "signature"])
def test_a_flipped_byte_is_refused(trained: Trained, where: str) -> None:
    data = bytearray(trained.bundle.read_bytes())
    m_len = int.from_bytes(data[4:8], "little")
    offset = {"manifest": 14 + m_len // 2, "model": 14 + m_len + 100, "signature": len(data) - 5}
    data[offset[where]] ^= 0x01
    with pytest.raises(SignatureError, match="does not verify"):
        _decode(trained, bytes(data))


def test_the_wrong_key_is_refused(trained: Trained, tmp_path: Path) -> None:
    _, other_pub = generate_keypair(tmp_path)
    with pytest.raises(SignatureError):
        decode_bundle(trained.bundle.read_bytes(), load_public_key(other_pub))
    rc = main(
        [
            "evaluate",
            "--model",
            str(trained.bundle),
            "--data",
            str(trained.data),
            "--public-key",
            str(other_pub),
            "--json",
        ]
    )
    assert rc == EXIT_REFUSED


def test_evaluate_json_reports_the_bundled_tflite_metrics(
    trained: Trained, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    rc = main(
        [
            "evaluate",
            "--model",
            str(trained.bundle),
            "--data",
            str(trained.data),
            "--split",
            "infer",
            "--json",
            "--public-key",
            str(trained.public_key),
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 200 and out["model_version"] == 1
    assert out["accuracy"] >= 0.95 and 0 <= out["macro_f1"] <= 1
    assert np.array(out["confusion_matrix"]).sum() == 200


def test_evaluate_refuses_an_unverified_bundle_without_a_key(trained: Trained) -> None:
    rc = main(["evaluate", "--model", str(trained.bundle), "--data", str(trained.data)])
    assert rc == EXIT_USAGE  # no --public-key and no --insecure-dev


def test_finetune_child_beats_parent_on_drifted_data(trained: Trained, tmp_path: Path) -> None:
    # A regime shift the parent has never seen: every channel offset, classes still separable.
    x = np.load(trained.data / "drift_train_data.npy")
    y = np.load(trained.data / "drift_train_labels.npy")
    shift = np.array([25.0, 0.6, -3.0, 45.0], np.float32)
    np.save(tmp_path / "x.npy", x + shift)
    np.save(tmp_path / "y.npy", y)
    drifted = tmp_path / "drifted"
    drifted.mkdir()
    np.save(
        drifted / "drift_infer_data.npy", np.load(trained.data / "drift_infer_data.npy") + shift
    )
    np.save(drifted / "drift_infer_labels.npy", np.load(trained.data / "drift_infer_labels.npy"))
    out = tmp_path / "v2"
    rc = main(
        [
            "finetune",
            "--model",
            str(trained.bundle),
            "--x",
            str(tmp_path / "x.npy"),
            "--y",
            str(tmp_path / "y.npy"),
            "--replay",
            str(trained.data),
            "--out",
            str(out),
            "--max-labels",
            "48",
            "--epochs",
            "25",
            "--public-key",
            str(trained.public_key),
            "--private-key",
            str(trained.private_key),
        ]
    )
    assert rc == 0
    child = _decode(trained, (out / "model.bundle").read_bytes())
    assert child.manifest.version == 2 and child.manifest.parent == 1
    assert child.manifest.normalisation == _decode(trained).manifest.normalisation
    report = json.loads((out / "report.json").read_text())
    assert report["n_labeled"] == 48 and report["parent"] == 1
    assert (out / "model.keras").exists()

    scores = []
    for bundle in (trained.bundle, out / "model.bundle"):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = main(
                [
                    "evaluate",
                    "--model",
                    str(bundle),
                    "--data",
                    str(drifted),
                    "--split",
                    "drift_infer",
                    "--json",
                    "--public-key",
                    str(trained.public_key),
                ]
            )
        assert rc == 0
        scores.append(json.loads(buf.getvalue())["accuracy"])
    parent_acc, child_acc = scores
    assert child_acc > parent_acc and child_acc >= 0.9, (parent_acc, child_acc)
    assert report["comparison"]["infer"]["child"]["accuracy"] >= 0.9


def test_build_bundle_api_writes_a_signed_bundle_and_keras_model(
    tiny_data: Path, keypair: tuple[Path, Path], tmp_path: Path
) -> None:
    x = np.load(tiny_data / "train_data.npy")
    y = np.load(tiny_data / "train_labels.npy")
    path = build_bundle(
        x, y, tmp_path, epochs=2, seed=1, version=7, parent=6, private_key=keypair[0], site="p/a"
    )
    assert path == tmp_path / "model.bundle" and (tmp_path / "model.keras").exists()
    bundle = decode_bundle(path.read_bytes(), load_public_key(keypair[1]))
    assert (bundle.manifest.version, bundle.manifest.parent, bundle.manifest.site) == (7, 6, "p/a")


@pytest.mark.broker
def test_publish_leaves_the_bundle_retained_on_model_current(
    trained: Trained, broker: Broker, topics: Topics, tmp_path: Path
) -> None:
    publish = ["publish", "--broker", broker.address, "--prefix", topics.prefix, "--model"]
    # `train` made it for the default site: the Pis on this prefix would refuse it
    assert main([*publish, str(trained.bundle)]) == EXIT_REFUSED
    keys = ["--private-key", str(trained.private_key), "--public-key", str(trained.public_key)]
    reissue = ["reissue", "--model", str(trained.bundle), "--version", "2", *keys]
    assert main([*reissue, "--out", str(tmp_path), "--prefix", topics.prefix]) == 0
    bundle = tmp_path / "model.bundle"
    data = bundle.read_bytes()
    assert decode_bundle(data, load_public_key(trained.public_key)).manifest.site == topics.prefix
    assert main([*publish, str(bundle)]) == 0
    got: list[tuple[bytes, bool]] = []
    done = threading.Event()
    client = make_client("test-subscriber")

    def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        c.subscribe(topics.model_current, qos=1)

    def on_message(c: Any, userdata: Any, msg: Any) -> None:
        got.append((msg.payload, msg.retain))
        done.set()

    client.on_connect = on_connect
    client.on_message = on_message
    connect(client, broker.address)
    client.loop_start()
    try:
        assert done.wait(10), "no retained bundle arrived"
    finally:
        client.disconnect()
        client.loop_stop()
    payload, retained = got[0]
    assert payload == data and retained


def test_publish_to_an_unreachable_broker_fails_clearly(trained: Trained) -> None:
    from scripts.broker import free_port

    rc = main(
        [
            "publish",
            "--model",
            str(trained.bundle),
            "--broker",
            f"127.0.0.1:{free_port()}",
            "--timeout",
            "2",
        ]
    )
    assert rc == EXIT_FAILED


def test_tegrastats_parser_reads_board_input_power() -> None:
    assert parse_power_mw(ORIN_LINE) == 5123
    assert parse_power_mw("RAM 1/2MB POM_5V_IN 2539/2400 POM_5V_GPU 0/0") == 2539
    assert parse_power_mw("RAM 1/2MB VDD_SOC 1430mW/1420mW") is None


def test_power_meter_sums_energy_from_a_fake_tegrastats(tmp_path: Path) -> None:
    fake = tmp_path / "tegrastats"
    fake.write_text(f"#!/bin/sh\nwhile true; do echo '{ORIN_LINE}'; sleep 0.05; done\n")
    fake.chmod(0o755)
    with PowerMeter(binary=str(fake)) as meter:
        time.sleep(0.5)
    s = meter.summary()
    assert s["available"] and s["avg_power_w"] == pytest.approx(5.123)
    assert s["energy_j"] == pytest.approx(5.123 * s["seconds"], rel=0.01)
    assert PowerMeter(binary="").summary() == {"available": False, "reason": "tegrastats not found"}


def test_bundle_errors_subclass_bundle_error() -> None:
    assert issubclass(SignatureError, BundleError)


def test_evaluate_accepts_x_y_files(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x = np.load(trained.data / "infer_data.npy")[:40]
    y = np.load(trained.data / "infer_labels.npy")[:40]
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    capsys.readouterr()
    rc = main(
        [
            "evaluate",
            "--model",
            str(trained.bundle),
            "--x",
            str(tmp_path / "x.npy"),
            "--y",
            str(tmp_path / "y.npy"),
            "--json",
            "--insecure-dev",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 40 and out["signed"] is True
