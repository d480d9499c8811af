"""protocol must stay importable on a Pi: no TensorFlow, scikit-learn, pandas or paho at import."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("tensorflow", "keras", "sklearn", "pandas", "paho", "prometheus_client")


def test_importing_protocol_pulls_in_no_heavy_package() -> None:
    code = (
        "import sys, protocol, protocol.mqtt, protocol.bundle\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
