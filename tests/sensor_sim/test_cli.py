"""`python -m sensor_sim`: help for every subcommand, argument errors, settings, exit codes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nodekit.settings import MqttSettings, env_names
from protocol import DEFAULT_PREFIX
from sensor_sim import FleetConfig, SimConfig
from sensor_sim.__main__ import build_parser, connection, main

SUBCOMMANDS = ["run", "drift", "fault", "repair", "labels", "dataset"]


@pytest.mark.parametrize("argv", [["--help"], *([c, "--help"] for c in SUBCOMMANDS)])
def test_every_subcommand_has_help(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["drift"],  # --mode is required
        ["drift", "--mode", "sideways"],
        ["drift", "--mode", "offset", "--param", "temperature=abc"],
        ["drift", "--mode", "offset", "--param", "temperature=nan"],
        ["dataset", "--out", "x", "--size", "validation=4"],
        ["dataset", "--out", "x", "--size", "train=1.5"],
        ["dataset", "--out", "x", "--seed", "-1"],
    ],
)
def test_bad_arguments_exit_with_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2


@pytest.mark.parametrize(
    "argv",
    [
        ["drift", "--mode", "step", "--param", "temperature=5"],
        ["drift", "--mode", "offset", "--param", "humidity=5"],
        ["fault", "--state", "pump_fault", "--machines", "m01,../x"],
        ["fault", "--state", "melted"],  # no simulated type has that class
        ["labels", "--fraction", "1.5"],
    ],
)
def test_invalid_commands_are_refused_before_touching_the_broker(argv, caplog):
    assert main([*argv, "--broker", "127.0.0.1:1"]) == 2
    assert "invalid command" in caplog.text


def test_run_refuses_bad_rates_with_exit_code_2(caplog):
    assert main(["run", "--hz", "0", "--no-dashboard"]) == 2
    assert "--hz" in caplog.text


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--label-fraction", "1.5"], "--label-fraction"),
        (["--machines", "0"], "--machines"),
        (["--fault-mtbf", "-1"], "--fault-mtbf"),
        (["--duration", "-1"], "--duration"),
        (["--machines", "many"], "machines"),
        (["--broker", "host:notaport"], "--broker"),
        (["--node", "../sim"], "--node"),
    ],
)
def test_run_refuses_an_out_of_range_flag_with_exit_2_naming_the_flag(
    argv: list[str], flag: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert main(["run", *argv, "--no-dashboard", "--dry-run"]) == 2
    assert flag in caplog.text and "bad setting" in caplog.text


def test_control_commands_refuse_a_bad_broker_with_exit_2(caplog: pytest.LogCaptureFixture) -> None:
    assert main(["repair", "--broker", "host:notaport"]) == 2
    assert "--broker" in caplog.text


def test_broker_and_prefix_default_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGELOOP_BROKER", "10.0.0.5:1884")
    monkeypatch.setenv("EDGELOOP_PREFIX", "site7/v1")
    args = build_parser().parse_args(["drift", "--mode", "off"])
    conn = connection(args, os.environ)
    assert (conn.broker, conn.prefix, args.machines) == ("10.0.0.5:1884", "site7/v1", ("all",))


def _settings_line(caplog: pytest.LogCaptureFixture) -> str:
    return next(r.getMessage() for r in caplog.records if r.getMessage().startswith("settings:"))


def test_run_settings_take_flag_over_env_over_config_file_over_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "sim.toml"
    config.write_text("[sim]\nhz = 2.0\nmachines = 3\nlabel_fraction = 0.5\nseed = 7\n")
    monkeypatch.setenv("EDGELOOP_SIM_HZ", "4")
    monkeypatch.setenv("EDGELOOP_SIM_MACHINES", "5")
    assert main(["run", "--config", str(config), "--hz", "8", "--dry-run"]) == 0
    line = _settings_line(caplog)
    assert "hz=8.0" in line  # flag beats env and file
    assert "machines=5" in line  # env beats file
    assert "label_fraction=0.5" in line and "seed=7" in line  # file beats default
    assert "mtbf_s=300.0" in line and f"prefix='{DEFAULT_PREFIX}'" in line  # defaults


def test_run_reads_a_config_file_at_top_level(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "sim.toml"
    config.write_text('broker = "10.1.2.3:1884"\ndashboard = false\n')
    assert main(["run", "--config", str(config), "--dry-run"]) == 0
    line = _settings_line(caplog)
    assert "broker='10.1.2.3:1884'" in line and "dashboard=False" in line


def test_unknown_config_key_is_refused_with_exit_2(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "sim.toml"
    config.write_text("[sim]\nhz = 2.0\nmachine_count = 3\n")
    assert main(["run", "--config", str(config), "--dry-run"]) == 2
    assert "unknown setting(s) ['machine_count']" in caplog.text and str(config) in caplog.text


def test_out_of_range_value_in_the_environment_exits_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("EDGELOOP_SIM_LABEL_FRACTION", "1.5")
    assert main(["run", "--dry-run"]) == 2
    assert "EDGELOOP_SIM_LABEL_FRACTION" in caplog.text


def test_unreadable_config_file_exits_2(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert main(["run", "--config", str(tmp_path / "missing.toml"), "--dry-run"]) == 2
    assert "cannot read config file" in caplog.text


def test_simulator_env_names_never_collide_with_other_roles() -> None:
    """Only the broker, the prefix and the MQTT login (EDGELOOP_MQTT_*, the same meaning in
    every role) are shared; every other variable is EDGELOOP_SIM_*."""
    names = {**env_names(SimConfig), **env_names(FleetConfig)}
    shared = {"EDGELOOP_BROKER", "EDGELOOP_PREFIX", *env_names(MqttSettings)}
    assert shared <= set(names)
    for var, field in names.items():
        assert var in shared or var == "EDGELOOP_SIM_" + field.upper()
    assert names["EDGELOOP_SIM_MACHINES"] == "machines"
    assert "EDGELOOP_MACHINES" not in names


def test_version_is_the_protocol_version(capsys: pytest.CaptureFixture[str]) -> None:
    import protocol
    import sensor_sim

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"sensor_sim {protocol.__version__}"
    assert sensor_sim.__version__ is protocol.__version__


@pytest.mark.broker
def test_run_subcommand_publishes_for_its_duration_and_reports_the_rate(broker, topics, caplog):
    from .conftest import subscribed, wait_for

    with subscribed(broker, topics) as (got, _):
        argv = [
            "run",
            "--broker",
            broker.address,
            "--prefix",
            topics.prefix,
            "--machines",
            "2",
            "--hz",
            "10",
            "--duration",
            "1",
            "--no-dashboard",
            "--seed",
            "3",
            "--label-fraction",
            "1",
            "--fault-mtbf",
            "0",
        ]
        assert main(argv) == 0
        assert wait_for(lambda: len(got.snapshot()) >= 20, timeout=2)
    out = caplog.text
    assert "published 20 windows from 2 machines" in out and "target 20.0" in out
    assert all(w.label == 0 for w in got.snapshot())


def test_dataset_subcommand_accepts_size_overrides(tmp_path, caplog):
    argv = [
        "dataset",
        "--out",
        str(tmp_path),
        "--seed",
        "5",
        "--size",
        "train=8",
        "--size",
        "infer=4",
        "--size",
        "drift_train=4",
        "--size",
        "drift_infer=4",
    ]
    assert main(argv) == 0
    assert "train: (8, 60, 4)" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir())[:2] == [
        "classes.json",
        "drift_infer_data.npy",
    ]


def test_run_without_a_reachable_broker_exits_1_with_a_hint(caplog):
    from scripts.broker import free_port

    argv = [
        "run",
        "--broker",
        f"127.0.0.1:{free_port()}",
        "--no-dashboard",
        "--connect-timeout",
        "0.5",
        "--duration",
        "1",
    ]
    assert main(argv) == 1
    assert "could not connect to the MQTT broker" in caplog.text


def test_dataset_into_an_unwritable_place_exits_1(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(["dataset", "--out", str(blocker), "--size", "train=1"]) == 1
    assert "cannot write data sets" in caplog.text
