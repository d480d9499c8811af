"""Board power while training, from NVIDIA's `tegrastats` (seed 002's practice).

`parse_power_mw` reads one tegrastats line; `PowerMeter` samples tegrastats in the background.
Where tegrastats does not exist, the report says so instead of inventing a figure.

>>> parse_power_mw("RAM 2341/7620MB CPU [2%@729] VDD_IN 4590mW/4321mW VDD_SOC 1400mW/1400mW")
4590
>>> parse_power_mw("RAM 1500/3964MB POM_5V_IN 2539/2539 POM_5V_GPU 0/0")
2539
>>> parse_power_mw("RAM 1500/3964MB") is None
True
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import time
from types import TracebackType
from typing import Any

from nodekit.lifecycle import Worker

__all__ = ["PowerMeter", "parse_power_mw"]

log = logging.getLogger(__name__)

_POWER = re.compile(r"\b(?:VDD_IN|POM_5V_IN)\s+(\d+)(?:mW)?/(\d+)")
_MAX_SAMPLES = 100_000


def parse_power_mw(line: str) -> int | None:
    """Instantaneous board input power in mW from a tegrastats line, or None if absent."""
    m = _POWER.search(line)
    return int(m.group(1)) if m else None


class PowerMeter(Worker):
    """Context manager that samples `tegrastats --interval N` and summarises power and energy.

    `summary()` gives {"available": True, "avg_power_w", "energy_j", "seconds", "samples"} or
    {"available": False, "reason": ...}.
    """

    def __init__(self, interval_ms: int = 200, binary: str | None = None) -> None:
        super().__init__("tegrastats")
        self.interval_ms = interval_ms
        self._binary = binary if binary is not None else shutil.which("tegrastats")
        self._proc: subprocess.Popen[str] | None = None
        self._samples: list[int] = []
        self._t0 = 0.0
        self._seconds = 0.0
        self._error: str | None = None

    def __enter__(self) -> PowerMeter:
        self._t0 = time.monotonic()
        if not self._binary:
            return self
        try:
            self._proc = subprocess.Popen(
                [self._binary, "--interval", str(self.interval_ms)],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        except OSError as exc:
            self._error = f"cannot start {self._binary}: {exc}"
            log.warning("%s", self._error)
            return self
        return self.start()

    def _run(self) -> None:
        proc = self._proc
        if proc is None or proc.stdout is None:
            return
        for line in proc.stdout:
            mw = parse_power_mw(line)
            if mw is not None and len(self._samples) < _MAX_SAMPLES:
                self._samples.append(mw)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._seconds = time.monotonic() - self._t0
        self.stop()

    def _wake(self) -> None:
        """End tegrastats: its stdout closes and the reading thread ends."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def summary(self) -> dict[str, Any]:
        if not self._binary:
            return {"available": False, "reason": "tegrastats not found"}
        if self._error:
            return {"available": False, "reason": self._error}
        if not self._samples:
            return {"available": False, "reason": "tegrastats printed no VDD_IN/POM_5V_IN power"}
        avg_w = sum(self._samples) / len(self._samples) / 1000.0
        return {
            "available": True,
            "source": "tegrastats",
            "avg_power_w": round(avg_w, 3),
            "energy_j": round(avg_w * self._seconds, 2),
            "seconds": round(self._seconds, 2),
            "samples": len(self._samples),
        }
