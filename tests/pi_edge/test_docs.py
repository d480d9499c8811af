"""The README's settings table is the declared settings: every flag and variable is listed."""

from __future__ import annotations

from pathlib import Path

from nodekit.settings import env_names, flag_of, settings_of
from pi_edge.config import EdgeConfig

README = Path(__file__).resolve().parents[2] / "pi_edge" / "README.md"


def test_readme_lists_every_flag_and_environment_variable() -> None:
    text = README.read_text()
    missing = [var for var in env_names(EdgeConfig) if f"`{var}" not in text]
    for name, field in settings_of(EdgeConfig).items():
        if field.metadata["edgeloop"].cli and f"`{flag_of(EdgeConfig, name)}" not in text:
            missing.append(flag_of(EdgeConfig, name))
    assert not missing, f"pi_edge/README.md does not document {missing}"
