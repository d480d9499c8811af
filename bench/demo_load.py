"""CPU per window at the demo's load (16 machines × 10 Hz), pi_edge against the no-model ceiling.

`python -m bench.demo_load [--seconds 30] [--rounds 2] [--model BUNDLE --public-key PEM]
                          [--two-types [--fans 8] [--type-model BUNDLE] [--private-key PEM]]`

Flat-out figures hide what a Pi pays at a realistic rate: fixed costs (status, dashboard
refreshes, paho's loop, timers) spread over few windows. Each target runs in turn, alternating
over rounds, while a driver publishes 160 windows/s paced; the figure is the target's user +
system CPU time (/proc/PID/stat) over the predictions it made. pi_edge runs twice: as a service
(`--no-dashboard`) and with its live dashboard on a pseudo-terminal (200 × 50), as in the demo.
Targets (issue 13): pi_edge ≤ 1.2× the ceiling's CPU per window without its dashboard, ≤ 1.4×
with it; peak RSS ≤ 64 MB.

`--two-types`: also a site of two machine types at the same load, `--fans` (default 8) of the 16
machines being fans (sensor_sim/fan.py: 128 × 3 windows, 4 classes): pi_edge with a site file
serving both types (the fan's model retained on its type's topic, `--type-model`, else trained
here with the trainer's build path and signed with `--private-key`, by default the key beside
`--public-key`) against the ceiling decoding both shapes (`_ceiling --mixed`). Issue 24: within
1.2× the ceiling's CPU per window, at most 8 MB more RSS per extra type (bench.machine_types).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import struct
import subprocess
import tempfile
import termios
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nodekit.mqtt import connect, make_client
from protocol import Topics
from scripts.broker import Broker
from sensor_sim.fan import FAN_TYPE

from ._sites import site_toml
from .edge import PY, Collector, cpu_seconds, make_model, peak_rss_mb, wait_ready

NODE = "bench-pi"
FAN = ("--machine-type", "fan")
MACHINES, HZ = 16, 10.0
SITE = site_toml([FAN_TYPE], builtin_machines=["b*", "d*"])  # seed machines b…, d…; fans


@dataclass
class Row:
    target: str
    round_: int
    predicted: int
    cpu_us: float
    rss_mb: float


def _pty_popen(cmd: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    """Start `cmd` with a 200 × 50 pseudo-terminal as stdin/stdout/stderr; drain it."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)

    def drain() -> None:
        try:
            while os.read(master, 65536):
                pass
        except OSError:  # the child closed the terminal
            pass

    threading.Thread(target=drain, daemon=True).start()
    return proc, master


