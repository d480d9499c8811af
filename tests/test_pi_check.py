"""scripts/pi_check.py's pure parts: the README blocks it runs and the armv7 pins.

The check itself (`make pi-check`) needs root, debootstrap and qemu and takes minutes; it is
not part of `make test`. These tests keep what it reads consistent between its runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scripts.pi_check import ARCHES, CheckError, readme_block

REPO = Path(__file__).resolve().parent.parent


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line.strip())
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


@pytest.mark.parametrize("arch", sorted(ARCHES))
def test_readme_has_the_block_pi_check_runs(arch: str) -> None:
    block = readme_block(arch)
    assert any(line.startswith("git clone REPO_URL ") for line in block)
    assert any("apt-get install" in line and "python3-venv" in line for line in block)
    assert any(".venv/bin/pip install" in line for line in block)


def test_armhf_block_installs_from_debian_and_wheels_only() -> None:
    block = "\n".join(readme_block("armhf"))
    for pkg in ("python3-numpy", "python3-cryptography"):
        assert pkg in block
    assert "--system-site-packages" in block
    assert "--only-binary=:all: -r constraints-armv7.txt" in block
    assert "--no-deps -e ." in block
    assert "constraints.txt" not in block.replace("constraints-armv7.txt", "")


def test_armv7_pins_match_constraints_where_both_pin() -> None:
    main = _pins(REPO / "constraints.txt")
    armv7 = _pins(REPO / "constraints-armv7.txt")
    assert "tflite-runtime" in armv7 and "numpy" not in armv7 and "ai-edge-litert" not in armv7
    differ = {k: (v, main[k]) for k, v in armv7.items() if k in main and main[k] != v}
    assert not differ, f"constraints-armv7.txt disagrees with constraints.txt: {differ}"


def test_a_missing_marker_is_refused(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n```sh\necho hi\n```\n")
    with pytest.raises(CheckError, match="pi-check: arm64"):
        readme_block("arm64", readme)
    readme.write_text("<!-- pi-check: arm64 -->\n```sh\necho hi\n")
    with pytest.raises(CheckError, match="never closes"):
        readme_block("arm64", readme)
