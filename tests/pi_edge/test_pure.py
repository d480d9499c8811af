"""Pure pieces: stats, inbox/batching, config, state dir, dashboard, metrics, PNG. No broker."""

from __future__ import annotations

import io
import json
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from nodekit.cli import EXIT_FAILED, EXIT_REFUSED, EXIT_USAGE
from nodekit.settings import build, resolve
from pi_edge import (
    BatchPolicy,
    ConfigError,
    EdgeConfig,
    EdgeError,
    Inbox,
    KindCounter,
    LatencyWindow,
    MachineRow,
    ModelStore,
    RateMeter,
    Snapshot,
    render,
)
from pi_edge.__main__ import _parser, build_config, main
from pi_edge.model._png import confusion_png
from pi_edge.model.evaluate import confusion_matrix, macro_f1
from protocol import decode_bundle

from ._model import EdgeModels


def test_rate_meter_counts_only_the_last_whole_seconds() -> None:
    r = RateMeter(window_s=2)
    r.add(5, now=10.1)
    r.add(5, now=10.9)
    r.add(3, now=11.5)
    assert r.rate(now=12.0) == (10 + 3) / 2
    assert r.rate(now=13.0) == 3 / 2
    assert r.rate(now=14.0) == 0.0
    assert r.total == 13


def test_latency_window_keeps_only_the_newest_samples() -> None:
    lw = LatencyWindow(size=10)
    for v in [1000.0] * 10 + [1.0] * 10:
        lw.add(v)
    assert lw.percentiles() == (1.0, 1.0)
    assert len(lw) == 10


def test_kind_counter_logs_each_kind_once_per_interval() -> None:
    c = KindCounter(log_interval_s=10.0)
    logged = [c.count(k, now=t) for t, k in [(0, "a"), (0, "b"), (1, "a"), (5, "b"), (11, "a")]]
    assert logged == [True, True, False, False, True]
    assert c.as_dict() == {"a": 3, "b": 2}
    assert c.total() == 5


def test_inbox_drops_the_oldest_when_full_and_counts_it() -> None:
    box: Inbox[int] = Inbox(capacity=4)
    evicted = [box.put(i) for i in range(10)]
    assert evicted == [False] * 4 + [True] * 6
    assert box.dropped == 6
    assert box.get_batch(BatchPolicy(max_size=3, max_wait_s=0.0), timeout=0) == [6, 7, 8]
    assert box.get_batch(BatchPolicy(max_size=3, max_wait_s=0.0), timeout=0) == [9]
    assert box.get_batch(BatchPolicy(max_size=3, max_wait_s=0.0), timeout=0) == []


def test_inbox_waits_for_a_batch_to_fill_at_most_max_wait() -> None:
    box: Inbox[int] = Inbox(capacity=100)
    policy = BatchPolicy(max_size=8, max_wait_s=0.05)

    def feed() -> None:
        for i in range(8):
            box.put(i)
            time.sleep(0.002)

    t = threading.Thread(target=feed)
    t.start()
    batch = box.get_batch(policy, timeout=1.0)
    t.join()
    assert batch == list(range(8))  # filled before the wait ran out
    box.put(99)
    t0 = time.monotonic()
    assert box.get_batch(policy, timeout=1.0) == [99]
    assert 0.04 <= time.monotonic() - t0 < 0.5


def test_inbox_get_batch_returns_empty_on_timeout() -> None:
    box: Inbox[int] = Inbox(capacity=2)
    t0 = time.monotonic()
    assert box.get_batch(BatchPolicy(), timeout=0.05) == []
    assert time.monotonic() - t0 >= 0.04


