"""pi_edge throughput and latency against a no-model ceiling, in one run, on one real Mosquitto.

`python -m bench.edge [--model BUNDLE --public-key PEM] [--count N] [--rate R]`

For each target (the ceiling process, then pi_edge) a driver process publishes windows from
100 machines (a) as fast as it can and (b) paced at --rate windows/s. A collector here
subscribes to the predictions and measures the sustained rate and the sensor→prediction latency
(arrival here minus the window's sensor timestamp), and to pi_edge's status for its inbox drops.
"dropped" is windows sent minus predictions received (inbox drops included). Peak RSS is the
target's VmHWM; CPU µs/window is the target's user + system CPU time during a run (from
/proc/PID/stat) over the predictions it made, the cost that matters at a realistic, paced rate.
Targets (issue 5): pi_edge ≥ 0.8× ceiling rate; p99 ≤ 5 ms at 1,000/s; peak RSS ≤ 80 MB.

`--baseline REV` adds pi_edge as it was at git revision REV (a detached worktree of this
repository, run from there; flat out only) to every round: issue 13's "flat-out throughput no
worse than before", measured side by side instead of against figures from another day.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nodekit.mqtt import connect, make_client
from nodekit.settings import env_credentials
from protocol import Topics
from scripts.broker import Broker

PY = sys.executable
NODE = "bench-pi"
# the latency percentiles each Result keeps (finer in the tail, where the targets are)
QUANTILES = np.concatenate([np.arange(0, 90, 1.0), np.linspace(90, 100, 101)])


@dataclass
class Result:
    target: str
    mode: str
    sent: int
    received: int
    rate: float
    p50_ms: float
    p99_ms: float
    peak_rss_mb: float
    inbox_drops: int | None = None  # pi_edge only: its own drop-oldest count in this run
    cpu_us: float = float("nan")  # the target's CPU time per prediction in this run
    # latency (ms) at the percentiles QUANTILES: the distribution, for bench/report.py's plot
    quantiles_ms: list[float] = field(default_factory=list)


class Collector:
    """Counts predictions and keeps (arrival, payload) pairs; parsing happens after the run."""

    def __init__(self, broker: str, topics: Topics) -> None:
        self._lock = threading.Lock()
        self._items: list[tuple[int, bytes]] = []
        self._topics = topics
        self.drops: dict[str, int] = {}  # node → inbox drops in its latest status
        self._client = make_client(f"bench-collector-{time.monotonic_ns()}")
        self._client.on_connect = lambda c, *a: c.subscribe(
            [(topics.predictions(), 0), (topics.statuses(), 0)]
        )
        self._client.on_message = self._on_message
        connect(self._client, broker, credentials=env_credentials(os.environ))
        self._client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        if msg.topic.endswith("/status"):
            status = json.loads(msg.payload)
            drops = status.get("metrics", {}).get("drops")
            if drops is not None:
                self.drops[status["node"]] = int(drops)
            return
        item = (time.time_ns(), msg.payload)
        with self._lock:
            self._items.append(item)

    def take(self) -> list[tuple[int, bytes]]:
        with self._lock:
            items, self._items = self._items, []
        return items

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_mode(
    broker: Broker,
    collector: Collector,
    target: str,
    pid: int,
    *,
    mode: str,
    count: int,
    rate: float,
    tag: str,
) -> Result:
    """Drive one run with its own machine ids (`tag`); count only that run's predictions."""
    drive = [
        PY,
        "-m",
        "bench._drive",
        "--broker",
        broker.address,
        "--machines",
        "100",
        "--count",
        str(count),
        "--tag",
        tag,
    ]
    if mode != "max":
        drive += ["--rate", str(rate)]
    drops_before = collector.drops.get(NODE, 0)
    cpu_before = cpu_seconds(pid)
    out = subprocess.run(drive, check=True, capture_output=True, text=True)
    sent = json.loads(out.stdout.strip().splitlines()[-1])["sent"]
    items: list[tuple[int, bytes]] = []
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < 3.0:  # until 3 s pass without a prediction
        time.sleep(0.2)
        new = collector.take()
        if new:
            items.extend(new)
            quiet_since = time.monotonic()
    cpu = cpu_seconds(pid) - cpu_before
    mine = [(a, json.loads(p)) for a, p in items]
    mine = [(a, o) for a, o in mine if o["machine"].startswith(tag)]
    arrivals = np.array([a for a, _ in mine], dtype=np.int64)
    sensor = np.array([o["timestamps_ns"]["sensor"] for _, o in mine], np.int64)
    lat_ms = (arrivals - sensor) / 1e6
    return Result(
        target,
        mode,
        sent,
        len(mine),
        steady_rate(arrivals),
        float(np.percentile(lat_ms, 50)) if mine else float("nan"),
        float(np.percentile(lat_ms, 99)) if mine else float("nan"),
        peak_rss_mb(pid),
        collector.drops.get(NODE, 0) - drops_before if target == "pi_edge" else None,
        cpu * 1e6 / len(mine) if mine else float("nan"),
        np.percentile(lat_ms, QUANTILES).round(4).tolist() if mine else [],
    )


