"""The Pi's drift detector, offline and accelerated: false alarms per hour and detection delay.

`python -m bench.drift_detection --model BUNDLE --public-key PEM [--hours 1]`

Runs the simulator's fleet (16 machines × 10 Hz, 5 % labels, faults coming and going) through a
real model in pi_edge's classifier and pi_edge's DriftMonitor, with simulated time:
  1. `--hours` of drift-free traffic: how often the overall state turns to drift (false alarms);
  2. for each drift mode, 60 s drift-free, then the drift: seconds until the overall state is
     drift, and accuracy of the model before and after the onset.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pi_edge.loop.drift import DriftMonitor, DriftState
from pi_edge.model.classifier import Classifier
from protocol import Command, decode_bundle, load_public_key
from sensor_sim.fleet import Fleet, FleetConfig

HZ = 10.0
DT = 1.0 / HZ
MODES: dict[str, Command] = {
    "step": Command("drift", mode="step"),
    "offset": Command("drift", mode="offset", params={"temperature": 8.0, "pressure": -1.0}),
    "gain": Command("drift", mode="gain", params={"vibration": 1.6, "power": 1.15}),
    "ramp": Command("drift", mode="ramp", params={"duration_s": 300.0}),
    "regime": Command("drift", mode="regime", params={"load": 1.3}),
}


@dataclass
class Run:
    alarms: int
    suspects: int
    seconds: float
    delay_s: float | None
    accuracy_before: float
    accuracy_after: float


def simulate(
    classifier: Classifier,
    monitor: DriftMonitor,
    fleet: Fleet,
    seconds: float,
    rng: np.random.Generator,
    onset_s: float | None = None,
    command: Command | None = None,
    stop_on_drift: bool = False,
) -> Run:
    """Step the fleet in simulated time; count transitions to DRIFT and measure accuracy."""
    state = DriftState.OK
    alarms = suspects = 0
    delay = None
    correct = {False: 0, True: 0}
    total = {False: 0, True: 0}
    steps = int(seconds / DT)
    for i in range(steps):
        t = i * DT
        after = onset_s is not None and t >= onset_s
        if after and command is not None:
            fleet.apply(command)
            command = None
        windows = fleet.tick(DT, timestamp_ns=int(t * 1e9))
        truth = np.array([m.state for m in fleet.machines])
        x = np.stack([w.data for w in windows])
        probs = classifier.predict(x)
        labeled = rng.random(len(windows)) < 0.05
        monitor.observe(
            [w.machine for w in windows],
            x,
            probs,
            [int(truth[j]) if labeled[j] else None for j in range(len(windows))],
        )
        correct[after] += int((probs.argmax(axis=1) == truth).sum())
        total[after] += len(windows)
        new = monitor.overall
        if new == DriftState.DRIFT and state != DriftState.DRIFT:
            alarms += 1
            if after and delay is None:
                delay = t - (onset_s or 0.0)
                if stop_on_drift:
                    state = new
                    break
        if new == DriftState.SUSPECT and state == DriftState.OK:
            suspects += 1
        state = new
    return Run(
        alarms,
        suspects,
        seconds,
        delay,
        correct[False] / max(1, total[False]),
        correct[True] / max(1, total[True]),
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--public-key", type=Path, required=True)
    p.add_argument("--hours", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    bundle = decode_bundle(args.model.read_bytes(), load_public_key(args.public_key))
    classifier = Classifier(bundle.model, bundle.manifest)
    fleet_cfg = FleetConfig(machines=16, label_fraction=0.0, mtbf_s=300.0, repair_s=60.0)

    def fresh(seed: int) -> tuple[DriftMonitor, Fleet, np.random.Generator]:
        return (
            DriftMonitor.from_manifest(bundle.manifest),
            Fleet(fleet_cfg, np.random.default_rng(seed)),
            np.random.default_rng(seed + 1),
        )

    monitor, fleet, rng = fresh(args.seed)
    quiet = simulate(classifier, monitor, fleet, args.hours * 3600, rng)
    print(
        f"drift-free: {args.hours:g} simulated hour(s), {int(quiet.seconds * HZ * 16):,} "
        f"windows, accuracy {quiet.accuracy_before:.4f}: {quiet.alarms} false drift alarm(s), "
        f"{quiet.suspects} suspect episode(s)"
    )
    print("\n| drift mode | detection delay (s) | accuracy before | accuracy after onset |")
    print("|---|---|---|---|")
    for k, (mode, command) in enumerate(MODES.items()):
        monitor, fleet, rng = fresh(args.seed + 10 + k)
        run = simulate(
            classifier,
            monitor,
            fleet,
            60 + 600,
            rng,
            onset_s=60.0,
            command=command,
            stop_on_drift=True,
        )
        delay = f"{run.delay_s:.1f}" if run.delay_s is not None else "not detected in 600 s"
        print(
            f"| {mode} {_params(command)} | {delay} | {run.accuracy_before:.3f} | "
            f"{run.accuracy_after:.3f} |"
        )
    return 0


def _params(cmd: Command) -> str:
    return " ".join(f"{k}={v:g}" for k, v in cmd.params.items())


if __name__ == "__main__":
    sys.exit(main())
