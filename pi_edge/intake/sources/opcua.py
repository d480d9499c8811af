"""The OPC UA shell: one session to one server, a subscription to its node ids, and the
latest value of each sampled on the grid (asyncua; imported only when a file has [[opcua]]).

OPC UA reports a variable when it changes, so a steady value sends nothing: the shell keeps
each node's latest value (`Held`) and feeds it to the assembler at every grid slot, as long as
its status is Good and (with `stale_s`) it changed recently. `session()` returns only when the
node stops; a lost or refused server raises, and the runner reconnects with back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.uaerrors import UaError

from protocol.sources import OpcUaSource

from ._core import Held, SourceStats, next_tick

__all__ = ["OpcUaShell"]

log = logging.getLogger(__name__)
Sink = Callable[[str, int, float, float], object]  # machine, reading index, time s, value


class _Handler:
    """asyncua's subscription handler: called on the sources' event loop, cheap."""

    def __init__(self, held: dict[Any, Held], clock: Callable[[], float]) -> None:
        self.held = held
        self.clock = clock

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        held = self.held.get(node.nodeid)
        if held is None:
            return
        dv = data.monitored_item.Value
        status = getattr(dv, "StatusCode", None)
        good = status is None or status.is_good()
        number = float(val) if type(val) in (int, float, bool) else None
        held.update(number, good, self.clock())

    def status_change_notification(self, status: Any) -> None:
        log.info("OPC UA subscription status change: %s", status)


class OpcUaShell:
    """One `[[opcua]]` source: connect, subscribe, feed the held values on the grid."""

    def __init__(
        self,
        source: OpcUaSource,
        indices: range,
        sink: Sink,
        problem: Callable[[str, int], object],
        stats: SourceStats,
        interval_s: float,
        clock: Callable[[], float],
    ) -> None:
        self.source, self.indices, self.sink, self.problem = source, indices, sink, problem
        self.stats, self.interval_s, self.clock = stats, interval_s, clock

    async def session(self, connected: Callable[[], None], stopping: Callable[[], bool]) -> None:
        src = self.source
        client = Client(src.url, timeout=src.timeout_s, watchdog_intervall=max(1.0, src.timeout_s))
        held = [Held(src.stale_s) for _ in src.nodes]
        try:
            await client.connect()
            nodes = [client.get_node(n.node_id) for n in src.nodes]
            handler = _Handler({n.nodeid: h for n, h in zip(nodes, held, strict=True)}, self.clock)
            sampling_ms = 1000.0 * (src.sampling_s or self.interval_s)
            sub = await client.create_subscription(max(sampling_ms, 10.0), handler)
            results = await sub.subscribe_data_change(
                nodes,
                sampling_interval=ua.Double(sampling_ms),
            )
            refused = [
                (n.node_id, r)
                for n, r in zip(src.nodes, results, strict=True)
                if isinstance(r, ua.StatusCode)
            ]
            if refused:
                self.problem("source_bad_point", len(refused))
                log.warning(
                    "OPC UA %s refused node(s) %s; the others are read",
                    src.name,
                    ", ".join(
                        f"{nid[:80]!r} ({r.name if hasattr(r, 'name') else r})"
                        for nid, r in refused
                    ),
                )
            connected()
            log.info("OPC UA %s: connected to %s, %d node(s)", src.name, src.url, len(nodes))
            while not stopping():
                t = next_tick(self.clock(), self.interval_s)
                await asyncio.sleep(max(0.0, t - self.clock()))
                await client.check_connection()  # ConnectionError once the server is gone
                self._feed(held, t)
        finally:
            for h in held:
                h.clear()
            # the server may be gone already: nothing to close politely then
            with contextlib.suppress(TimeoutError, OSError, UaError, ConnectionError):
                await asyncio.wait_for(client.disconnect(), src.timeout_s)

    def _feed(self, held: list[Held], t: float) -> None:
        bad = stale = 0
        for node, index, h in zip(self.source.nodes, self.indices, held, strict=True):
            value = h.sample(t)
            if isinstance(value, str):
                bad += value == "bad"
                stale += value == "stale"
                continue
            scaled = node.point.scaled(value)
            if not math.isfinite(scaled):
                bad += 1
                continue
            self.stats.counts["readings"] += 1
            self.sink(node.point.machine, index, t, scaled)
        if bad:
            self.stats.counts["bad"] += bad
            self.problem("source_bad_value", bad)
        if stale:
            self.stats.counts["stale"] += stale
            self.problem("source_stale", stale)