def test_config_precedence_is_defaults_file_env_flags(tmp_path: Path) -> None:
    toml = tmp_path / "edge.toml"
    toml.write_text('broker = "file:1"\nbatch_max = 8\nprefix = "site/a"\nmachines = ["m1"]\n')
    args = _parser().parse_args(["run", "--config", str(toml), "--batch-max", "16"])
    env = {"EDGELOOP_BROKER": "env:2", "EDGELOOP_STATE_DIR": str(tmp_path / "s")}
    cfg = build_config(args, env)
    assert (cfg.broker, cfg.intake.batch_max, cfg.prefix, cfg.intake.machines) == (
        "env:2",
        16,
        "site/a",
        ("m1",),
    )
    assert cfg.state_dir == tmp_path / "s"
    assert cfg.report.dashboard is True
    args = _parser().parse_args(["run", "--no-dashboard", "--machines", "m1,m2"])
    cfg = build_config(args, {})
    assert cfg.report.dashboard is False and cfg.intake.machines == ("m1", "m2")


def test_config_rejects_unknown_keys_and_bad_values(tmp_path: Path) -> None:
    toml = tmp_path / "edge.toml"
    toml.write_text('brokr = "x:1"\n')
    with pytest.raises(ConfigError, match="unknown setting"):
        resolve(EdgeConfig, file=toml)
    with pytest.raises(ConfigError, match="batch_max"):
        resolve(EdgeConfig, env={"EDGELOOP_BATCH_MAX": "0"})
    with pytest.raises(ConfigError, match="not a boolean"):
        resolve(EdgeConfig, env={"EDGELOOP_DASHBOARD": "maybe"})
    with pytest.raises(ConfigError, match="broker"):
        build(EdgeConfig, broker="host:notaport")
    with pytest.raises(ConfigError, match="machine id"):
        build(EdgeConfig, machines=("a/b",))


def test_run_without_key_or_insecure_flag_exits_2(tmp_path: Path) -> None:
    assert (
        main(["run", "--no-dashboard", "--broker", "127.0.0.1:1", "--state-dir", str(tmp_path)])
        == EXIT_USAGE
    )


def test_a_confidence_floor_the_detector_refuses_is_a_usage_error_not_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    argv = ["run", "--no-dashboard", "--insecure-dev", "--state-dir", str(tmp_path)]
    assert main([*argv, "--low-confidence", "1"]) == EXIT_USAGE
    assert "low_confidence 1.0" in caplog.text and "--low-confidence" in caplog.text
    assert "Traceback" not in caplog.text


def test_rollback_and_export_take_the_state_dir_from_config_file_and_env(tmp_path: Path) -> None:
    toml = tmp_path / "edge.toml"
    toml.write_text(f'[edge]\nstate_dir = "{tmp_path / "from-file"}"\n')
    args = _parser().parse_args(["export", "--config", str(toml)])
    assert build_config(args, {}).state_dir == tmp_path / "from-file"
    env = {"EDGELOOP_STATE_DIR": str(tmp_path / "from-env")}
    assert build_config(args, env).state_dir == tmp_path / "from-env"
    args = _parser().parse_args(["rollback", "--state-dir", str(tmp_path / "flag")])
    assert build_config(args, env).state_dir == tmp_path / "flag"


def test_store_keeps_previous_and_rollback_goes_back_once_and_blocks(
    models: EdgeModels, tmp_path: Path
) -> None:
    store = ModelStore(tmp_path)
    b1 = decode_bundle(models.bundle(1), models.public_key)
    b2 = decode_bundle(models.bundle(2), models.public_key)
    store.save(b1)
    store.save(b1)  # same bytes: no-op, no previous
    assert not store.previous_path.exists()
    store.save(b2)
    assert store.current_path.read_bytes() == b2.raw
    assert store.previous_path.read_bytes() == b1.raw
    assert main(["rollback", "--state-dir", str(tmp_path)]) == 0
    assert store.current_path.read_bytes() == b1.raw
    assert not store.previous_path.exists()  # nothing to go to: v2 can never come back this way
    assert store.blocked() == [2]
    assert not list(store.dir.glob(".*.tmp"))
    assert main(["rollback", "--state-dir", str(tmp_path)]) == EXIT_FAILED  # a repeat
    assert store.current_path.read_bytes() == b1.raw and store.blocked() == [2]
    store.save(b2)  # v2 again (a newer one would do the same): previous is v1
    assert main(["rollback", "--state-dir", str(tmp_path), "--from", "1"]) == EXIT_FAILED
    assert store.current_path.read_bytes() == b2.raw  # stale: nothing changed
    assert main(["rollback", "--state-dir", str(tmp_path), "--from", "2"]) == 0
    assert store.current_path.read_bytes() == b1.raw
    store.save(decode_bundle(models.bundle(3), models.public_key))
    assert store.blocked() == []


