"""The sources' thread: one asyncio event loop, one task per OPC UA server or Modbus device.

Each task keeps its source connected: a session (opcua.py, modbus.py) runs until the node
stops; when it raises — the server refused, went away, timed out — the task counts it
(`source_disconnected`, the source's `connection_failures`), waits its back-off (0.5 s
doubling to 30 s, reset by a connection that worked) and connects again. Nothing a server
does ends the thread; an unexpected error in a session is also recorded as a fault.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from nodekit.guard import Faults
from nodekit.lifecycle import Worker
from protocol.errors import ConfigError
from protocol.signals import SignalMap
from protocol.sources import ModbusSource, OpcUaSource

from ._core import Backoff, SourceStats

__all__ = ["INSTALL", "SourceRunner", "check_libraries"]

log = logging.getLogger(__name__)
INSTALL = 'pip install -c constraints.txt -e ".[plant]"'
Sink = Callable[[str, int, float, float], object]  # machine, reading index, time s, value


class _Shell(Protocol):
    async def session(
        self, connected: Callable[[], None], stopping: Callable[[], bool]
    ) -> None: ...


def check_libraries(signals: SignalMap) -> None:
    """ConfigError naming the install command if a source's library is missing."""
    need: dict[str, tuple[str, type[OpcUaSource | ModbusSource]]] = {
        "asyncua": ("opcua", OpcUaSource),
        "pymodbus": ("modbus", ModbusSource),
    }
    for module, (section, kind) in need.items():
        used = any(isinstance(s, kind) for s in signals.sources)
        if used and not importlib.util.find_spec(module):
            raise ConfigError(
                f"the signals file has [[{section}]] sources but {module} is not installed; "
                f"install the plant extra: {INSTALL}"
            )


def _expected(exc: BaseException) -> bool:
    """A server's doing (refused, gone, timed out, protocol error), not a bug of ours."""
    if isinstance(exc, OSError | TimeoutError | EOFError):
        return True
    mod = type(exc).__module__
    return mod.startswith(("asyncua", "pymodbus"))


class SourceRunner(Worker):
    """Reads every `[[opcua]]` and `[[modbus]]` source of the signals files `feeds` — (file,
    sink) pairs, a file per machine type — each into its file's sink, on its file's grid."""

    def __init__(
        self,
        feeds: Sequence[tuple[SignalMap, Sink]],
        problem: Callable[[str, int], object],
        faults: Faults,
        *,
        clock: Callable[[], float] = time.time,
        backoff: tuple[float, float] = (0.5, 30.0),
    ) -> None:
        super().__init__("edge-sources")
        for signals, _ in feeds:
            check_libraries(signals)
        self.faults = faults
        self._problem = problem
        self._backoff = backoff
        self.stats: list[SourceStats] = []
        self._shells: list[_Shell] = []
        for signals, sink in feeds:
            interval = 1.0 / signals.sample_hz
            for k, src in enumerate(signals.sources):
                stats = SourceStats(src.name, src.kind, len(src.points))
                self.stats.append(stats)
                args = (signals.reading_indices(k), sink, problem, stats, interval, clock)
                if isinstance(src, OpcUaSource):
                    from .opcua import OpcUaShell

                    self._shells.append(OpcUaShell(src, *args))
                else:
                    from .modbus import ModbusShell

                    self._shells.append(ModbusShell(src, *args))

    def info(self) -> list[dict[str, Any]]:
        """Each source's state and counts (the node's status `detail.sources`)."""
        return [s.info() for s in self.stats]

    def _run(self) -> None:
        guard = self.faults.loop("edge-sources", self._stop)  # the thread's outermost frame
        while not self.stopping:
            with guard:
                asyncio.run(self._main())

    async def _main(self) -> None:
        tasks = [
            asyncio.create_task(self._keep(shell, stats), name=f"source {stats.name}")
            for shell, stats in zip(self._shells, self.stats, strict=True)
        ]
        try:
            while not self.stopping:
                await asyncio.sleep(0.1)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _keep(self, shell: _Shell, stats: SourceStats) -> None:
        backoff = Backoff(*self._backoff)

        def connected() -> None:
            stats.connected()
            backoff.reset()

        while not self.stopping:
            try:
                await shell.session(connected, lambda: self.stopping)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the task's outermost frame: counted, never fatal
                stats.failed(exc)
                self._problem("source_disconnected", 1)
                if not _expected(exc):
                    self.faults.record(f"source {stats.name}", exc)
                delay = backoff.next()
                log.warning(
                    "source %s: %s; reconnecting in %.1f s", stats.name, stats.last_error, delay
                )
                await asyncio.sleep(delay)
