"""`serve` and `publish` settings: one declaration, precedence file < env < flags, exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

import jetson_trainer
import protocol
from jetson_trainer.__main__ import _parser, _settings, main
from jetson_trainer.config import PublishConfig, ServeConfig
from nodekit.cli import EXIT_USAGE
from nodekit.settings import flags_of, resolve
from protocol import DEFAULT_PREFIX, ConfigError


def _serve_args(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "serve",
        "--store",
        str(tmp_path / "s"),
        "--private-key",
        str(tmp_path / "k.pem"),
        *extra,
    ]


def test_serve_takes_flags_over_env_over_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "edgeloop.toml"
    config.write_text(
        "[trainer]\n"
        "margin = 0.05\n"
        "trigger_accuracy = 0.8\n"
        "replay_size = 500\n"
        "finetune_epochs = 3\n"
        'broker = "file-host:1883"\n'
    )
    monkeypatch.setenv("EDGELOOP_TRIGGER_ACCURACY", "0.7")
    monkeypatch.setenv("EDGELOOP_FINETUNE_EPOCHS", "5")
    monkeypatch.delenv("EDGELOOP_BROKER", raising=False)
    monkeypatch.delenv("EDGELOOP_LABELS_NEEDED", raising=False)
    monkeypatch.delenv("EDGELOOP_PREFIX", raising=False)
    args = _parser().parse_args(
        _serve_args(tmp_path, "--config", str(config), "--margin", "0.03", "--epochs", "7")
    )
    c: ServeConfig = _settings(args, ServeConfig)
    assert c.margin == 0.03  # flag over file
    assert c.finetune_epochs == 7  # flag over env over file
    assert c.trigger_accuracy == 0.7  # env over file
    assert c.replay_size == 500 and c.broker == "file-host:1883"  # file over default
    assert c.labels_needed == 48 and c.prefix == DEFAULT_PREFIX  # defaults
    assert c.store == tmp_path / "s"
    assert c.policy.trigger_accuracy == 0.7 and c.policy.labels_needed == 48
    assert c.retrain.epochs == 7 and c.retrain.replay_size == 500
    assert c.retrain.gate.margin == 0.03
    assert c.retrain.gate.f1_margin == 0.02  # its own default


def test_serve_keeps_its_old_flag_names(tmp_path: Path) -> None:
    args = _parser().parse_args(
        _serve_args(
            tmp_path,
            "--labels", "32", "--check-labels", "12", "--trigger-accuracy", "0.85",
            "--replay-size", "10", "--initial-epochs", "2", "--no-dashboard",
            "--client-id", "trainer-x", "--broker", "h:1", "--prefix", "site/a",
        )
    )  # fmt: skip
    c = resolve(ServeConfig, env={}, flags=flags_of(args, ServeConfig))
    assert (c.labels_needed, c.check_labels, c.trigger_accuracy) == (32, 12, 0.85)
    assert (c.replay_size, c.initial_epochs, c.dashboard) == (10, 2, False)
    assert (c.client_id, c.broker, c.prefix) == ("trainer-x", "h:1", "site/a")


def test_out_of_range_trigger_accuracy_exits_2_naming_the_setting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert main(_serve_args(tmp_path, "--trigger-accuracy", "1.5")) == EXIT_USAGE
    assert "trigger_accuracy 1.5" in caplog.text
    assert "--trigger-accuracy" in caplog.text and "EDGELOOP_TRIGGER_ACCURACY" in caplog.text
    assert not (tmp_path / "s").exists()  # refused before anything was created


def test_an_unknown_config_key_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = tmp_path / "edgeloop.toml"
    config.write_text('[trainer]\nbrokr = "127.0.0.1:1883"\n')
    assert main(_serve_args(tmp_path, "--config", str(config))) == EXIT_USAGE
    assert "brokr" in caplog.text and str(config) in caplog.text


def test_serve_without_a_store_says_how_to_set_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EDGELOOP_STORE", raising=False)
    assert main(["serve", "--private-key", str(tmp_path / "k.pem")]) == EXIT_USAGE
    assert "store" in caplog.text and "--store" in caplog.text


def test_a_bad_env_value_is_a_usage_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGELOOP_REPLAY_SIZE", "lots")
    assert main(_serve_args(tmp_path)) == EXIT_USAGE
    assert "replay_size" in caplog.text and "environment" in caplog.text


def test_publish_shares_broker_and_prefix_and_defaults_to_the_protocol_prefix(
    tmp_path: Path,
) -> None:
    c = resolve(PublishConfig, env={}, flags={"model": str(tmp_path / "m.bundle")})
    assert c.prefix == DEFAULT_PREFIX and c.broker == "127.0.0.1:1883"
    with pytest.raises(ConfigError, match="prefix"):
        resolve(PublishConfig, env={}, flags={"model": "m", "prefix": "bad/#"})


def test_the_trainer_version_is_the_protocol_version() -> None:
    assert jetson_trainer.__version__ is protocol.__version__
