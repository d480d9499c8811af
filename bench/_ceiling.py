"""The ceiling: the same MQTT work as pi_edge with no model.

Receives windows, decodes them, publishes a same-size prediction JSON through the same
`publish_many` pi_edge uses. What pi_edge achieves is compared against this, measured in the
same run. With --threaded, paho's thread only decodes and enqueues and a worker thread drains
up to 32 at a time and publishes them in one hand-over — pi_edge's required shape, still with
no model — which separates the cost of that hand-off from the cost of pi_edge's own work. With
--mixed, the windows of machines fan-* are the fan type's shape (a site of two machine types).
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import sys
import threading
import time
from typing import Any

from nodekit.mqtt import connect, make_client, publish_many
from nodekit.settings import env_credentials
from protocol import CLASSES, DEFAULT_PREFIX, Prediction, Topics, decode_any


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--broker", required=True)
    p.add_argument("--prefix", default=DEFAULT_PREFIX)
    p.add_argument("--threaded", action="store_true", help="publish from a worker thread")
    p.add_argument(
        "--mixed", action="store_true", help="fan-* machines' windows are 128 × 3 (two types)"
    )
    args = p.parse_args(argv)
    inbox: queue.Queue[tuple[object, int]] = queue.Queue(maxsize=2048)
    topics = Topics(args.prefix)
    client = make_client(f"bench-ceiling-{time.monotonic_ns()}")

    def on_connect(c: Any, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        c.subscribe(topics.windows(), qos=0)

    def on_message(c: Any, userdata: Any, msg: Any) -> None:
        received = time.time_ns()
        machine = topics.machine_of(msg.topic)
        fan = args.mixed and machine is not None and machine.startswith("fan-")
        w = decode_any(msg.payload, machine=machine, expected_shape=(128, 3) if fan else (60, 4))
        if args.threaded:
            inbox.put((w, received))
        else:
            answer(c, w, received)

    def worker() -> None:
        while not stop:
            try:
                batch = [inbox.get(timeout=0.2)]
            except queue.Empty:
                continue
            while len(batch) < 32:
                try:
                    batch.append(inbox.get_nowait())
                except queue.Empty:
                    break
            publish_many(client, [prediction(w, received) for w, received in batch])

    def answer(c: Any, w: Any, received: int) -> None:
        publish_many(c, [prediction(w, received)])

    def prediction(w: Any, received: int) -> tuple[str, bytes]:
        now = time.time_ns()
        pred = Prediction(
            w.machine,
            w.seq,
            CLASSES[0],
            0.97,
            (0.97, 0.01, 0.01, 0.01),
            1,
            timestamps_ns={
                "sensor": w.timestamp_ns,
                "received": received,
                "inferred": now,
                "published": now,
            },
            latency_ms={
                "network": (received - w.timestamp_ns) / 1e6,
                "queue": 0.0,
                "inference": 0.0,
                "total": (now - w.timestamp_ns) / 1e6,
            },
        )
        return topics.prediction(w.machine), pred.to_json()

    stop = False
    client.on_connect = on_connect
    client.on_message = on_message
    connect(client, args.broker, credentials=env_credentials(os.environ))

    def _stop(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    client.loop_start()
    if args.threaded:
        threading.Thread(target=worker, daemon=True).start()
    while not stop:
        time.sleep(0.1)
    client.loop_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
