"""Fleet throughput and takeover: 1, 2 and 3 `pi_edge run --fleet` nodes on one real Mosquitto.

`python -m bench.fleet [--model BUNDLE --public-key PEM] [--nodes 1,2,3] [--count N]`

For each fleet size a driver process (bench/_drive.py) publishes `--count` windows from 100
machines as fast as it can; a collector here counts the predictions, their sustained rate over
the middle 80 % of arrivals and the windows predicted more than once (should be 0: each machine
has one owner). Then, for 2 nodes and more, a paced stream (`--rate`, default 400 windows/s)
runs while one node is (a) killed with SIGKILL (the broker sends its Will at once) and, after
it is back, (b) frozen with SIGSTOP (a hung Pi or a cut cable: no Will until 1.5 × keepalive,
the others time it out after `--fleet-timeout`, 6 s). Takeover is the time from the fault to
the first prediction, for the slowest of the victim's machines, of a window sensed after it.

On this 2-core box every node competes with the others, the broker and the driver for the same
two cores, so more nodes add no throughput here; on separate Pis each adds its own CPU. The
table shows the cost of the split itself (each node still receives every window and drops the
others' before decoding). Without --model a tiny model is trained first (~30 s, subprocesses).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nodekit.mqtt import connect, make_client
from protocol import Topics
from protocol.fleet import rendezvous_owner
from protocol.status_detail import DetailReader, FleetDetail
from scripts.broker import Broker

from .edge import steady_rate

PY = sys.executable
GROUP = "bench"
MACHINES = 100


@dataclass
class FleetResult:
    nodes: int
    sent: int
    received: int
    rate: float  # predictions/s, all nodes together
    duplicated: int  # windows predicted more than once
    kill_takeover_s: float = float("nan")
    kill_gaps: int = 0
    stop_takeover_s: float = float("nan")
    stop_gaps: int = 0


class Collector:
    """(arrival ns, machine, seq, sensor ns) of every prediction; node statuses' members."""

    def __init__(self, broker: str, topics: Topics) -> None:
        self._lock = threading.Lock()
        self._raw: list[tuple[int, bytes]] = []
        self.members: dict[str, list[str]] = {}
        self._client = make_client(f"bench-fleet-{time.monotonic_ns()}")
        self._client.on_connect = lambda c, *a: c.subscribe(
            [(topics.predictions(), 0), (topics.statuses(), 0)]
        )
        self._client.on_message = self._on_message
        connect(self._client, broker)
        self._client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        if msg.topic.endswith("/status"):
            status = json.loads(msg.payload) if msg.payload else {}
            fleet = DetailReader(status.get("detail", {}), "edge").get(FleetDetail)
            if status.get("state") == "online" and fleet is not None:
                self.members[status["node"]] = list(fleet.members)
            else:
                self.members.pop(status.get("node", ""), None)
            return
        with self._lock:
            self._raw.append((time.time_ns(), msg.payload))

    def take(self) -> list[tuple[int, str, int, int]]:
        with self._lock:
            raw, self._raw = self._raw, []
        out = []
        for t, payload in raw:
            p = json.loads(payload)
            out.append((t, p["machine"], p["seq"], p["timestamps_ns"]["sensor"]))
        return out

    def agree(self, nodes: list[str]) -> bool:
        return all(self.members.get(n) == sorted(nodes) for n in nodes)

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def make_model(work: Path) -> tuple[Path, Path]:
    """Key pair + a tiny compact model (3 epochs on small data; subprocesses: TF stays out)."""
    data, keys, out = work / "data", work / "keys", work / "model"
    sizes = ["train=600", "infer=200", "drift_train=8", "drift_infer=8"]
    run = [PY, "-m", "sensor_sim", "dataset", "--out", str(data), "--seed", "7"]
    for s in sizes:
        run += ["--size", s]
    subprocess.run(run, check=True, capture_output=True)
    subprocess.run(
        [PY, "-m", "jetson_trainer", "keygen", "--out", str(keys)], check=True, capture_output=True
    )
    train = [
        PY, "-m", "jetson_trainer", "train", "--data", str(data), "--out", str(out),
        "--epochs", "3", "--private-key", str(keys / "trainer_ed25519.pem"),
    ]  # fmt: skip
    subprocess.run(train, check=True, capture_output=True)
    return out / "model.bundle", keys / "trainer_ed25519.pub.pem"


class Fleet:
    """N pi_edge processes of one fleet group."""

    def __init__(self, broker: Broker, model: Path, pub: Path, work: Path, timeout_s: float):
        self.broker, self.model, self.pub, self.work = broker, model, pub, work
        self.timeout_s = timeout_s
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, node: str) -> None:
        argv = [
            PY, "-m", "pi_edge", "run", "--broker", self.broker.address, "--node", node,
            "--fleet", GROUP, "--fleet-timeout", str(self.timeout_s),
            "--public-key", str(self.pub), "--model", str(self.model),
            "--state-dir", str(self.work / node), "--no-dashboard",
        ]  # fmt: skip
        log = (self.work / f"{node}.log").open("ab")
        self.procs[node] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()


def wait(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.1)


