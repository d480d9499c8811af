"""The third-party products the integration tests run, installed once per machine and cached.

    python -m scripts.tools                        # install what is missing (`make setup` runs it)
    python -m scripts.tools --only prometheus      # one tool (comma-separated names)
    python -m scripts.tools --where                # where each one is; installs nothing

- home-assistant 2025.4.4, from PyPI: its own venv on a Python ≥ 3.13 found on this machine,
  pip with the wheel's `package_constraints.txt` and tests/tools/home-assistant/constraints.txt;
- prometheus, Debian's 2.42, from the apt mirror: `apt-get download` + `dpkg-deb -x` give
  `prometheus` and `promtool`, no daemon, nothing outside the cache (without apt: the system's);
- node-red 4.1.8, from npm: `npm ci` from tests/tools/node-red/package-lock.json;
- real-data: the wheel of aeon 1.6.0 from PyPI (`pip download --no-deps`, hash-checked), for
  the real recorded data sets it ships (BasicMotions: tests/realdata.py reads it out of the
  zip; aeon itself is never installed or imported).

Everything goes under `${XDG_CACHE_HOME:-~/.cache}/edgeloop/tools/` (`EDGELOOP_TOOLS_DIR`
overrides), shared by every clone on the machine: a second `make test` finds it there. A tool's
directory is named for its version and a digest of its lock file, so clones with other locks
never share one; `installed.json`, written last, marks it complete (an interrupted install is
removed and done again); a lock file serialises two clones installing at once. Without a
Python ≥ 3.13 Home Assistant is left out with a message (its tests skip, saying why); any
other failure names the command that failed and exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "HA_VERSION",
    "NODE_RED_VERSION",
    "PROMETHEUS_SERIES",
    "TOOLS",
    "Installed",
    "ToolError",
    "ToolMissingError",
    "cache_root",
    "find_python",
    "install",
    "installed",
    "main",
]

REPO = Path(__file__).resolve().parent.parent
HA_VERSION = "2025.4.4"
HA_PYTHON = (3, 13)  # every Home Assistant since 2025.2 needs Python ≥ 3.13
HA_PACKAGES = (  # the frontend is not optional: without it HA starts in recovery mode
    f"homeassistant=={HA_VERSION}",
    "home-assistant-frontend==20250411.0",
    "paho-mqtt==2.1.0",  # the MQTT integration's requirement
    "pyotp==2.8.0",  # auth's requirements, which HA would pip-install at its first start
    "PyQRCode==1.2.1",
)
HA_LOCK = REPO / "tests" / "tools" / "home-assistant" / "constraints.txt"
PROMETHEUS_SERIES = "2.42."  # Debian bookworm's
NODE_RED_VERSION = "4.1.8"
NODE_RED_LOCK = REPO / "tests" / "tools" / "node-red" / "package-lock.json"
NODE_MAJOR = 18  # Node-RED 4 needs Node ≥ 18.5
AEON_VERSION = "1.6.0"
AEON_WHEEL_SHA256 = "d05227086706f80111ac5fee8de4d5d3115bb3bcfd1c786c8629393055816409"
STAMP = "installed.json"
INSTALL_CMD = "python -m scripts.tools"  # also run by `make setup` and `make test`


class ToolError(RuntimeError):
    """A tool could not be installed; the message names the command that failed."""


class ToolMissingError(ToolError):
    """A tool is not in the cache; the message says how to install it."""


@dataclass(frozen=True, slots=True)
class Installed:
    """One installed tool: its version, directory and the executables the tests run."""

    name: str
    version: str
    dir: Path
    paths: dict[str, str]
    seconds: float  # how long the install took

    def path(self, key: str) -> Path:
        return Path(self.paths[key])


@dataclass(frozen=True, slots=True)
class Python:
    """An interpreter found on this machine."""

    executable: str
    version: tuple[int, int, int]


def cache_root() -> Path:
    """Where tools live: $EDGELOOP_TOOLS_DIR, else ${XDG_CACHE_HOME:-~/.cache}/edgeloop/tools."""
    explicit = os.environ.get("EDGELOOP_TOOLS_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "edgeloop" / "tools"


def _digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()[:10]


def _ha_dir(root: Path) -> Path:
    return root / f"home-assistant-{HA_VERSION}-{_digest(HA_LOCK)}"


def _node_red_dir(root: Path) -> Path:
    return root / f"node-red-{NODE_RED_VERSION}-{_digest(NODE_RED_LOCK)}"


def _prometheus_dir(root: Path) -> Path:
    return root / "prometheus-2.42"


def _real_data_dir(root: Path) -> Path:
    return root / f"real-data-aeon-{AEON_VERSION}"


TOOLS: dict[str, Callable[[Path], Path]] = {
    "home-assistant": _ha_dir,
    "prometheus": _prometheus_dir,
    "node-red": _node_red_dir,
    "real-data": _real_data_dir,
}


def installed(name: str, root: Path | None = None) -> Installed:
    """The installed tool `name`, or ToolMissingError saying which command installs it."""
    if name not in TOOLS:
        raise ValueError(f"unknown tool {name!r}; one of {', '.join(TOOLS)}")
    where = TOOLS[name](root or cache_root())
    try:
        stamp = json.loads((where / STAMP).read_text())
        return Installed(
            name, stamp["version"], where, dict(stamp["paths"]), float(stamp["seconds"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        raise ToolMissingError(
            f"{name} is not installed in {where}; install it with `{INSTALL_CMD} --only {name}` "
            "(or `make setup`)"
        ) from None


# ---------------------------------------------------------------------- interpreters
_PROBE = "import sys, venv, ensurepip; print(sys.executable); print(*sys.version_info[:3])"


def _probe(candidate: str) -> Python | None:
    try:
        out = subprocess.run(
            [candidate, "-c", _PROBE], capture_output=True, text=True, timeout=30, check=True
        ).stdout.split("\n")
        major, minor, micro = (int(v) for v in out[1].split())
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
    return Python(out[0], (major, minor, micro))


def _candidates() -> Iterator[str]:
    explicit = os.environ.get("EDGELOOP_HA_PYTHON")
    if explicit:
        yield explicit
    for minor in range(13, 20):
        found = shutil.which(f"python3.{minor}")
        if found:
            yield found
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    yield from (str(p) for p in sorted(pyenv.glob("3.*/bin/python3")))
    yield from (str(p) for p in sorted(Path("/usr/local/bin").glob("python3.1[3-9]")))
    yield from (str(p) for p in sorted(Path("/usr/bin").glob("python3.1[3-9]")))
    found = shutil.which("python3")
    if found:
        yield found


def find_python(minimum: tuple[int, int] = HA_PYTHON) -> Python | None:
    """The interpreter for Home Assistant: `minimum` exactly if there is one (the lock is made
    for it), else the lowest newer one; None when the machine has none ≥ `minimum`."""
    seen: dict[str, Python] = {}
    for candidate in _candidates():
        py = _probe(candidate)
        if py is not None and py.version[:2] >= minimum:
            seen.setdefault(py.executable, py)
    if not seen:
        return None
    return min(seen.values(), key=lambda p: (p.version[:2] != minimum, p.version))


def no_python_reason(minimum: tuple[int, int] = HA_PYTHON) -> str:
    want = ".".join(map(str, minimum))
    return (
        f"no Python ≥ {want} on this machine (looked for python3.13+ on PATH, pyenv's versions, "
        f"/usr/local/bin and /usr/bin; EDGELOOP_HA_PYTHON names one): Home Assistant "
        f"{HA_VERSION} needs it. Install one (`pyenv install 3.13`, or your distribution's "
        f"python3.13 with venv) and run `{INSTALL_CMD} --only home-assistant`"
    )


# ---------------------------------------------------------------------- running commands
class _Step:
    """Runs the commands of one install, logging their output to the tool's log file."""

    def __init__(self, name: str, log: Path, say: Callable[[str], None]) -> None:
        self.name = name
        self.log = log
        self.say = say

    def run(self, cmd: Sequence[str], what: str, *, cwd: Path | None = None, hint: str = "") -> str:
        t0 = time.monotonic()
        self.say(f"  {self.name}: {what}: {' '.join(cmd)}")
        try:
            done = subprocess.run(
                list(cmd),
                cwd=cwd,
                capture_output=True,
                text=True,
                check=False,
                env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
            )
        except OSError as exc:
            raise ToolError(f"{self.name}: cannot run {cmd[0]}: {exc}") from None
        with self.log.open("a") as f:
            f.write(f"$ {' '.join(cmd)}\n{done.stdout}{done.stderr}\n")
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
            raise ToolError(
                f"{self.name}: `{' '.join(cmd)}` failed (exit {done.returncode}):\n{tail}\n"
                f"{hint or 'If a registry is unreachable, fix the network or proxy'}; then run "
                f"`{INSTALL_CMD} --only {self.name}` again (log: {self.log})"
            )
        self.say(f"  {self.name}: {what}: done in {time.monotonic() - t0:.1f} s")
        return done.stdout


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # another clone installing the same tool: wait for it
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _write_stamp(where: Path, version: str, paths: dict[str, str], seconds: float) -> None:
    stamp = {"version": version, "paths": paths, "seconds": round(seconds, 1)}
    tmp = where / f".{STAMP}.tmp"
    tmp.write_text(json.dumps(stamp, indent=1) + "\n")
    tmp.replace(where / STAMP)


