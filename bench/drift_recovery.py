"""The closed loop, live, per drift mode: how fast does edgeloop heal, and with how many labels?

`python -m bench.drift_recovery [--modes step,regime,...] [--timeout 150]`

For each mode: a fresh trainer daemon (starting from the same initial compact model), a fresh
pi_edge and the simulator (16 machines × 10 Hz, 5 % labels, faults every ~30 s) on one real
Mosquitto. After 15 s of drift-free traffic the drift is commanded on every machine; the bench
records seconds from onset to pi_edge's drift state, to the first drift batch the trainer
stored, and to the new model serving on pi_edge; the labels the fine-tune used; and the
accuracy of the old and the new model on fresh drifted and original windows (400 each); and
seconds from onset until every machine's drift state is ok again and stays ok for 20 s
(a swap starts the detectors over at ok, so only a lasting ok counts as cleared).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.drift_detection import MODES
from jetson_trainer.keys import generate_keypair, load_private_key
from jetson_trainer.pipeline import run_train
from jetson_trainer.serve import ServeConfig, TrainerDaemon
from pi_edge import EdgeConfig, EdgeService
from pi_edge.runtime import Classifier
from protocol import Command, Topics, decode_bundle, encode_bundle, load_public_key
from scripts.broker import Broker
from sensor_sim.dataset import write_datasets
from sensor_sim.drift import DriftSettings, apply, effect
from sensor_sim.fleet import FleetConfig
from sensor_sim.physics import sample
from sensor_sim.publisher import SimConfig, Simulator


@dataclass
class Recovery:
    mode: str
    detect_s: float | None
    first_batch_s: float | None
    live_s: float | None
    labels: int | None
    before: tuple[float, float]  # old model: drifted, original
    after: tuple[float, float] | None  # new model: drifted, original
    gate: str
    cleared_s: float | None = None  # onset → every machine's drift state ok again
    end_levels: dict[str, object] | None = None  # the detector at the end: what still alarms
    params: dict[str, float] = dataclasses.field(default_factory=dict)  # the drift command's


def poll(cond: object, timeout: float) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if cond():  # type: ignore[operator]
            return time.monotonic() - start
        time.sleep(0.05)
    return None


def accuracy(
    bundle_path: Path, public: Path, command: Command, elapsed_s: float, seed: int
) -> tuple[float, float]:
    """(drifted, original) accuracy of a bundle on 400 fresh windows each."""
    bundle = decode_bundle(bundle_path.read_bytes(), load_public_key(public))
    clf = Classifier(bundle.model, bundle.manifest)
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(4), 100)
    eff = effect(DriftSettings.from_command(command), elapsed_s)
    drifted = apply(sample(y, rng, blend=np.full(len(y), eff.blend)), eff)
    original = sample(y, rng)
    return tuple(
        float((clf.predict(x).argmax(axis=1) == y).mean())  # type: ignore[return-value]
        for x in (drifted, original)
    )


HOLD_S = 20.0  # "cleared" = ok on every machine for this long without a relapse


def held_ok(cond: object, timeout: float, hold: float) -> float | None:
    """Monotonic time at which `cond` became true and then stayed true for `hold` seconds,
    if that spell starts within `timeout` seconds; None otherwise."""
    start = time.monotonic()
    since: float | None = None
    while True:
        now = time.monotonic()
        if cond():  # type: ignore[operator]
            since = now if since is None else since
            if now - since >= hold:
                return since
        else:
            since = None
            if now - start > timeout:
                return None
        time.sleep(0.1)


def _all_ok(edge: EdgeService) -> bool:
    """Every machine's drift detector, and the pooled accuracy one, says ok."""
    return bool(edge.evidence.machine_states()) and edge.evidence.overall() == "ok"