def test_rollback_without_previous_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(EdgeError, match="no previous model"):
        ModelStore(tmp_path).rollback()
    assert main(["rollback", "--state-dir", str(tmp_path)]) == EXIT_FAILED


def _text(renderable: object, width: int = 100) -> str:
    console = Console(
        file=io.StringIO(),
        width=width,
        color_system=None,
        legacy_windows=False,
        force_terminal=False,
    )
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_dashboard_renders_header_and_one_row_per_machine() -> None:
    snap = Snapshot(
        node="edge-pi1",
        model_version=3,
        model_age_s=125.0,
        broker_state="connected",
        queue_depth=2,
        queue_capacity=2048,
        drops=7,
        windows_per_s=41.5,
        bad_payloads={"bad_json": 2, "truncated": 1},
        machines=(
            MachineRow("m01", "normal", 0.97, 20.0, 1.2, 3.4),
            MachineRow("m02", "pump_fault", 0.91, 20.5, 1.3, 4.0, drift="suspect"),
            MachineRow("m03", "normal", 0.41, 1.0, 1.1, 2.0, drift="drift"),
            MachineRow("m04", "normal", 0.99, 0.0, 1.0, 1.0, idle_s=60.0),
        ),
        drift="drift",
        evidence={
            "drift": {"labeled_seen": 40, "labeled_wrong": 10},
            "buffer": {"pending": 3, "inflight": 1, "acknowledged": 50},
        },
    )
    text = _text(render(snap), width=120)
    lines = [line.rstrip() for line in text.splitlines()]
    assert lines[0] == "pi_edge edge-pi1  model v3 age 2m  broker connected"
    assert lines[1] == "queue 2/2048  drops 7  41.5 windows/s  bad payloads bad_json 2, truncated 1"
    assert lines[2] == (
        "drift DRIFT  labeled accuracy 0.750 (40 labels)  kept: 3 pending, 1 in flight, 50 shipped"
    )
    assert lines[3].split() == [
        "machine",
        "class",
        "conf",
        "state",
        "drift",
        "win/s",
        "p50",
        "ms",
        "p99",
        "ms",
    ]
    assert lines[4].split() == ["m01", "normal", "0.97", "OK", "ok", "20.0", "1.2", "3.4"]
    assert lines[5].split() == [
        "m02",
        "pump_fault",
        "0.91",
        "FAULT",
        "suspect",
        "20.5",
        "1.3",
        "4.0",
    ]
    assert lines[6].split() == ["m03", "normal", "0.41", "LOW-CONF", "drift", "1.0", "1.1", "2.0"]
    assert lines[7].split()[3] == "STALE"
    assert len(lines) == 8


def test_dashboard_shows_waiting_and_refused_bundle() -> None:
    snap = Snapshot(
        "n1",
        None,
        None,
        "reconnecting",
        0,
        16,
        0,
        0.0,
        last_model_error="mqtt: signature: bundle is unsigned",
    )
    text = _text(render(snap))
    assert "model none (waiting for a bundle) age -  broker reconnecting" in text
    assert "last refused bundle: mqtt: signature: bundle is unsigned" in text
    assert "no windows yet" in text


