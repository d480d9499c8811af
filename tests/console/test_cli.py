"""`python -m console`: settings, exit codes, and the browser version under textual-serve."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from console.__main__ import ConsoleConfig, _parser, build_config, main
from nodekit.cli import EXIT_USAGE

REPO = Path(__file__).resolve().parents[2]


def test_a_bad_setting_exits_2_with_what_to_fix(caplog: pytest.LogCaptureFixture) -> None:
    assert main(["--broker", "hub:99999"]) == EXIT_USAGE
    assert "is not HOST:PORT" in caplog.text and "--broker or EDGELOOP_BROKER" in caplog.text


def test_settings_come_from_flags_env_and_the_shared_mqtt_login(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    password = tmp_path / "operator.password"
    password.write_text("s3cret\n")
    monkeypatch.setenv("EDGELOOP_MQTT_USER", "operator")
    monkeypatch.setenv("EDGELOOP_MQTT_PASSWORD_FILE", str(password))
    monkeypatch.setenv("EDGELOOP_PREFIX", "site/7")
    config = build_config(_parser().parse_args(["--broker", "hub:1884"]))
    assert isinstance(config, ConsoleConfig)
    assert (config.broker, config.prefix, config.serve) == ("hub:1884", "site/7", None)
    creds = config.credentials()
    assert (creds.username, creds.password) == ("operator", "s3cret")
    assert config.client_id.startswith("console-")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.broker
def test_serve_answers_a_browser_with_the_login_page(broker: Any, tmp_path: Path) -> None:
    port = _free_port()
    password = tmp_path / "console.password"
    password.write_text("s3cret-token\n")
    password.chmod(0o600)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "console",
            "--broker",
            broker.address,
            "--serve",
            str(port),
            "--serve-password-file",
            str(password),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
                    status, body = resp.status, resp.read().decode()
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                assert time.monotonic() < deadline, "textual-serve did not answer in 30 s"
                time.sleep(0.3)
        assert status == 200  # / sends a browser without a login to the login form
        assert "<html" in body.lower() and "edgeloop console" in body
        assert 'name="password"' in body
    finally:
        proc.terminate()
        proc.wait(10)
