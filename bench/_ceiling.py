"""The ceiling: the same MQTT work as pi_edge with no model.

Receives windows, decodes them, publishes a same-size prediction JSON. What pi_edge achieves is
compared against this, measured in the same run.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from typing import Any

from protocol import CLASSES, Prediction, Topics, decode_any
from protocol.mqtt import connect, make_client


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--broker", required=True)
    p.add_argument("--prefix", default="edgeloop/v1")
    args = p.parse_args(argv)
    topics = Topics(args.prefix)
    client = make_client(f"bench-ceiling-{time.monotonic_ns()}")

    def on_connect(c: Any, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        c.subscribe(topics.windows(), qos=0)

    def on_message(c: Any, userdata: Any, msg: Any) -> None:
        received = time.time_ns()
        machine = topics.machine_of(msg.topic)
        w = decode_any(msg.payload, machine=machine, expected_shape=(60, 4))
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
        c.publish(topics.prediction(w.machine), pred.to_json(), qos=0)

    client.on_connect = on_connect
    client.on_message = on_message
    connect(client, args.broker)
    stop = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    client.loop_start()
    while not stop:
        time.sleep(0.1)
    client.loop_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
