"""The operator console under a full site: how long one screen refresh takes with 100 machines
whose predictions all change between refreshes.

    python -m bench.console_refresh [--machines 100] [--rounds 8] [--json PATH]

A private Mosquitto, a real `console.mqtt.ConsoleLink` and the Textual app under its pilot (no
terminal): each round publishes one new prediction per machine (QoS 1), lets the link decode
them, then times `ConsoleApp.refresh_site()` — what the app runs every `REFRESH_S` (0.5 s). The
target: the worst refresh after the first (which adds every row) takes under half of
`REFRESH_S`, so the screen keeps up at 2 Hz with time to spare for keys. This was a timed test
(tests/console/test_app.py) until it failed under load: speed targets live here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from textual.widgets import DataTable

from console.app import REFRESH_S, ConsoleApp
from console.mqtt import ConsoleLink
from nodekit.mqtt import connect, make_client
from protocol import CLASSES, Prediction, Topics
from scripts.broker import Broker

log = logging.getLogger("bench.console_refresh")
SIZE = (200, 50)


def measure(broker: Broker, machines: int, rounds: int) -> dict[str, Any]:
    """Times of `refresh_site()` per round (s), with every machine's prediction changed."""
    topics = Topics(f"bench/console{time.time_ns()}")
    link = ConsoleLink(broker.address, topics, client_id=f"console-bench-{time.time_ns()}")
    link.start()
    if not link.subscribed.wait(10):
        raise RuntimeError("the console did not subscribe to the bench broker")
    pub = make_client(f"console-bench-pub-{time.time_ns()}")
    connect(pub, broker.address)
    pub.loop_start()
    timings: list[float] = []
    shown: list[int] = []

    async def drive() -> None:
        app = ConsoleApp(link, topics)
        async with app.run_test(size=SIZE) as pilot:
            for round_ in range(rounds):
                infos = []
                for i in range(machines):
                    label = CLASSES[(i + round_) % len(CLASSES)]
                    probs = tuple(0.97 if c == label else 0.01 for c in CLASSES)
                    p = Prediction(f"m{i:03d}", round_, label, 0.97, probs, 1)
                    infos.append(pub.publish(topics.prediction(p.machine), p.to_json(), qos=1))
                for info in infos:
                    info.wait_for_publish(5)
                await pilot.pause(0.3)  # the link decodes them on paho's thread
                t = time.perf_counter()
                app.refresh_site()
                timings.append(time.perf_counter() - t)
                shown.append(app.query_one("#machines", DataTable).row_count)

    try:
        asyncio.run(drive())
    finally:
        link.stop()
        pub.loop_stop()
        pub.disconnect()
    later = timings[1:] or timings
    return {
        "machines": machines,
        "rounds": rounds,
        "refresh_s": REFRESH_S,
        "first_ms": timings[0] * 1000,
        "median_ms": statistics.median(later) * 1000,
        "worst_ms": max(later) * 1000,
        "target_ms": REFRESH_S / 2 * 1000,
        "machines_shown": shown[-1],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--machines", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--json", type=Path, help="write the figures here (bench/report.py)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with (
        tempfile.TemporaryDirectory(prefix="bench-console-") as work,
        Broker(run_dir=Path(work) / "broker") as broker,
    ):
        result = measure(broker, args.machines, args.rounds)
    print(
        f"console refresh, {result['machines']} changing machines: first "
        f"{result['first_ms']:.1f} ms, median {result['median_ms']:.1f} ms, worst "
        f"{result['worst_ms']:.1f} ms (target < {result['target_ms']:.0f} ms); "
        f"{result['machines_shown']} machines shown"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if result["machines_shown"] == args.machines else 1


if __name__ == "__main__":
    sys.exit(main())
