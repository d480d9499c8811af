"""The products of the tools cache (scripts/tools.py), for any test that runs one."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from scripts import tools

__all__ = ["need", "promtool_check_metrics"]


def need(name: str) -> tools.Installed:
    """The installed tool `name`, or a failure that says how to install it. Never a skip, but
    for Home Assistant on a machine with no Python ≥ 3.13 (the only place it cannot run)."""
    try:
        return tools.installed(name)
    except tools.ToolMissingError as exc:
        if name == "home-assistant" and tools.find_python() is None:
            pytest.skip(tools.no_python_reason())
        pytest.fail(str(exc))


def promtool_check_metrics(exposition: str) -> None:
    """`promtool check metrics` (Debian's Prometheus 2.42) accepts `exposition`, or a failure."""
    exe: Path = need("prometheus").path("promtool")
    out = subprocess.run(
        [str(exe), "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, f"promtool check metrics:\n{out.stdout}{out.stderr}"