def run_mode(
    mode: str,
    command: Command,
    work: Path,
    data: Path,
    initial: Path,
    keys: tuple[Path, Path],
    timeout: float,
    clear_timeout: float = 60.0,
) -> Recovery:
    private, public = keys
    run = work / mode
    shutil.copytree(initial, run / "models" / "v0001")
    topics = Topics(f"bench/{mode}")
    # the shared initial model, bound to this mode's site (a Pi refuses another site's bundle)
    path = run / "models" / "v0001" / "model.bundle"
    bundle = decode_bundle(path.read_bytes(), load_public_key(public))
    manifest = dataclasses.replace(bundle.manifest, site=topics.prefix)
    path.write_bytes(encode_bundle(manifest, bundle.model, load_private_key(private).sign))
    with Broker(run_dir=run / "broker") as broker:
        daemon = TrainerDaemon(
            ServeConfig(
                broker=broker.address,
                prefix=topics.prefix,
                store=run / "trainer",
                private_key=private,
                data=data,
                models=run / "models",
                client_id=f"trainer-{mode}",
                labels_needed=48,
                finetune_epochs=30,
            )
        ).start()
        threading.Thread(target=daemon.run_forever, daemon=True).start()
        edge = EdgeService(
            EdgeConfig(
                broker=broker.address,
                prefix=topics.prefix,
                node=f"pi-{mode}",
                public_key=public,
                state_dir=run / "edge",
                dashboard=False,
                status_interval_s=0.5,
            ),
            public_key=load_public_key(public),
        ).start()
        sim = Simulator(
            SimConfig(
                broker=broker.address,
                prefix=topics.prefix,
                node=f"sim-{mode}",
                seed=3,
                fleet=FleetConfig(machines=16, label_fraction=0.05, mtbf_s=30, repair_s=30),
            )
        )
        stop = threading.Event()
        try:
            edge.wait_for_model(1, 30)
            poll(lambda: edge.broker_state == "connected", 10)
            sim.start()
            threading.Thread(target=lambda: sim.run(stop), daemon=True).start()
            time.sleep(15)
            batches_before = daemon.state.batches
            onset = time.monotonic()
            sim.send_command(command)
            detect = poll(lambda: edge.evidence.overall() == "drift", timeout)
            first = poll(
                lambda: daemon.state.batches > batches_before, timeout - (time.monotonic() - onset)
            )
            first = None if first is None else time.monotonic() - onset
            live = poll(
                lambda: edge.model_version not in (None, 1), timeout - (time.monotonic() - onset)
            )
            live = None if live is None else time.monotonic() - onset
            # drift cleared: every machine's detector back to ok, and staying ok for HOLD_S (a
            # swap starts the detectors over at ok: only a lasting ok counts); the clock runs
            # from the onset
            cleared = None
            if detect is not None:
                cleared = held_ok(lambda: _all_ok(edge), clear_timeout, HOLD_S)
                cleared = None if cleared is None else cleared - onset
            end_levels = edge.evidence.snapshot()["drift"]
            elapsed = time.monotonic() - onset
        finally:
            stop.set()
            sim.close()
            edge.stop()
            daemon.stop()
    attempt = daemon.state.last_attempt
    gate = attempt.decision.reason if attempt else "no fine-tune started"
    before = accuracy(initial / "model.bundle", public, command, elapsed, seed=7)
    after = labels = None
    current = run / "edge" / "models" / "current.bundle"
    if live is not None:
        after = accuracy(current, public, command, elapsed, seed=7)
        labels = decode_bundle(current.read_bytes(), None, allow_unsigned=True).manifest.extra.get(
            "labels_used"
        )
    return Recovery(
        mode, detect, first, live, labels, before, after, gate, cleared, end_levels, command.params
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated of {list(MODES)}")
    p.add_argument("--timeout", type=float, default=150.0, help="seconds per mode after onset")
    p.add_argument("--work", type=Path, help="working dir (default: a temp dir)")
    p.add_argument("--json", type=Path, help="also write the per-mode results here")
    p.add_argument(
        "--ramp-s",
        type=float,
        default=90.0,
        help="length of the ramp drift (bench.drift_detection's 300 s would outlast the run)",
    )
    p.add_argument(
        "--clear-timeout",
        type=float,
        default=90.0,
        help="seconds after the new model (or the timeout) for the drift to clear",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    work = args.work or Path(tempfile.mkdtemp(prefix="edgeloop-recovery-"))
    data = work / "data"
    write_datasets(data, seed=42)
    keys = generate_keypair(work / "keys")
    x, y = np.load(data / "train_data.npy"), np.load(data / "train_labels.npy")
    t0 = time.monotonic()
    run_train(
        x,
        y,
        work / "initial",
        private_key=keys[0],
        figures=False,
        verbose=0,
        time_repeats=10,
        quantizations=("int8",),
    )
    train_s = time.monotonic() - t0
    print(f"initial compact model trained in {train_s:.0f} s", flush=True)
    results = []
    for mode in args.modes.split(","):
        command = MODES[mode]
        if mode == "ramp":
            command = dataclasses.replace(command, params={"duration_s": args.ramp_s})
        results.append(
            run_mode(
                mode, command, work, data, work / "initial", keys, args.timeout, args.clear_timeout
            )
        )
        r = results[-1]
        print(
            f"{mode}: detect {r.detect_s} first batch {r.first_batch_s} live {r.live_s} "
            f"cleared {r.cleared_s} gate: {r.gate}",
            flush=True,
        )
    print(
        "\n| drift mode | onset → drift state (s) | → first batch stored (s) | → new model "
        "live (s) | → drift cleared (s) | labels used | drifted acc. before → after | original "
        "acc. before → after |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:

        def f(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f}"

        after_d = "-" if r.after is None else f"{r.after[0]:.3f}"
        after_o = "-" if r.after is None else f"{r.after[1]:.3f}"
        params = " ".join(f"{k}={v:g}" for k, v in r.params.items())
        print(
            f"| {r.mode} {params} | {f(r.detect_s)} | {f(r.first_batch_s)} | {f(r.live_s)} | "
            f"{f(r.cleared_s)} | "
            f"{r.labels if r.labels is not None else '-'} | {r.before[0]:.3f} → {after_d} | "
            f"{r.before[1]:.3f} → {after_o} |"
        )
    for r in results:
        if r.after is None:
            print(f"{r.mode}: no new model — {r.gate}")
        if r.cleared_s is None and r.end_levels:
            still = {
                m: d
                for m, d in r.end_levels.get("machines", {}).items()  # type: ignore[attr-defined]
                if d["state"] != "ok"
            }
            print(
                f"{r.mode}: drift not cleared; accuracy {r.end_levels.get('accuracy_state')}, "
                f"machines still alarmed: {still}"
            )
    if args.json:
        modes = [dataclasses.asdict(r) for r in results]
        args.json.write_text(
            json.dumps({"initial_train_s": train_s, "timeout_s": args.timeout, "modes": modes})
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
