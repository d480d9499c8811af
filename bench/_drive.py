"""Bench driver: publish binary windows from many machines, as fast as possible or paced.

`python -m bench._drive --broker H:P --machines 100 --count 20000 [--rate 1000] [--fans N]`
Prints one JSON line: windows sent, seconds, achieved rate. `--fans N` adds N machines of the fan
type (sensor_sim/fan.py: 128 × 3 windows), ids fan-TAG000…, taking turns with the others.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from nodekit.mqtt import connect, make_client
from nodekit.settings import env_credentials
from protocol import DEFAULT_PREFIX, Topics, Window, encode_window
from sensor_sim import fan


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--broker", required=True)
    p.add_argument("--prefix", default=DEFAULT_PREFIX)
    p.add_argument("--machines", type=int, default=100)
    p.add_argument("--count", type=int, default=20000)
    p.add_argument("--rate", type=float, default=0.0, help="windows/s; 0 = as fast as possible")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", default="b", help="machine ids are TAG000, TAG001, …")
    p.add_argument("--fans", type=int, default=0, help="fan machines besides, fan-TAG000, …")
    args = p.parse_args(argv)
    topics = Topics(args.prefix)
    rng = np.random.default_rng(args.seed)
    base = rng.normal([50, 0.3, 11, 125], [5, 0.1, 0.5, 10], (16, 60, 4)).astype(np.float32)
    names = [f"{args.tag}{i:03d}" for i in range(args.machines)]
    names += [f"fan-{args.tag}{i:03d}" for i in range(args.fans)]
    fan_base = fan.generate(np.zeros(16, np.int64), rng)  # healthy fans (sensor_sim/fan.py)
    data = [base] * args.machines + [fan_base] * args.fans
    topic = [topics.window(m) for m in names]
    client = make_client(f"bench-drive-{time.monotonic_ns()}")
    connect(client, args.broker, credentials=env_credentials(os.environ))
    client.loop_start()
    deadline = time.monotonic() + 10
    while not client.is_connected():
        if time.monotonic() > deadline:
            print("error: driver could not connect to " + args.broker, file=sys.stderr)
            return 2
        time.sleep(0.01)
    period = 1.0 / args.rate if args.rate else 0.0
    tick = 0.01
    per_tick = max(1, round(args.rate * tick)) if args.rate else 1
    start = time.monotonic()
    sent = 0
    while sent < args.count:
        if period:
            due = start + sent * period
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        for _ in range(per_tick if period else 64):
            if sent >= args.count:
                break
            i = sent % len(names)
            w = Window(names[i], sent // len(names), time.time_ns(), data[i][sent % 16])
            client.publish(topic[i], encode_window(w), qos=0)
            sent += 1
    elapsed = time.monotonic() - start
    time.sleep(0.2)
    client.loop_stop()
    client.disconnect()
    print(json.dumps({"sent": sent, "seconds": elapsed, "rate": sent / elapsed}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
