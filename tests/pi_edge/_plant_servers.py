"""Servers nobody here wrote, for the source tests: node-opcua's OPC UA server and
modbus-serial's Modbus TCP server (tests/tools/plant, installed by `make system-deps`), each
run by a small script that takes commands on stdin."""

from __future__ import annotations

import json
import queue
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

TOOL = Path(__file__).resolve().parents[1] / "tools" / "plant"
INSTALL = "npm ci --prefix tests/tools/plant (or make system-deps)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def check_installed() -> str:
    """The node executable; fails (never skips) with the install command if anything is missing."""
    exe = shutil.which("node")
    assert exe, "node missing: sudo apt-get install -y nodejs npm (or make system-deps)"
    for package in ("node-opcua-server", "modbus-serial"):
        assert (TOOL / "node_modules" / package).is_dir(), (
            f"the plant test servers are not installed: {INSTALL}"
        )
    return exe


class PlantServer:
    """One server process (`opcua_server.js` or `modbus_server.js`) on a fixed port: started,
    driven line by line, killed (SIGKILL: the server vanishes) and started again."""

    def __init__(self, script: str, port: int, *args: str) -> None:
        self.exe = check_installed()
        self.script, self.port, self.args = script, port, args
        self.proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str] = queue.Queue()

    def start(self, timeout: float = 30.0) -> PlantServer:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self._lines = queue.Queue()
        self.proc = subprocess.Popen(
            [self.exe, str(TOOL / self.script), str(self.port), *self.args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=TOOL,
        )
        lines, out = self._lines, self.proc.stdout
        assert out is not None

        def pump() -> None:
            for line in out:
                lines.put(line.rstrip("\n"))

        threading.Thread(target=pump, name=f"{self.script}-stdout", daemon=True).start()
        self._expect(lambda line: line == f"ready {self.port}", timeout)
        return self

    def _expect(self, pred: Any, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"{self.script} said {seen[-5:]} but not what was expected"
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if pred(line):
                return line
            seen.append(line)

    def send(self, **command: Any) -> None:
        """One command (see the script's header); waits for its "ok"."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        line = self._expect(lambda s: s == "ok" or s.startswith("error:"), 10.0)
        assert line == "ok", f"{self.script} refused {command}: {line}"

    def kill(self) -> None:
        """The server vanishes at once (SIGKILL): no goodbye on its connections."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        self.kill()
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()