def test_confusion_and_macro_f1_match_hand_counts() -> None:
    y = [0, 0, 1, 1, 2, 3]
    p = [0, 1, 1, 1, 2, 2]
    cm = confusion_matrix(y, p, 4)
    assert cm.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0]]
    f1 = [2 / 3, 0.8, 2 / 3, 0.0]
    assert macro_f1(cm) == pytest.approx(sum(f1) / 4)


def test_confusion_png_is_a_valid_png(tmp_path: Path) -> None:
    cm = np.array([[50, 2], [3, 45]])
    path = tmp_path / "cm.png"
    confusion_png(cm, path, cell=40)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (88, 88)
    idat_len = int.from_bytes(data[33:37], "big")
    raw = zlib.decompress(data[41 : 41 + idat_len])
    assert len(raw) == height * (1 + 3 * width)


def test_evaluate_json_has_the_documented_keys(
    models: EdgeModels, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "cm.png"
    rc = main(
        [
            "evaluate",
            "--model",
            str(models.bundle_path),
            "--x",
            str(models.x_test_path),
            "--y",
            str(models.y_test_path),
            "--public-key",
            str(models.public_key_path),
            "--png",
            str(png),
            "--json",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {
        "model_version",
        "runtime",
        "n",
        "accuracy",
        "macro_f1",
        "classes",
        "confusion",
        "us_per_window_p50",
        "us_per_window_p99",
        "us_per_window_batched",
        "png",
    }
    assert out["n"] == len(models.y_test) == sum(map(sum, out["confusion"]))
    assert out["accuracy"] > 0.8 and out["macro_f1"] > 0.8
    assert 0 < out["us_per_window_p50"] <= out["us_per_window_p99"]
    assert out["runtime"] == "ai_edge_litert.interpreter"
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_evaluate_refuses_an_unsigned_bundle_without_insecure_dev(models: EdgeModels) -> None:
    path = models.dir / "unsigned_v1.bundle"
    path.write_bytes(models.bundle(1, signed=False))
    args = [
        "evaluate",
        "--model",
        str(path),
        "--x",
        str(models.x_test_path),
        "--y",
        str(models.y_test_path),
        "--json",
    ]
    assert main([*args, "--public-key", str(models.public_key_path)]) == EXIT_REFUSED
    assert main([*args, "--insecure-dev"]) == 0


def test_inbox_below_the_rate_threshold_takes_what_is_queued_at_once() -> None:
    box: Inbox[int] = Inbox(capacity=100)
    policy = BatchPolicy(max_size=8, max_wait_s=0.2, wait_above_per_s=1e9)
    box.put(1)
    t0 = time.monotonic()
    assert box.get_batch(policy, timeout=1.0) == [1]
    assert time.monotonic() - t0 < 0.1  # a light load pays no batching latency


def test_inbox_above_the_rate_threshold_waits_for_the_batch_to_fill() -> None:
    box: Inbox[int] = Inbox(capacity=10_000)
    policy = BatchPolicy(max_size=8, max_wait_s=0.5, wait_above_per_s=1000.0)
    for i in range(2000):  # ~instantly: far above 1,000/s
        box.put(i)
    while box.get_batch(policy, timeout=0.0):
        pass
    assert box.arrival_rate > 1000.0

    def feed() -> None:
        for i in range(8):
            time.sleep(0.01)
            box.put(i)

    t = threading.Thread(target=feed)
    t.start()
    batch = box.get_batch(policy, timeout=1.0)
    t.join()
    assert batch == list(range(8))  # it waited for all eight instead of taking the first


def test_latency_window_extend_wraps_like_repeated_add() -> None:
    a, b = LatencyWindow(5), LatencyWindow(5)
    values = [float(v) for v in range(13)]
    for v in values:
        a.add(v)
    b.extend(values[:3])
    b.extend(values[3:11])
    b.extend(values[11:])
    assert a.percentiles((0.0, 100.0)) == b.percentiles((0.0, 100.0)) == (8.0, 12.0)
    assert len(a) == len(b) == 5


def test_confusion_png_labels_rows_with_class_names(tmp_path: Path) -> None:
    cm = np.array([[50, 2], [3, 45]])
    plain, named = tmp_path / "plain.png", tmp_path / "named.png"
    confusion_png(cm, plain, cell=40)
    confusion_png(cm, named, cell=40, classes=("normal", "pump_fault"))

    def pixels(path: Path) -> np.ndarray:
        data = path.read_bytes()
        w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        raw = zlib.decompress(data[41 : 41 + int.from_bytes(data[33:37], "big")])
        return np.frombuffer(raw, np.uint8).reshape(h, 1 + 3 * w)[:, 1:].reshape(h, w, 3)

    a, b = pixels(plain), pixels(named)
    assert b.shape[0] > a.shape[0] and b.shape[1] > a.shape[1]  # room for header and names
    ink = (b < 100).all(axis=2)  # the glyphs' near-black, not the cells' blue
    assert ink[b.shape[0] - a.shape[0] :, :40].any()  # "0 NORMAL" / "1 PUMP_FAULT" left of cells
    assert ink[: b.shape[0] - a.shape[0]].any()  # header and column numbers above them
    assert not (a < 100).all(axis=2)[:, :3].any()  # the unlabeled one has no text left of cells
    with pytest.raises(ValueError, match="3 class names"):
        confusion_png(cm, named, classes=("a", "b", "c"))


def test_inbox_gathers_light_traffic_for_the_low_rate_wait_without_a_wake_per_put() -> None:
    box: Inbox[int] = Inbox(capacity=100)
    policy = BatchPolicy(
        max_size=32,
        max_wait_s=0.0,
        wait_above_per_s=1e6,
        low_rate_wait_s=0.05,
        low_rate_below_per_s=1000.0,
    )

    def feed() -> None:
        for i in range(5):
            box.put(i)
            time.sleep(0.005)

    t = threading.Thread(target=feed)
    t0 = time.monotonic()
    t.start()
    batch = box.get_batch(policy, timeout=1.0)
    waited = time.monotonic() - t0
    t.join()
    assert batch == [0, 1, 2, 3, 4]  # one batch, not five
    assert 0.04 <= waited < 0.5
    # above the threshold nothing waits: a lone window comes at once
    fast = BatchPolicy(max_size=32, max_wait_s=0.0, low_rate_wait_s=0.05, low_rate_below_per_s=0.0)
    box.put(7)
    t0 = time.monotonic()
    assert box.get_batch(fast, timeout=1.0) == [7]
    assert time.monotonic() - t0 < 0.03


def test_a_full_inbox_holds_the_put_until_the_worker_takes_a_batch_instead_of_dropping() -> None:
    from pi_edge.intake.inbox import BatchPolicy, Inbox

    box = Inbox[int](capacity=4, full_wait_s=1.0)
    for i in range(4):
        box.put(i)
    taken: list[int] = []

    def worker() -> None:
        time.sleep(0.1)  # busy with a batch while paho's thread finds the inbox full
        taken.extend(box.get_batch(BatchPolicy(max_size=2, max_wait_s=0.0), timeout=0.0))

    t = threading.Thread(target=worker)
    t.start()
    start = time.monotonic()
    evicted = box.put(4)
    waited = time.monotonic() - start
    t.join()
    assert not evicted and box.dropped == 0 and box.full_waits == 1
    assert 0.05 < waited < 0.9  # held until the worker took its batch, not the full second
    rest = box.get_batch(BatchPolicy(max_size=8, max_wait_s=0.0), timeout=0.0)
    assert taken + rest == [0, 1, 2, 3, 4]  # nothing lost, order kept
    no_wait = Inbox[int](capacity=1)
    no_wait.put(0)
    assert no_wait.put(1) and no_wait.dropped == 1 and no_wait.full_waits == 0