def steady_rate(arrivals: np.ndarray) -> float:
    """Predictions/s over the middle 80 % of arrivals (start-up and drain tails excluded)."""
    if len(arrivals) < 10:
        return 0.0
    a = np.sort(arrivals)
    lo, hi = int(len(a) * 0.1), int(len(a) * 0.9)
    return float((hi - lo) / ((a[hi] - a[lo]) / 1e9))


def wait_ready(collector: Collector, broker: Broker, seconds: float = 60, fans: int = 0) -> None:
    """Send probe windows until the target answers with a prediction (model loaded); with
    `fans`, until it answers a fan's window too (its second type's model loaded)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        subprocess.run(
            [
                PY,
                "-m",
                "bench._drive",
                "--broker",
                broker.address,
                "--machines",
                "2",
                "--count",
                "4" if not fans else "8",
                "--fans",
                "2" if fans else "0",
            ],
            check=True,
            capture_output=True,
        )
        time.sleep(0.5)
        items = collector.take()
        if items and (not fans or any(b'"fan-' in p for _, p in items)):
            return
    raise RuntimeError("target produced no prediction within 60 s")


def make_model(work: Path) -> tuple[Path, Path]:
    """Key pair + a compact model trained on seed-style data (subprocesses: TF stays out)."""
    data, keys, out = work / "data", work / "keys", work / "model"
    subprocess.run(
        [PY, "-m", "sensor_sim", "dataset", "--out", str(data), "--seed", "7"], check=True
    )
    subprocess.run([PY, "-m", "jetson_trainer", "keygen", "--out", str(keys)], check=True)
    subprocess.run(
        [
            PY,
            "-m",
            "jetson_trainer",
            "train",
            "--data",
            str(data),
            "--out",
            str(out),
            "--private-key",
            str(keys / "trainer_ed25519.pem"),
        ],
        check=True,
    )
    return out / "model.bundle", keys / "trainer_ed25519.pub.pem"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path)
    p.add_argument("--public-key", type=Path)
    p.add_argument(
        "--count", type=int, default=30000, help="windows in the as-fast-as-possible run"
    )
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--seconds", type=float, default=10.0, help="length of the paced run")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per target")
    p.add_argument(
        "--targets",
        default="ceiling,ceiling-threaded,pi_edge",
        help="comma-separated subset of: ceiling, ceiling-threaded, pi_edge",
    )
    p.add_argument("--json", type=Path, help="also write every Result row here")
    p.add_argument(
        "--baseline",
        metavar="REV",
        help="also run pi_edge of this git revision (flat out), side by side",
    )
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="edgeloop-bench-edge-"))
    model, pub = args.model, args.public_key
    if model is None or pub is None:
        model, pub = make_model(work)
    results: list[Result] = []
    with Broker(run_dir=work / "broker") as broker:
        collector = Collector(broker.address, Topics())
        targets = {
            "ceiling": [PY, "-m", "bench._ceiling", "--broker", broker.address],
            "ceiling-threaded": [
                PY,
                "-m",
                "bench._ceiling",
                "--broker",
                broker.address,
                "--threaded",
            ],
            "pi_edge": [
                PY,
                "-m",
                "pi_edge",
                "run",
                "--broker",
                broker.address,
                "--public-key",
                str(pub),
                "--model",
                str(model),
                "--state-dir",
                str(work / "edge"),
                "--no-dashboard",
                "--node",
                NODE,
            ],
        }
        chosen = [t.strip() for t in args.targets.split(",") if t.strip()]
        unknown = sorted(set(chosen) - set(targets))
        if unknown:
            raise SystemExit(f"error: unknown --targets {unknown}; choose from {sorted(targets)}")
        cwd: dict[str, Path] = {}
        if args.baseline:
            tree = checkout(args.baseline, work / "baseline")
            if tree is not None:
                name = f"pi_edge@{args.baseline}"
                targets[name] = [*targets["pi_edge"][:-5], "--state-dir", str(work / "edge-base")]
                targets[name] += ["--no-dashboard", "--node", NODE]
                cwd[name] = tree
                chosen.append(name)
        try:
            for round_ in range(args.rounds):  # alternate targets so drift in load hits all
                for name in chosen:
                    results += measure(
                        broker,
                        collector,
                        name,
                        targets[name],
                        args,
                        round_,
                        cwd=cwd.get(name),
                        paced=name not in cwd,
                    )
        finally:
            if cwd:
                subprocess.run(
                    [
                        "git",
                        "-C",
                        str(REPO),
                        "worktree",
                        "remove",
                        "--force",
                        str(work / "baseline"),
                    ],
                    capture_output=True,
                    check=False,
                )
        collector.close()
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1) + "\n")
    return 0


REPO = Path(__file__).resolve().parent.parent


def checkout(rev: str, path: Path) -> Path | None:
    """A detached worktree of this repository at `rev` in `path`; None (and why, on stderr) if
    git cannot make one (no repository, unknown revision)."""
    out = subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), rev],
        capture_output=True,
        check=False,
        text=True,
    )
    if out.returncode:
        print(f"baseline {rev} not measured: git worktree: {out.stderr.strip()}", file=sys.stderr)
        return None
    return path


def measure(
    broker: Broker,
    collector: Collector,
    name: str,
    cmd: list[str],
    args: argparse.Namespace,
    round_: int,
    *,
    cwd: Path | None = None,
    paced: bool = True,
) -> list[Result]:
    """Start one target (in `cwd`: its own code), run the flat-out and (if `paced`) the paced
    drive against it, stop it."""
    collector.drops.pop(NODE, None)  # a new process counts from zero
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        cwd=cwd,
    )
    try:
        wait_ready(collector, broker)
        pace = f"{args.rate:.0f}/s"
        flat = [
            run_mode(
                broker,
                collector,
                name,
                proc.pid,
                mode="max",
                count=args.count,
                rate=0,
                tag=f"{name[:4]}{name[-4:]}max{round_}",
            )
        ]
        if not paced:
            return flat
        return [
            *flat,
            run_mode(
                broker,
                collector,
                name,
                proc.pid,
                mode=pace,
                count=int(args.rate * args.seconds),
                rate=args.rate,
                tag=f"{name[:4]}{name[-4:]}pace{round_}",
            ),
        ]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def print_table(results: list[Result]) -> None:
    head = (
        "target",
        "mode",
        "sent",
        "predicted",
        "dropped (inbox)",
        "windows/s",
        "p50 ms",
        "p99 ms",
        "peak RSS MB",
        "CPU µs/window",
    )
    rows = [
        (
            r.target,
            r.mode,
            f"{r.sent}",
            f"{r.received}",
            f"{r.sent - r.received}" + ("" if r.inbox_drops is None else f" ({r.inbox_drops})"),
            f"{r.rate:,.0f}",
            f"{r.p50_ms:.2f}",
            f"{r.p99_ms:.2f}",
            f"{r.peak_rss_mb:.0f}",
            f"{r.cpu_us:.0f}",
        )
        for r in results
    ]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print("\nmedians over rounds:")
    med: dict[tuple[str, str], tuple[float, float, float, float]] = {}
    for key in dict.fromkeys((r.target, r.mode) for r in results):
        rs = [r for r in results if (r.target, r.mode) == key]
        med[key] = (
            float(np.median([r.rate for r in rs])),
            float(np.median([r.p50_ms for r in rs])),
            float(np.median([r.p99_ms for r in rs])),
            float(np.median([r.cpu_us for r in rs])),
        )
        print(
            f"  {key[0]:8s} {key[1]:8s} {med[key][0]:8,.0f} windows/s  p50 {med[key][1]:7.2f} ms"
            f"  p99 {med[key][2]:7.2f} ms  CPU {med[key][3]:5.0f} µs/window"
        )
    edge = med.get(("pi_edge", "max"))
    for ref in ("ceiling", "ceiling-threaded", *(t for t, _ in med if t.startswith("pi_edge@"))):
        ceil = med.get((ref, "max"))
        if ceil and edge and ceil[0]:
            goal = "≥ 0.9×: no worse" if ref.startswith("pi_edge@") else "≥ 0.8×"
            print(f"pi_edge / {ref} sustained rate: {edge[0] / ceil[0]:.2f}× (target {goal})")
    rss = max((r.peak_rss_mb for r in results if r.target == "pi_edge"), default=float("nan"))
    print(f"pi_edge peak RSS: {rss:.0f} MB (target ≤ 80 MB)")


if __name__ == "__main__":
    sys.exit(main())
