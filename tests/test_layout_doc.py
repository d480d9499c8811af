"""The layout the README and the packages' docstrings describe is the tree on disk."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROLES = ("pi_edge", "jetson_trainer")


def _packages() -> list[str]:
    return sorted(
        p.parent.name
        for p in ROOT.glob("*/__init__.py")
        if p.parent.name not in {"tests", "scripts", "bench"}
    )


def _layout_rows() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    table = text[text.index("## Layout") :].split("\n## ", 1)[0]
    rows = {}
    for line in table.splitlines():
        m = re.match(r"\| `([^`]+)/` \| (.*)", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def test_the_readme_layout_table_names_every_package_and_every_wing() -> None:
    rows = _layout_rows()
    missing = [p for p in _packages() if p not in rows]
    assert not missing, f"README.md's layout table does not list {missing}"
    for role in ROLES:
        wings = sorted(p.parent.name for p in (ROOT / role).glob("*/__init__.py"))
        assert wings, role
        absent = [w for w in wings if f"`{w}/`" not in rows[role]]
        assert not absent, f"README.md's row for {role} does not name the wings {absent}"


def test_every_wing_docstring_lists_each_of_its_modules() -> None:
    for role in ROLES:
        for init in sorted((ROOT / role).glob("*/__init__.py")):
            doc = ast.get_docstring(ast.parse(init.read_text())) or ""
            modules = sorted(p.name for p in init.parent.glob("*.py") if not p.name.startswith("_"))
            absent = [m for m in modules if m not in doc]
            assert not absent, f"{init.relative_to(ROOT)} does not say what {absent} hold"


def test_pi_edge_readme_layout_table_lists_every_module() -> None:
    text = (ROOT / "pi_edge" / "README.md").read_text()
    table = text[text.index("## Layout") :]
    modules = sorted(
        p.relative_to(ROOT / "pi_edge").as_posix()
        for p in (ROOT / "pi_edge").rglob("*.py")
        if p.name != "__init__.py"
    )
    absent = [m for m in modules if f"`{m}`" not in table]
    assert not absent, f"pi_edge/README.md's layout table does not list {absent}"