def run_target(
    broker: Broker,
    collector: Collector,
    name: str,
    cmd: list[str],
    seconds: float,
    round_: int,
    tty: bool,
    fans: int = 0,
) -> Row:
    master = None
    if tty:
        proc, master = _pty_popen(cmd)
    else:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        wait_ready(collector, broker, fans=fans)
        time.sleep(2.0)  # past start-up: the dashboard and the status thread are running
        collector.take()
        tag = f"d{round_}{name[:3]}"
        drive = [
            PY,
            "-m",
            "bench._drive",
            "--broker",
            broker.address,
            "--machines",
            str(MACHINES - fans),
            "--fans",
            str(fans),
            "--count",
            str(int(MACHINES * HZ * seconds)),
            "--rate",
            str(MACHINES * HZ),
            "--tag",
            tag,
        ]
        cpu0 = cpu_seconds(proc.pid)
        subprocess.run(drive, check=True, capture_output=True, text=True)
        time.sleep(1.0)  # the last predictions
        cpu = cpu_seconds(proc.pid) - cpu0
        items = collector.take()
        mine = sum(tag in json.loads(p)["machine"] for _, p in items)
        return Row(name, round_, mine, cpu * 1e6 / max(mine, 1), peak_rss_mb(proc.pid))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if master is not None:
            os.close(master)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path)
    p.add_argument("--public-key", type=Path)
    p.add_argument("--seconds", type=float, default=30.0, help="length of each paced run")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", type=Path, help="also write the rows and medians here")
    p.add_argument("--two-types", action="store_true", help="also a site of two machine types")
    p.add_argument("--fans", type=int, default=8, help="with --two-types: fans of the 16")
    p.add_argument("--type-model", type=Path, help="with --two-types: the fan type's bundle")
    p.add_argument(
        "--private-key", type=Path, help="with --two-types: signs the fan model made here"
    )
    p.add_argument(
        "--only",
        help="comma-separated targets to run (e.g. 'ceiling 2 types,pi_edge 2 types'); "
        "the ceiling always runs, as every ratio's base",
    )
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="edgeloop-bench-demo-"))
    model, pub = args.model, args.public_key
    if model is None or pub is None:
        model, pub = make_model(work)
    fan_model = args.type_model
    if args.two_types and fan_model is None:
        private = args.private_key or pub.with_name(pub.name.replace(".pub.pem", ".pem"))
        fan_model = make_fan_model(work, private)
    rows: list[Row] = []
    with Broker(run_dir=work / "broker") as broker:
        collector = Collector(broker.address, Topics())
        site = work / "site.toml"
        site.write_text(SITE)

        def edge(dashboard: bool, types: bool = False) -> list[str]:
            cmd = [PY, "-m", "pi_edge", "run", "--broker", broker.address]
            cmd += ["--public-key", str(pub), "--model", str(model), "--node", NODE]
            cmd += ["--state-dir", str(work / f"edge-{int(dashboard)}{'-types' if types else ''}")]
            cmd += ["--site", str(site)] if types else []
            return cmd + ([] if dashboard else ["--no-dashboard"])

        ceiling_cmd = [PY, "-m", "bench._ceiling", "--broker", broker.address]
        targets: dict[str, tuple[list[str], bool, int]] = {
            "ceiling": (ceiling_cmd, False, 0),
            "ceiling-threaded": ([*ceiling_cmd, "--threaded"], False, 0),
            "pi_edge": (edge(False), False, 0),
            "pi_edge+dashboard": (edge(True), True, 0),
        }
        if fan_model is not None:  # the fan's model waits, retained, on its type's topic
            publish_retained(broker, Topics().model_of("fan"), fan_model.read_bytes())
            targets["ceiling 2 types"] = ([*ceiling_cmd, "--mixed"], False, args.fans)
            targets["pi_edge 2 types"] = (edge(False, types=True), False, args.fans)
        if args.only:
            wanted = {name.strip() for name in args.only.split(",")} | {"ceiling"}
            if "pi_edge 2 types" in wanted:
                wanted.add("ceiling 2 types")
            unknown = wanted - targets.keys()
            if unknown:
                p.error(f"--only: no target {sorted(unknown)}; targets: {sorted(targets)}")
            targets = {name: target for name, target in targets.items() if name in wanted}
        for round_ in range(args.rounds):
            for name, (cmd, tty, fans) in targets.items():
                row = run_target(broker, collector, name, cmd, args.seconds, round_, tty, fans)
                print(
                    f"round {round_} {name:18s} {row.predicted:6d} predictions "
                    f"{row.cpu_us:6.0f} µs CPU/window  peak RSS {row.rss_mb:5.1f} MB",
                    flush=True,
                )
                rows.append(row)
        collector.close()
    med = {
        name: (
            float(np.median([r.cpu_us for r in rows if r.target == name])),
            float(max(r.rss_mb for r in rows if r.target == name)),
        )
        for name in targets
    }
    ceiling = med["ceiling"][0]
    print(f"\nat {MACHINES} machines × {HZ:g} Hz, medians over {args.rounds} rounds:")
    print("| target | CPU µs/window | × ceiling | target | peak RSS MB |")
    print("|---|---|---|---|---|")
    goals = {
        "ceiling": "—",
        "ceiling-threaded": "(the hand-off alone)",
        "pi_edge": "≤ 1.2×",
        "pi_edge+dashboard": "≤ 1.4×",
        "ceiling 2 types": f"({args.fans} of the machines fans)",
        "pi_edge 2 types": "≤ 1.2× (of the ceiling of 2 types)",
    }
    for name, (cpu, rss) in med.items():
        base = med["ceiling 2 types"][0] if name == "pi_edge 2 types" else ceiling
        print(f"| {name} | {cpu:.0f} | {cpu / base:.2f}× | {goals[name]} | {rss:.1f} |")
    if args.json:
        args.json.write_text(
            json.dumps({"rows": [r.__dict__ for r in rows], "medians": med}, indent=1)
        )
    return 0


def publish_retained(broker: Broker, topic: str, payload: bytes) -> None:
    """Publish `payload` retained (QoS 1) and wait until the broker took it."""
    client = make_client(f"bench-demo-retain-{time.monotonic_ns()}")
    connect(client, broker.address)
    client.loop_start()
    try:
        deadline = time.monotonic() + 10
        while not client.is_connected() and time.monotonic() < deadline:
            time.sleep(0.02)
        client.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


def make_fan_model(work: Path, private_key: Path) -> Path:
    """A fan model (sensor_sim's fan data, the trainer's `train`) signed with `private_key`."""
    data, out = work / "fan-data", work / "fan-model"
    key = ["--private-key", str(private_key)]
    dataset = [PY, "-m", "sensor_sim", "dataset", "--out", str(data), "--seed", "7", *FAN]
    subprocess.run(dataset, check=True)
    train = [PY, "-m", "jetson_trainer", "train", "--data", str(data), "--out", str(out), *key]
    subprocess.run(train, check=True)
    return out / "model.bundle"


if __name__ == "__main__":
    raise SystemExit(main())