def drive(broker: Broker, count: int, tag: str, rate: float = 0.0) -> subprocess.Popen[str]:
    """bench._drive in the background: machines TAG000..TAG099, round-robin."""
    argv = [
        PY, "-m", "bench._drive", "--broker", broker.address, "--machines", str(MACHINES),
        "--count", str(count), "--tag", tag,
    ]  # fmt: skip
    if rate:
        argv += ["--rate", str(rate)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)


def drain(collector: Collector, quiet_s: float = 2.0) -> list[tuple[int, str, int, int]]:
    """Predictions until `quiet_s` pass without one."""
    items: list[tuple[int, str, int, int]] = []
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < quiet_s:
        time.sleep(0.1)
        new = collector.take()
        if new:
            items += new
            quiet_since = time.monotonic()
    return items


def takeover(
    collector: Collector,
    fleet: Fleet,
    victim: str,
    nodes: list[str],
    fault: str,
    broker: Broker,
    rate: float,
    limit_s: float,
) -> tuple[float, int]:
    """(seconds until the others classify the victim's machines after `fault`, windows of the
    paced stream that got no prediction)."""
    tag = f"{fault[0]}{len(nodes)}"
    names = [f"{tag}{i:03d}" for i in range(MACHINES)]
    theirs = {m for m in names if rendezvous_owner(m, nodes) == victim}
    count = int(rate * (limit_s + 6))
    collector.take()
    stream = drive(broker, count, tag, rate)
    time.sleep(2.0)
    t0 = time.time_ns()
    proc = fleet.procs[victim]
    proc.send_signal(signal.SIGKILL if fault == "kill" else signal.SIGSTOP)
    stream.wait()
    items = collector.take() + drain(collector, 1.0)
    if fault == "stop":
        proc.kill()
    proc.wait()
    first: dict[str, int] = {}
    for t, m, _, sensor in items:
        if m in theirs and sensor > t0 and m not in first:
            first[m] = t
    if len(first) < len(theirs):
        return float("inf"), -1
    got = {(m, seq) for _, m, seq, _ in items if m in names}
    return (max(first.values()) - t0) / 1e9, count - len(got)


def run_size(
    n: int, broker: Broker, collector: Collector, args: argparse.Namespace, work: Path
) -> FleetResult:
    fleet = Fleet(broker, args.model, args.public_key, work / f"n{n}", args.fleet_timeout)
    (work / f"n{n}").mkdir(parents=True, exist_ok=True)
    nodes = [f"pi-{chr(ord('a') + i)}" for i in range(n)]
    try:
        for node in nodes:
            fleet.start(node)
        wait(lambda: collector.agree(nodes), 60, f"{n} fleet members agreeing")
        probe = drive(broker, 2 * MACHINES, f"p{n}", 200.0)  # every node's model is loaded
        probe.wait()
        drain(collector, 1.5)
        d = drive(broker, args.count, f"x{n}")
        out, _ = d.communicate()
        sent = json.loads(out.strip().splitlines()[-1])["sent"]
        items = drain(collector)
        counts = Counter((m, s) for _, m, s, _ in items)
        result = FleetResult(
            n,
            sent,
            len(items),
            steady_rate(np.array([t for t, *_ in items], dtype=np.int64)),
            sum(1 for c in counts.values() if c > 1),
        )
        if n >= 2:
            victim = nodes[-1]
            result.kill_takeover_s, result.kill_gaps = takeover(
                collector, fleet, victim, nodes, "kill", broker, args.rate, args.fleet_timeout
            )
            fleet.start(victim)
            wait(lambda: collector.agree(nodes), 60, f"{victim} rejoining")
            result.stop_takeover_s, result.stop_gaps = takeover(
                collector, fleet, victim, nodes, "stop", broker, args.rate, args.fleet_timeout
            )
        return result
    finally:
        fleet.stop_all()
        collector.members.clear()


def print_table(results: list[FleetResult], rate: float) -> None:
    print()
    print(
        f"| nodes | windows sent | predictions | predictions/s (flat out) | duplicated | "
        f"takeover after kill -9 | takeover after SIGSTOP (at {rate:.0f}/s) |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        kill = "—" if r.nodes < 2 else f"{r.kill_takeover_s:.2f} s"
        stop = "—" if r.nodes < 2 else f"{r.stop_takeover_s:.2f} s"
        print(
            f"| {r.nodes} | {r.sent} | {r.received} | {r.rate:,.0f} | {r.duplicated} | "
            f"{kill} | {stop} |"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path)
    p.add_argument("--public-key", type=Path)
    p.add_argument("--nodes", default="1,2,3", help="fleet sizes to run")
    p.add_argument("--count", type=int, default=15000, help="windows in the flat-out run")
    p.add_argument("--rate", type=float, default=400.0, help="windows/s during takeovers")
    p.add_argument("--fleet-timeout", type=float, default=6.0)
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="edgeloop-bench-fleet-"))
    if args.model is None or args.public_key is None:
        args.model, args.public_key = make_model(work)
    sizes = [int(s) for s in args.nodes.split(",") if s.strip()]
    results = []
    with Broker(run_dir=work / "broker") as broker:
        collector = Collector(broker.address, Topics())
        try:
            for n in sizes:
                results.append(run_size(n, broker, collector, args, work))
                print(results[-1], flush=True)
        finally:
            collector.close()
    print_table(results, args.rate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
