"""deploy/systemd: every unit starts a command that exists with flags it takes, sets only
variables its role reads, and passes `systemd-analyze verify`."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jetson_trainer.config import ServeConfig
from nodekit.settings import env_names
from pi_edge.config import EdgeConfig

REPO = Path(__file__).resolve().parent.parent
UNITS = REPO / "deploy" / "systemd"
INSTALL = "/opt/edgeloop"  # where the units expect the checkout and its .venv
ROLES = {  # unit → (module, the settings class its variables belong to, example env file)
    "edgeloop-edge.service": ("pi_edge", EdgeConfig, "edge.env.example"),
    "edgeloop-trainer.service": ("jetson_trainer", ServeConfig, "trainer.env.example"),
}


def entries(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) of a unit file, in order; keys may repeat."""
    out, section = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def test_every_unit_is_checked() -> None:
    assert sorted(p.name for p in UNITS.glob("*.service")) == sorted(ROLES)
    assert (UNITS / "mosquitto.service.d" / "edgeloop.conf").is_file()


@pytest.mark.parametrize("unit", sorted(ROLES))
def test_exec_start_runs_a_real_command_with_flags_it_takes(unit: str) -> None:
    module, _, _ = ROLES[unit]
    (command,) = [v for s, k, v in entries(UNITS / unit) if k == "ExecStart" and v]
    argv = shlex.split(command)
    assert argv[0] == f"{INSTALL}/.venv/bin/python" and argv[1:3] == ["-m", module]
    subcommand = argv[3]
    flags = [a for a in argv[4:] if a.startswith("--")]
    assert flags, command
    done = subprocess.run(
        [sys.executable, "-m", module, subcommand, "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for flag in flags:
        assert re.search(rf"(^|\s){re.escape(flag)}\b", done.stdout), (unit, flag)


@pytest.mark.parametrize("unit", sorted(ROLES))
def test_units_and_their_env_files_set_only_variables_the_role_reads(unit: str) -> None:
    _, settings, example = ROLES[unit]
    known = set(env_names(settings))
    names = [v.split("=", 1)[0] for s, k, v in entries(UNITS / unit) if k == "Environment"]
    names += [
        line.split("=", 1)[0]
        for line in (UNITS / example).read_text().splitlines()
        if line and not line.startswith("#")
    ]
    ours = [n for n in names if n.startswith("EDGELOOP_")]
    assert ours and set(ours) <= known, set(ours) - known
    keys = {k for _, k, _ in entries(UNITS / unit)}
    for required in ("Restart", "StateDirectory", "EnvironmentFile", "LoadCredential"):
        assert required in keys, (unit, required)
    for hardening in ("NoNewPrivileges", "ProtectSystem"):
        assert hardening in keys, (unit, hardening)
    password = [v for s, k, v in entries(UNITS / unit) if k == "Environment"]
    assert "EDGELOOP_MQTT_PASSWORD_FILE=%d/mqtt-password" in password  # never in a plain file
    assert "PASSWORD" not in (UNITS / example).read_text().replace("password", "")


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed here (apt-get install systemd)")
    for unit in ROLES:  # the units as installed, pointing at this checkout instead of /opt
        text = (UNITS / unit).read_text().replace(INSTALL, str(REPO))
        (tmp_path / unit).write_text(text)
    stock = Path("/lib/systemd/system/mosquitto.service")
    units = [str(tmp_path / u) for u in ROLES]
    if stock.is_file():  # Debian's unit with our drop-in beside it
        shutil.copy(stock, tmp_path / stock.name)
        (tmp_path / "mosquitto.service.d").mkdir()
        shutil.copy(
            UNITS / "mosquitto.service.d" / "edgeloop.conf", tmp_path / "mosquitto.service.d"
        )
        units.append(str(tmp_path / stock.name))
    done = subprocess.run(
        [tool, "verify", *units], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
