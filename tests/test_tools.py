"""scripts/tools.py: the cache of third-party products, with fake installers (no registry)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scripts import tools


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Node-RED's installer replaced by one that counts its runs and can be told to fail."""
    state: dict[str, Any] = {"runs": 0, "fail": False}

    def install(where: Path, step: Any) -> tuple[str, dict[str, str]]:
        state["runs"] += 1
        step.log.write_text("half done\n")
        if state["fail"]:
            raise tools.ToolError("node-red: `npm ci` failed (exit 1): registry unreachable")
        (where / "red.js").write_text("")
        return "4.1.8", {"red_js": str(where / "red.js")}

    monkeypatch.setitem(tools._INSTALLERS, "node-red", install)
    return state


def test_a_tool_not_in_the_cache_names_the_command_that_installs_it(tmp_path: Path) -> None:
    with pytest.raises(tools.ToolMissingError, match=r"python -m scripts.tools --only prometheus"):
        tools.installed("prometheus", tmp_path)


def test_a_tool_is_installed_once_and_then_found_in_the_cache(
    tmp_path: Path, fake: dict[str, Any]
) -> None:
    said: list[str] = []
    first = tools.install("node-red", tmp_path, said.append)
    again = tools.install("node-red", tmp_path, said.append)
    assert fake["runs"] == 1 and first == again
    assert first.version == "4.1.8" and first.path("red_js").exists()
    assert first.dir.name.startswith("node-red-4.1.8-")  # named for its version and lock
    assert json.loads((first.dir / tools.STAMP).read_text())["version"] == "4.1.8"
    assert said[0].startswith("tools: installing node-red") and "is installed" in said[-1]


def test_an_interrupted_install_is_removed_and_done_again(
    tmp_path: Path, fake: dict[str, Any]
) -> None:
    where = tools.TOOLS["node-red"](tmp_path)
    where.mkdir(parents=True)
    (where / "leftover").write_text("from a killed install")  # no stamp
    tools.install("node-red", tmp_path, lambda _: None)
    assert fake["runs"] == 1 and not (where / "leftover").exists()


def test_a_failed_install_leaves_no_tool_but_its_log_and_says_what_failed(
    tmp_path: Path, fake: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    fake["fail"] = True
    with pytest.raises(tools.ToolError, match="npm ci"):
        tools.install("node-red", tmp_path, lambda _: None)
    where = tools.TOOLS["node-red"](tmp_path)
    assert not where.exists()
    assert (tmp_path / f"{where.name}.log").read_text() == "half done\n"
    with pytest.raises(tools.ToolMissingError):
        tools.installed("node-red", tmp_path)


def test_main_exits_1_naming_the_failure(
    tmp_path: Path,
    fake: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("EDGELOOP_TOOLS_DIR", str(tmp_path))
    fake["fail"] = True
    assert tools.main(["--only", "node-red"]) == 1
    assert "registry unreachable" in capsys.readouterr().err
    fake["fail"] = False
    assert tools.main(["--only", "node-red"]) == 0
    assert tools.main(["--only", "node-red", "--where"]) == 0
    assert "node-red 4.1.8: " in capsys.readouterr().out


def test_home_assistant_runs_on_3_13_before_any_newer_python(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    found = {
        "/a/python3.14": tools.Python("/a/python3.14", (3, 14, 0)),
        "/b/python3.13": tools.Python("/b/python3.13", (3, 13, 1)),
        "/c/python3.11": tools.Python("/c/python3.11", (3, 11, 7)),
    }
    monkeypatch.setattr(tools, "_candidates", lambda: iter(found))
    monkeypatch.setattr(tools, "_probe", found.get)
    assert tools.find_python() == found["/b/python3.13"]
    del found["/b/python3.13"]
    assert tools.find_python() == found["/a/python3.14"]
    del found["/a/python3.14"]
    assert tools.find_python() is None
    assert "no Python ≥ 3.13" in tools.no_python_reason()


def test_the_cache_is_per_machine_and_can_be_moved(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGELOOP_TOOLS_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "/x/cache")
    assert tools.cache_root() == Path("/x/cache/edgeloop/tools")
    monkeypatch.setenv("EDGELOOP_TOOLS_DIR", "/y")
    assert tools.cache_root() == Path("/y")