# ---------------------------------------------------------------------- the tools
_PYPI_HINT = "If PyPI is unreachable, fix the network or pip's proxy (PIP_INDEX_URL, HTTPS_PROXY)"


def _install_ha(where: Path, step: _Step) -> tuple[str, dict[str, str]]:
    py = find_python()
    if py is None:
        raise ToolMissingError(no_python_reason())
    step.say(f"  home-assistant: Python {'.'.join(map(str, py.version))} at {py.executable}")
    venv = where / "venv"
    step.run([py.executable, "-m", "venv", str(venv)], "venv")
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    wheels = where / "wheel"
    step.run(
        [
            *pip,
            "download",
            "-q",
            "--no-deps",
            "--only-binary=:all:",
            "-d",
            str(wheels),
            HA_PACKAGES[0],
        ],
        "download the homeassistant wheel",
        hint=_PYPI_HINT,
    )
    wheel = next(wheels.glob(f"homeassistant-{HA_VERSION}-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        pinned = z.read("homeassistant/package_constraints.txt")
    (where / "package_constraints.txt").write_bytes(pinned)
    step.run(
        [
            *pip,
            "install",
            "-q",
            "-c",
            str(where / "package_constraints.txt"),
            "-c",
            str(HA_LOCK),
            str(wheel),
            *HA_PACKAGES[1:],
        ],
        "install (builds a few C extensions: minutes)",
        hint=_PYPI_HINT,
    )
    hass = venv / "bin" / "hass"
    version = step.run([str(hass), "--version"], "check").strip()
    if version != HA_VERSION:
        raise ToolError(f"home-assistant: {hass} --version says {version!r}, not {HA_VERSION}")
    return version, {"hass": str(hass), "python": str(venv / "bin" / "python")}


def _debian_prometheus() -> str | None:
    """The 2.42 version apt knows of (None: no apt, or not known to it)."""
    if shutil.which("apt-cache") is None:
        return None
    out = subprocess.run(
        ["apt-cache", "madison", "prometheus"], capture_output=True, text=True, check=False
    ).stdout
    versions = [ln.split("|")[1].strip() for ln in out.splitlines() if ln.count("|") >= 2]
    return next((v for v in versions if v.startswith(PROMETHEUS_SERIES)), None)


def _system_prometheus() -> tuple[str, dict[str, str]] | None:
    prom, tool = shutil.which("prometheus"), shutil.which("promtool")
    if not (prom and tool):
        return None
    out = subprocess.run([prom, "--version"], capture_output=True, text=True, check=False)
    m = re.search(r"version (\S+)", out.stdout + out.stderr)
    return (m.group(1) if m else "unknown"), {"prometheus": prom, "promtool": tool}


def _install_prometheus(where: Path, step: _Step) -> tuple[str, dict[str, str]]:
    version = _debian_prometheus()
    if version is None and shutil.which("apt-get") and os.geteuid() == 0:
        step.run(["apt-get", "update", "-qq"], "apt knows no prometheus 2.42 yet")
        version = _debian_prometheus()
    if version is None:
        system = _system_prometheus()
        if system is None:
            raise ToolError(
                f"prometheus: apt knows no `prometheus` {PROMETHEUS_SERIES}x and none is on PATH. "
                "On Debian 12: `sudo apt-get update`, then "
                f"`{INSTALL_CMD} --only prometheus`; elsewhere put Prometheus 2.x's `prometheus` "
                "and `promtool` on PATH"
            )
        step.say(f"  prometheus: no apt here; using the system's {system[1]['prometheus']}")
        return system
    with tempfile.TemporaryDirectory(prefix="edgeloop-prometheus-") as tmp:
        step.run(
            ["apt-get", "download", f"prometheus={version}"],
            "download Debian's package",
            cwd=Path(tmp),
            hint="If the Debian mirror is unreachable, fix the network or apt's proxy",
        )
        deb = next(Path(tmp).glob("prometheus_*.deb"))
        step.run(["dpkg-deb", "-x", str(deb), str(where / "root")], "unpack (no daemon)")
    paths = {k: str(where / "root" / "usr" / "bin" / k) for k in ("prometheus", "promtool")}
    step.run([paths["promtool"], "--version"], "check")
    return version, paths


def _install_node_red(where: Path, step: _Step) -> tuple[str, dict[str, str]]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not (node and npm):
        raise ToolError("node-red: node and npm are needed: sudo apt-get install -y nodejs npm")
    major = step.run([node, "--version"], "node version").strip().lstrip("v").split(".")[0]
    if not major.isdigit() or int(major) < NODE_MAJOR:
        raise ToolError(f"node-red: Node-RED {NODE_RED_VERSION} needs Node ≥ {NODE_MAJOR}")
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(NODE_RED_LOCK.parent / name, where / name)
    step.run(
        [npm, "ci", "--omit=dev", "--no-audit", "--no-fund", "--prefix", str(where)],
        "npm ci",
        hint="If the npm registry is unreachable, fix the network or npm's proxy",
    )
    red = where / "node_modules" / "node-red" / "red.js"
    meta = json.loads((red.parent / "package.json").read_text())
    if meta.get("version") != NODE_RED_VERSION:
        raise ToolError(f"node-red: installed {meta.get('version')}, not {NODE_RED_VERSION}")
    return NODE_RED_VERSION, {"red_js": str(red), "node": node}


def _install_real_data(where: Path, step: _Step) -> tuple[str, dict[str, str]]:
    pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q"]
    step.run(
        [*pip, "-d", str(where), f"aeon=={AEON_VERSION}"],
        "pip download (the wheel only)",
        hint=_PYPI_HINT,
    )
    wheel = next(where.glob(f"aeon-{AEON_VERSION}-*.whl"))
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != AEON_WHEEL_SHA256:
        raise ToolError(f"real-data: {wheel.name} has sha256 {digest}, not {AEON_WHEEL_SHA256}")
    with zipfile.ZipFile(wheel) as z:
        z.getinfo("aeon/datasets/data/BasicMotions/BasicMotions_TRAIN.ts")  # KeyError if absent
    return AEON_VERSION, {"wheel": str(wheel)}


_INSTALLERS: dict[str, Callable[[Path, _Step], tuple[str, dict[str, str]]]] = {
    "home-assistant": _install_ha,
    "prometheus": _install_prometheus,
    "node-red": _install_node_red,
    "real-data": _install_real_data,
}


def install(name: str, root: Path | None = None, say: Callable[[str], None] = print) -> Installed:
    """Install `name` into the cache unless it is there; the result, or ToolError."""
    root = root or cache_root()
    where = TOOLS[name](root)
    with _locked(root / f".{where.name}.lock"):
        with contextlib.suppress(ToolMissingError):
            found = installed(name, root)
            say(f"tools: {name} {found.version} is installed ({where})")
            return found
        if where.exists():  # an interrupted install: start again
            shutil.rmtree(where)
        where.mkdir(parents=True)
        say(f"tools: installing {name} into {where}")
        t0 = time.monotonic()
        log = root / f"{where.name}.log"  # beside the tool: kept when a failed install is removed
        log.write_text("")
        try:
            version, paths = _INSTALLERS[name](where, _Step(name, log, say))
        except BaseException:
            shutil.rmtree(where, ignore_errors=True)
            raise
        seconds = time.monotonic() - t0
        _write_stamp(where, version, paths, seconds)
        say(f"tools: {name} {version} installed in {seconds:.0f} s")
        return installed(name, root)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.tools", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--only", help=f"comma-separated tools (default all: {', '.join(TOOLS)})")
    parser.add_argument("--where", action="store_true", help="where each tool is; installs none")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(TOOLS)
    unknown = [n for n in names if n not in TOOLS]
    if unknown:
        parser.error(f"unknown tool(s) {', '.join(unknown)}; choose from {', '.join(TOOLS)}")
    if args.where:
        for name in names:
            try:
                found = installed(name)
                print(f"{name} {found.version}: {found.dir}")
            except ToolMissingError as exc:
                print(exc)
        return 0
    failed = 0
    for name in names:
        try:
            install(name)
        except ToolMissingError as exc:  # only: no Python ≥ 3.13 for Home Assistant
            print(f"tools: left out {name}: {exc}", file=sys.stderr)
        except ToolError as exc:
            print(f"tools: {exc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
