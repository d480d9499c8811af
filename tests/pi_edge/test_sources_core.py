"""The plant sources' pure parts (read plans, held values, back-off, the grid) and the runner's
reconnect loop with a stand-in shell — no network, no server."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from nodekit.guard import Faults
from pi_edge.intake.sources import SourceRunner, check_libraries
from pi_edge.intake.sources._core import (
    MAX_REGISTERS,
    Held,
    SourceStats,
    next_tick,
    plan_reads,
)
from protocol import ConfigError
from protocol.signals import SignalMap, slot_of
from protocol.sources import ModbusRegister, Point

P = Point("m1", "temperature")


def _regs(*spec: tuple[str, int, str]) -> list[tuple[int, ModbusRegister]]:
    return [
        (i, ModbusRegister(table, address, dtype, "big", "big", P))
        for i, (table, address, dtype) in enumerate(spec)
    ]


def test_reads_join_touching_and_overlapping_registers_but_never_a_gap_or_another_table() -> None:
    blocks = plan_reads(
        _regs(
            ("holding", 4, "float32"),  # 4-5
            ("holding", 0, "float64"),  # 0-3: touches 4
            ("holding", 5, "uint16"),  # inside 4-5 (the low word of the float)
            ("holding", 7, "uint16"),  # after a gap at 6
            ("input", 6, "uint16"),  # another table
        )
    )
    got = [(b.table, b.address, b.count, [(i, off) for i, _, off in b.members]) for b in blocks]
    assert got == [
        ("holding", 0, 6, [(1, 0), (0, 4), (2, 5)]),
        ("holding", 7, 1, [(3, 0)]),
        ("input", 6, 1, [(4, 0)]),
    ]


def test_a_read_never_exceeds_125_registers() -> None:
    regs = _regs(*[("holding", a, "float32") for a in range(0, 300, 2)])
    blocks = plan_reads(regs)
    assert max(b.count for b in blocks) <= MAX_REGISTERS
    assert sum(len(b.members) for b in blocks) == 150
    assert [b.address for b in blocks] == [0, 124, 248]  # 62 floats fit in 124 registers


def test_a_held_value_is_given_until_bad_or_stale_and_cleared_on_disconnect() -> None:
    h = Held(stale_s=None)
    h.update(2.0, True, 0.0)
    assert h.sample(1e6) == 2.0  # OPC UA reports changes only: a steady value is held
    h.update(2.0, False, 1.0)
    assert h.sample(1.0) == "bad"
    h.update(float("nan"), True, 2.0)
    assert h.sample(2.0) == "bad"
    h.update(3.0, True, 3.0)
    assert h.sample(3.0) == 3.0
    h.clear()
    assert h.sample(3.0) == "none"


@pytest.mark.parametrize("hz", [1.0, 10.0, 20.0, 60.0])
def test_grid_ticks_land_each_on_its_own_slot(hz: float) -> None:
    now = 1_700_000_000.123
    slots = []
    for _ in range(200):
        now = next_tick(now + 0.0004, 1.0 / hz)  # a late wake-up each time
        slots.append(slot_of(now, hz))
    assert slots == list(range(slots[0], slots[0] + 200))


def test_stats_count_reconnects_and_keep_the_error_short() -> None:
    s = SourceStats("plc1", "opcua", 2)
    s.connected()
    s.failed(ConnectionError("x" * 1000 + "\x1b[2J"))
    s.connected()
    info = s.info()
    assert (info["connects"], info["reconnects"], info["connection_failures"]) == (2, 1, 1)
    assert info["last_error"].startswith("ConnectionError: xxx")
    s.failed("refused\x1b[2J")
    assert s.info()["last_error"] == "refused\\x1b[2J"  # escaped, not sent to a terminal
    assert len(info["last_error"]) == 200 and "\x1b" not in info["last_error"]


class _FlakyShell:
    """Fails as told, then feeds one reading a grid tick until stopped."""

    def __init__(self, failures: list[BaseException], sink: Callable[..., object]) -> None:
        self.failures = failures
        self.sink = sink
        self.sessions = 0

    async def session(self, connected: Callable[[], None], stopping: Callable[[], bool]) -> None:
        self.sessions += 1
        if self.failures:
            raise self.failures.pop(0)
        connected()
        while not stopping():
            self.sink("m1", 0, time.time(), 1.0)
            await asyncio.sleep(0.01)


def test_the_runner_reconnects_with_backoff_counts_failures_and_records_only_bugs() -> None:
    doc = {"modbus": [{"host": "127.0.0.1", "register": [
        {"machine": "m1", "channel": c, "address": i} for i, c in enumerate(
            ("temperature", "vibration", "pressure", "power"))]}]}  # fmt: skip
    signals = SignalMap.from_dict(doc)
    got: list[tuple[str, int, float, float]] = []
    problems: list[tuple[str, int]] = []
    faults = Faults(logging.getLogger("test.sources"))
    runner = SourceRunner(
        [(signals, lambda *a: got.append(a))],
        lambda k, n: problems.append((k, n)),
        faults,
        backoff=(0.01, 0.04),
    )
    shell = _FlakyShell(
        [ConnectionRefusedError("refused"), TimeoutError(), KeyError("a bug of ours")],
        lambda *a: got.append(a),
    )
    runner._shells = [shell]
    runner.start()
    try:
        deadline = time.monotonic() + 10
        while not got:
            assert time.monotonic() < deadline, runner.info()
            time.sleep(0.01)
    finally:
        runner.stop()
    (info,) = runner.info()
    assert (info["connects"], info["connection_failures"], info["state"]) == (1, 3, "connected")
    assert shell.sessions == 4
    assert problems == [("source_disconnected", 1)] * 3
    assert list(faults.counts()) == ["source modbus 127.0.0.1:502 unit 1:KeyError"]
    assert not runner.alive  # stopped: the thread ended


def test_a_file_with_sources_is_refused_at_start_without_the_library(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    doc = {"opcua": [{"url": "opc.tcp://plc1:4840", "node": [
        {"node_id": f"i={i}", "machine": "m1", "channel": c} for i, c in enumerate(
            ("temperature", "vibration", "pressure", "power"))]}]}  # fmt: skip
    signals = SignalMap.from_dict(doc)
    real = importlib.util.find_spec

    def find_spec(name: str, *a: Any) -> Any:
        return None if name == "asyncua" else real(name, *a)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ConfigError, match=r"asyncua is not installed.*\[plant\]"):
        check_libraries(signals)
