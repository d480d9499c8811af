"""`python -m sensor_sim`: help for every subcommand, argument errors, command building."""

from __future__ import annotations

import pytest

from sensor_sim.__main__ import build_parser, main

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
        ["fault", "--state", "melted"],
        ["run", "--broker", "host:notaport"],
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
        ["labels", "--fraction", "1.5"],
    ],
)
def test_invalid_commands_are_refused_before_touching_the_broker(argv, caplog):
    assert main([*argv, "--broker", "127.0.0.1:1"]) == 2
    assert "invalid command" in caplog.text


def test_run_refuses_bad_rates_with_exit_code_2(caplog):
    assert main(["run", "--hz", "0", "--no-dashboard"]) == 2
    assert "--hz" in caplog.text


def test_broker_and_prefix_default_to_the_environment(monkeypatch):
    monkeypatch.setenv("EDGELOOP_BROKER", "10.0.0.5:1884")
    monkeypatch.setenv("EDGELOOP_PREFIX", "site7/v1")
    args = build_parser().parse_args(["drift", "--mode", "off"])
    assert (args.broker, args.prefix, args.machines) == ("10.0.0.5:1884", "site7/v1", ("all",))


@pytest.mark.broker
def test_run_subcommand_publishes_for_its_duration_and_reports_the_rate(broker, topics, capsys):
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
    out = capsys.readouterr().out
    assert "published 20 windows from 2 machines" in out and "target 20.0" in out
    assert all(w.label == 0 for w in got.snapshot())


def test_dataset_subcommand_accepts_size_overrides(tmp_path, capsys):
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
    assert "train: (8, 60, 4)" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir())[:2] == [
        "classes.json",
        "drift_infer_data.npy",
    ]


def test_run_without_a_reachable_broker_exits_2_with_a_hint(caplog):
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
    assert main(argv) == 2
    assert "could not connect to the MQTT broker" in caplog.text
