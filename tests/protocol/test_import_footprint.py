"""protocol is the wire contract and nothing else: it imports no plumbing, no role, and no
third-party package beyond numpy, the signature verifier and (for the Sparkplug B payload,
which the Sparkplug spec defines as a protobuf message) protobuf."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import protocol

HEAVY = ("tensorflow", "keras", "sklearn", "pandas", "paho", "prometheus_client")
ALLOWED_THIRD_PARTY = {
    "numpy",
    "cryptography",  # the Ed25519 verifier when the system's libcrypto cannot be used
    "_cffi_backend",  # cryptography's
    "google",  # protobuf: protocol.sparkplug.payload only (checked below)
}
OURS = {"protocol", "nodekit", "pi_edge", "jetson_trainer", "console", "sensor_sim", "scripts"}


def _contract_modules() -> list[str]:
    root = Path(protocol.__file__).parent
    return sorted(
        m.name
        for m in pkgutil.walk_packages([str(root)], prefix="protocol.")
        if "_pb2" not in m.name
    )


def _imported_by(modules: list[str]) -> dict[str, list[str]]:
    """Top-level packages in sys.modules after importing each module, in a fresh interpreter."""
    code = (
        "import importlib, json, sys\n"
        "base = set(sys.modules)\n"
        "out = {}\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "    out[name] = sorted({m.split('.')[0] for m in set(sys.modules) - base})\n"
        "print(json.dumps(out))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return dict(json.loads(run.stdout))


def test_the_contract_imports_no_plumbing_no_role_and_only_numpy_beyond_the_stdlib() -> None:
    modules = _contract_modules()
    assert "protocol.bundle" in modules and "protocol.sparkplug.payload" in modules
    stdlib = set(sys.stdlib_module_names) | {"__future__", "_distutils_hack"}
    for name in modules:
        seen = set(_imported_by([name])[name])
        ours = seen & OURS
        assert ours <= {"protocol"}, f"{name} imports {sorted(ours - {'protocol'})}"
        third = {m for m in seen - stdlib - OURS if not m.startswith("_")} - {"_cffi_backend"}
        assert third <= ALLOWED_THIRD_PARTY, f"{name} imports {sorted(third - ALLOWED_THIRD_PARTY)}"
        if "google" in third:
            assert name.startswith("protocol.sparkplug.payload"), f"{name} imports protobuf"


def test_importing_protocol_pulls_in_no_heavy_package() -> None:
    code = (
        "import sys, protocol, protocol.bundle, protocol.sparkplug\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_node_kit_imports_no_role() -> None:
    code = (
        "import importlib, pkgutil, sys, nodekit\n"
        "for m in pkgutil.walk_packages(nodekit.__path__, 'nodekit.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'pi_edge', 'jetson_trainer', 'console', 'sensor_sim', 'scripts'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
