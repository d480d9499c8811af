"""The Modbus TCP shell: one connection to one device (unit id), its registers read on the
grid in as few requests as possible (pymodbus; imported only when a file has [[modbus]]).

Every poll reads the device's current values and feeds them to the assembler stamped with
the grid time of the poll. A Modbus exception response (an address the device does not have)
counts the block's points as bad and polling goes on; a timeout or a lost connection raises,
and the runner reconnects with back-off.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Any

from pymodbus.client import AsyncModbusTcpClient

from protocol.sources import ModbusSource

from ._core import Block, SourceStats, next_tick, plan_reads

__all__ = ["ModbusShell"]

log = logging.getLogger(__name__)
Sink = Callable[[str, int, float, float], object]  # machine, reading index, time s, value
_READ = {
    "holding": "read_holding_registers",
    "input": "read_input_registers",
    "coil": "read_coils",
    "discrete": "read_discrete_inputs",
}


class ModbusShell:
    """One `[[modbus]]` source: connect, poll its blocks on the grid, feed the values."""

    def __init__(
        self,
        source: ModbusSource,
        indices: range,
        sink: Sink,
        problem: Callable[[str, int], object],
        stats: SourceStats,
        interval_s: float,
        clock: Callable[[], float],
    ) -> None:
        self.source, self.sink, self.problem, self.stats = source, sink, problem, stats
        self.interval_s = source.poll_s or interval_s
        self.clock = clock
        self.blocks = plan_reads(list(zip(indices, source.registers, strict=True)))
        self._refusals_logged: set[tuple[str, int, int]] = set()

    async def session(self, connected: Callable[[], None], stopping: Callable[[], bool]) -> None:
        src = self.source
        client = AsyncModbusTcpClient(
            src.host, port=src.port, timeout=src.timeout_s, retries=0, reconnect_delay=0
        )
        try:
            if not await client.connect():
                raise ConnectionError(f"cannot connect to {src.host}:{src.port}")
            connected()
            log.info(
                "Modbus %s: connected, %d register(s) in %d read(s)",
                src.name,
                len(src.registers),
                len(self.blocks),
            )
            while not stopping():
                t = next_tick(self.clock(), self.interval_s)
                await asyncio.sleep(max(0.0, t - self.clock()))
                for block in self.blocks:
                    await self._poll(client, block, t)
        finally:
            client.close()

    async def _poll(self, client: Any, block: Block, t: float) -> None:
        read = getattr(client, _READ[block.table])
        # a timeout or lost connection raises (ModbusException, OSError): the session ends
        response = await read(block.address, count=block.count, device_id=self.source.unit)
        if response.isError():
            n = len(block.members)
            self.stats.counts["bad"] += n
            self.problem("source_bad_value", n)
            code = int(getattr(response, "exception_code", 0) or 0)
            key = (block.table, block.address, code)
            if key not in self._refusals_logged and len(self._refusals_logged) < 64:
                self._refusals_logged.add(key)
                log.warning(
                    "Modbus %s answered exception %d to reading %s %d..%d; check the addresses",
                    self.source.name,
                    code,
                    block.table,
                    block.address,
                    block.address + block.count - 1,
                )
            return
        words = response.bits if block.table in ("coil", "discrete") else response.registers
        bad = 0
        for index, reg, offset in block.members:
            part = words[offset : offset + reg.width]
            value = reg.value(part) if len(part) == reg.width else math.nan
            if not math.isfinite(value):
                bad += 1
                continue
            self.stats.counts["readings"] += 1
            self.sink(reg.point.machine, index, t, value)
        if bad:
            self.stats.counts["bad"] += bad
            self.problem("source_bad_value", bad)
