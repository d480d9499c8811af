"""This process's CPU share and resident memory, for status metrics (`cpu_percent`, `rss_mb`).

Linux only in full: the RSS is read from `/proc/self/statm` (the current resident set; the
peak from `resource.getrusage` where /proc is missing). CPU is user + system time from
`resource.getrusage`, as a share of one core between two calls, so a status that is published
every few seconds shows the CPU of its last interval. Standard library only.

>>> cpu_percent(CpuSample(wall_s=10.0, cpu_s=1.0), CpuSample(wall_s=12.0, cpu_s=1.5))
25.0
>>> cpu_percent(CpuSample(10.0, 1.0), CpuSample(10.0, 1.0)) is None
True
"""

from __future__ import annotations

import os
import resource
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CpuSample", "ProcSampler", "cpu_percent", "limit_malloc_arenas", "rss_mb"]

_STATM = Path("/proc/self/statm")
_MIN_INTERVAL_S = 0.05  # shorter intervals give noise, not a rate


_M_ARENA_MAX = -8  # glibc's mallopt parameter


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas at `arenas` for threads started from now on (call it before
    they start); True if it took. glibc gives each thread that allocates its own arena, up to 8
    per core, and every arena keeps its own free pages: pi_edge's eight threads held ~0.8 MB
    more resident memory at the demo's load than with one arena (bench/demo_load.py, one box).
    A `MALLOC_ARENA_MAX` in the environment wins; not glibc (musl, macOS): nothing to do."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False
        import ctypes

        return bool(ctypes.CDLL(None).mallopt(_M_ARENA_MAX, arenas))
    except (OSError, ValueError, AttributeError):  # not glibc, or no mallopt
        return False


@dataclass(frozen=True, slots=True)
class CpuSample:
    """Wall-clock time and the process's CPU time (user + system), both in seconds."""

    wall_s: float
    cpu_s: float


def cpu_percent(prev: CpuSample, cur: CpuSample) -> float | None:
    """CPU used between two samples as % of one core (200 = two cores busy); None if too close."""
    dt = cur.wall_s - prev.wall_s
    if dt < _MIN_INTERVAL_S:
        return None
    return round(max(0.0, cur.cpu_s - prev.cpu_s) / dt * 100.0, 1)


def _cpu_now() -> CpuSample:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return CpuSample(time.monotonic(), ru.ru_utime + ru.ru_stime)


def rss_mb() -> float:
    """Resident memory now, in MiB (peak RSS where /proc/self/statm cannot be read)."""
    try:
        resident_pages = int(_STATM.read_text().split()[1])
        return round(resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


class ProcSampler:
    """`metrics()` → {"cpu_percent", "rss_mb"}; CPU over the time since the previous call.

    The first call reports the CPU since the sampler was made. Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._prev = _cpu_now()
        self._last_percent = 0.0

    def metrics(self) -> dict[str, float]:
        cur = _cpu_now()
        with self._lock:
            percent = cpu_percent(self._prev, cur)
            if percent is None:  # called again at once (status + /metrics): repeat the last
                percent = self._last_percent
            else:
                self._prev, self._last_percent = cur, percent
        return {"cpu_percent": percent, "rss_mb": rss_mb()}
