"""The closed loop, live, per drift mode: how fast does edgeloop heal, and with how many labels?

`python -m bench.drift_recovery [--modes step,regime,...] [--timeout 150]`

For each mode: a fresh trainer daemon (starting from the same initial compact model), a fresh
pi_edge and the simulator (16 machines × 10 Hz, 5 % labels, faults every ~30 s) on one real
Mosquitto. After 15 s of drift-free traffic the drift is commanded on every machine; the bench
records seconds from onset to pi_edge's drift state, to the first drift batch the trainer
stored, and to the new model serving on pi_edge; the labels the fine-tune used; and the
accuracy of the old and the new model on fresh drifted and original windows (400 each); and
seconds from onset until every machine's drift state is ok again and stays ok for 20 s
(a swap starts the detectors over at ok, so only a lasting ok counts as cleared; on the plant,
no machine in `drift` for 20 s: see `_none_in_drift`).

`--plant [--quick]` (or `plant-` modes in --modes): the same loop on the realistic plant
(bench/_plant_loop.py): an initial model trained on a plant data set, the simulator in
`--realism plant` with compressed time, drift on one machine (plant-step, plant-gain) or on all
(plant-step-all), scarce late noisy labels; per row the false drift alarms before the onset and
the macro-F1 (TRUE classes) of the old and new model on fresh drifted and undrifted plant
windows against the undrifted model's. --quick: plant-step-all only, about 5 minutes.
The plant's trainer waits for a plant day of labels (PlantLoop.labels), not 2 per class: with
5 % wrong labels every class has a few within minutes, most of the faults' wrong.

`--fans N` (or `fan-step` in --modes): a row of the second machine type, the fan
(sensor_sim/fan.py): its initial model trained on fan data (128 × 3 windows), the typed trainer
(`serve --site-file F --machine-type fan`), a node serving the fan type from the site file, the
simulator with N fans (and one seed machine, which no served type names), 5 % labels; the step
drift (a belt swap: shaft 25 → 30 Hz, vibration × 1.3, current + 1 A) is commanded on the fans.
The node's labels, kept windows and drift batches are the fan's (version 2 naming the type);
accuracies on 400 fresh fan windows, drifted and not.
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

from bench._plant_loop import (
    PLANT_MODES,
    AlarmTally,
    FailureLog,
    PlantLoop,
    attempts,
    drifting,
    eval_streams,
    plant_table,
    retarget,
    score_bundle,
)
from bench.drift_detection import MODES
from jetson_trainer.build.keys import generate_keypair, load_private_key
from jetson_trainer.build.pipeline import run_train
from jetson_trainer.daemon.serve import ServeConfig, TrainerDaemon
from nodekit.settings import build
from pi_edge import EdgeConfig, EdgeService
from pi_edge.model.classifier import Classifier
from protocol import Command, Topics, decode_bundle, encode_bundle, load_public_key
from protocol.machine_type import DEFAULT_TYPE
from scripts.broker import Broker
from sensor_sim import fan
from sensor_sim.dataset import write_datasets
from sensor_sim.drift import DriftSettings, apply, effect
from sensor_sim.fleet import FleetConfig, fan_ids
from sensor_sim.physics import sample
from sensor_sim.plant_dataset import write_plant_datasets
from sensor_sim.publisher import SimConfig, Simulator

from ._sites import site_toml


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
    plant: dict[str, object] | None = None  # plant- modes: macro-F1s, false alarms (_plant_loop)
    # after the onset, each change of what the node says: [s, model version, machines in
    # drift, machines suspect] (why a drift did not clear, or when it did)
    states: list[list[object]] = dataclasses.field(default_factory=list)


class StateLog:
    """Polls a node's model version and per-machine drift states from the onset on and keeps
    each change, seconds from the onset (a thread; `stop` ends it)."""

    def __init__(self, edge: EdgeService, onset: float, every_s: float = 0.2) -> None:
        self.rows: list[list[object]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(edge, onset, every_s), name="state-log", daemon=True
        )
        self._thread.start()

    def _run(self, edge: EdgeService, onset: float, every_s: float) -> None:
        last: tuple[object, ...] | None = None
        while not self._stop.wait(every_s):
            states = edge.drift.machine_states()
            now = (
                edge.model_version,
                sorted(m for m, st in states.items() if st == "drift"),
                sorted(m for m, st in states.items() if st == "suspect"),
            )
            if now != last:
                self.rows.append([round(time.monotonic() - onset, 1), *now])
                last = now

    def stop(self) -> list[list[object]]:
        self._stop.set()
        self._thread.join(timeout=5)
        return self.rows


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


FAN_MODES: dict[str, Command] = {"fan-step": Command("drift", mode="step")}  # on the fans
FAN_SITE = site_toml([fan.FAN_TYPE])


def fan_accuracy(bundle_path: Path, public: Path, seed: int) -> tuple[float, float]:
    """(drifted, original) accuracy of a fan bundle on 400 fresh fan windows each (the step
    drift: the belt swap in full)."""
    bundle = decode_bundle(bundle_path.read_bytes(), load_public_key(public))
    clf = Classifier(bundle.model, bundle.manifest)
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(4), 100)
    drifted, original = fan.generate(y, rng, blend=1.0), fan.generate(y, rng)
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
    return bool(edge.drift.machine_states()) and edge.drift.overall() == "ok"


def _none_in_drift(edge: EdgeService) -> bool:
    """No machine's drift detector says drift (`suspect` allowed), nor the pooled accuracy one.

    The plant's "cleared": at 600 plant seconds a second, the 20 s hold is 3.3 plant hours, in
    which developing faults put some machine into `suspect` every few plant minutes (the
    detector's floor on an undrifted plant, bench.plant), so "every machine ok" would measure
    the faults, not the healing.
    """
    states = edge.drift.machine_states()
    return (
        bool(states)
        and "drift" not in states.values()
        and edge.drift.detail().to_json_obj()["accuracy_state"] != "drift"
    )


def run_mode(
    mode: str,
    command: Command,
    work: Path,
    data: Path,
    initial: Path,
    keys: tuple[Path, Path],
    timeout: float,
    clear_timeout: float = 60.0,
    labels_needed: int = 48,
    per_class: int = 2,
    plant: PlantLoop | None = None,
    ask: bool = False,
    fans: int = 0,
) -> Recovery:
    """One live run of `mode`; with `plant`, on the realistic plant (bench/_plant_loop.py);
    with `fans`, of the fan type on N fans (the node serves the fan type alone: its model
    version and drift are the node's)."""
    private, public = keys
    run = work / mode
    shutil.copytree(initial, run / "models" / "v0001")
    topics = Topics(f"bench/{mode}")
    typed: dict[str, object] = {}  # the trainer's and the node's machine type settings
    if fans:
        site = run / "site.toml"
        site.write_text(FAN_SITE)
        typed = {"site_file": site, "machine_type": "fan"}
        command = dataclasses.replace(command, machines=fan_ids(fans))
    # the shared initial model, bound to this mode's site (a Pi refuses another site's bundle)
    path = run / "models" / "v0001" / "model.bundle"
    bundle = decode_bundle(path.read_bytes(), load_public_key(public))
    manifest = dataclasses.replace(bundle.manifest, site=topics.prefix)
    path.write_bytes(encode_bundle(manifest, bundle.model, load_private_key(private).sign))
    with Broker(run_dir=run / "broker") as broker:
        daemon = (
            TrainerDaemon(
                ServeConfig(
                    broker=broker.address,
                    prefix=topics.prefix,
                    store=run / "trainer",
                    private_key=private,
                    data=data,
                    models=run / "models",
                    client_id=f"trainer-{mode}",
                    labels_needed=labels_needed,
                    labels_per_class=per_class,
                    finetune_epochs=30,
                    **typed,  # type: ignore[arg-type]
                )
            )
            .start()
            .start_policy()
        )
        edge = EdgeService(
            build(
                EdgeConfig,
                broker=broker.address,
                prefix=topics.prefix,
                node=f"pi-{mode}",
                public_key=public,
                state_dir=run / "edge",
                dashboard=False,
                status_interval_s=0.5,
                label_hold_windows=1024 if plant is None else plant.label_hold_windows,  # default
                **({"site": typed["site_file"], "types": ("fan",)} if fans else {}),
            ),
            public_key=load_public_key(public),
        ).start()
        sim = Simulator(
            SimConfig(
                broker=broker.address,
                prefix=topics.prefix,
                node=f"sim-{mode}",
                seed=3,
                fleet=FleetConfig(
                    machines=1 if fans else 16,
                    fans=fans,
                    label_fraction=0.0 if ask else 0.05,
                    mtbf_s=30,
                    repair_s=30,
                ),
                # --ask-labels: no label in the windows; the node asks for the windows it is
                # least sure of and the simulator, as a technician, answers after 1 s
                answer_label_requests=ask,
                label_answer_delay_s=1.0,
                realism="seed" if plant is None else "plant",
                time_scale=1.0 if plant is None else plant.time_scale,
            )
        )
        tally, failures = AlarmTally(), FailureLog()
        logging.getLogger("jetson_trainer.daemon.serve").addHandler(failures)
        stop = threading.Event()
        try:
            edge.wait_for_model(1, 30)
            poll(lambda: edge.broker_state == "connected", 10)
            sim.start()
            threading.Thread(target=lambda: sim.run(stop), daemon=True).start()
            if plant is None:
                time.sleep(15)
            else:  # undrifted plant traffic: count the detector's false drift alarms
                warm_end = time.monotonic() + plant.warmup_s
                while time.monotonic() < warm_end:
                    tally.update(edge.drift.overall(), edge.drift.machine_states())
                    time.sleep(0.1)
            attempt_before = daemon.state.last_attempt  # a fine-tune before the onset: a false one
            version_before = edge.model_version
            batches_before = daemon.state.batches
            onset, onset_wall = time.monotonic(), time.time()
            log_states = StateLog(edge, onset)
            states = edge.drift.machine_states()
            quiet = [m for m, st in states.items() if st != "drift"]
            alarmed = sorted(set(states) - set(quiet))  # in drift before the onset: false alarms
            at_onset = edge.drift.overall()
            if plant is not None:  # not on a machine already flagged by a false alarm
                command = retarget(command, quiet)
            sim.send_command(command)
            if plant is None:
                detect = poll(lambda: edge.drift.overall() == "drift", timeout)
            else:  # a commanded machine not already alarmed (false alarms do not count)
                detect = poll(
                    lambda: drifting(edge.drift.machine_states(), command.machines, quiet),
                    timeout,
                )
            first = poll(
                lambda: daemon.state.batches > batches_before, timeout - (time.monotonic() - onset)
            )
            first = None if first is None else time.monotonic() - onset
            live = poll(
                lambda: edge.model_version not in (None, version_before),
                timeout - (time.monotonic() - onset),
            )
            live = None if live is None else time.monotonic() - onset
            # drift cleared: every machine's detector back to ok, and staying ok for HOLD_S (a
            # swap starts the detectors over at ok: only a lasting ok counts); the clock runs
            # from the onset
            cleared = None
            if detect is not None:
                settled = _all_ok if plant is None else _none_in_drift
                cleared = held_ok(lambda: settled(edge), clear_timeout, HOLD_S)
                cleared = None if cleared is None else cleared - onset
            end_levels = edge.drift.detail().to_json_obj()
            timeline = log_states.stop()
            elapsed = time.monotonic() - onset
            policy = daemon.state.policy
        finally:
            logging.getLogger("jetson_trainer.daemon.serve").removeHandler(failures)
            stop.set()
            sim.close()
            edge.stop()
            daemon.stop()
    attempt = daemon.state.last_attempt
    gate = attempt.decision.reason if attempt else "no fine-tune started"
    after = labels = None
    current = run / "edge" / ("types/fan/models" if fans else "models") / "current.bundle"
    if live is not None:
        labels = decode_bundle(current.read_bytes(), None, allow_unsigned=True).manifest.extra.get(
            "labels_used"
        )
    plant_figures = None
    if fans:
        before = fan_accuracy(initial / "model.bundle", public, seed=7)
        if live is not None:
            after = fan_accuracy(current, public, seed=7)
    elif plant is None:
        before = accuracy(initial / "model.bundle", public, command, elapsed, seed=7)
        if live is not None:
            after = accuracy(current, public, command, elapsed, seed=7)
    else:  # macro-F1 (TRUE classes) of the old and new model on fresh plant windows
        streams = eval_streams(command, elapsed, plant.eval_hours, seed=7)
        old = score_bundle(initial / "model.bundle", public, streams)
        new = score_bundle(current, public, streams) if live is not None else None
        before = (old["drifted"]["macro_f1"], old["undrifted"]["macro_f1"])
        if new is not None:
            after = (new["drifted"]["macro_f1"], new["undrifted"]["macro_f1"])
        plant_figures = {
            "old": old,
            "new": new,
            "eval_windows": len(streams.true),
            "eval_fault_share": float((streams.true != 0).mean()),
            "warmup_s": plant.warmup_s,
            "false_drift_alarms": tally.overall,
            "false_machine_drift_alarms": tally.machine,
            "finetune_before_onset": attempt_before is not None,
            "version_at_onset": version_before,
            "time_scale": plant.time_scale,
            "label_hold_windows": plant.label_hold_windows,
            "label_wait_s": list(plant.label_wait_s()),
            "label_events_sent": getattr(sim.fleet, "label_events", None),
            "machines": list(command.machines),
            "policy_at_end": policy,
            "overall_at_onset": at_onset,
            "machines_in_drift_at_onset": alarmed,
            "attempts": attempts(run / "trainer" / "model_registry.jsonl", onset_wall),
            "failed_finetunes": [(round(t - onset, 1), why) for t, why in failures.failures],
        }
    return Recovery(
        mode, detect, first, live, labels, before, after, gate, cleared, end_levels,
        command.params, plant_figures, timeline,
    )  # fmt: skip


def _given(value: int | None, default: int) -> int:
    return default if value is None else value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--modes",
        help=f"comma-separated of {list(MODES)} (default: all of them) or the realistic plant's "
        f"{list(PLANT_MODES)}",
    )
    p.add_argument(
        "--plant",
        action="store_true",
        help="the realistic plant's row set (bench/_plant_loop.py): plant-step,plant-step-all",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="with --plant: plant-step-all only and a smaller initial data set (about 5 minutes)",
    )
    p.add_argument("--timeout", type=float, default=150.0, help="seconds per mode after onset")
    p.add_argument(
        "--fans",
        type=int,
        default=0,
        help="also the fan type's row (fan-step) with N fans (default 4 when fan-step is in "
        "--modes)",
    )
    p.add_argument("--work", type=Path, help="working dir (default: a temp dir)")
    p.add_argument("--json", type=Path, help="also write the per-mode results here")
    p.add_argument(
        "--labels",
        type=int,
        default=None,
        help="the trainer's --labels: most labels it waits for (default 48; plant: 1000)",
    )
    p.add_argument(
        "--labels-per-class",
        type=int,
        default=None,
        help="the trainer's --labels-per-class: it fine-tunes once every class has this many "
        "(default 2; plant: 0, off)",
    )
    p.add_argument(
        "--ask-labels",
        action="store_true",
        help="no labels in the windows: the node asks for labels and the simulator answers",
    )
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
    plant = PlantLoop.quick() if args.quick else PlantLoop()
    if args.modes:
        modes = args.modes.split(",")
    elif args.plant:
        modes = ["plant-step-all"] if args.quick else ["plant-step", "plant-step-all"]
    else:
        modes = list(MODES)
    if args.fans and "fan-step" not in modes:
        modes.append("fan-step")
    fans = args.fans or 4
    known = [*MODES, *PLANT_MODES, *FAN_MODES]
    unknown = [m for m in modes if m not in known]
    if unknown:
        p.error(f"unknown mode(s) {unknown}; choose from {known}")
    work = args.work or Path(tempfile.mkdtemp(prefix="edgeloop-recovery-"))
    keys = generate_keypair(work / "keys")
    # the initial compact model of each kind of data the modes need: seed 000's, the plant's
    initial: dict[str, tuple[Path, Path, float]] = {}  # kind → (data, model dir, train s)
    kinds = {"seed": MODES, "plant": PLANT_MODES, "fan": FAN_MODES}
    for kind in ("seed", "plant", "fan"):
        if not any(m in kinds[kind] for m in modes):
            continue
        data = work / {"seed": "data", "plant": "plant_data", "fan": "fan_data"}[kind]
        if kind == "seed":
            write_datasets(data, seed=42)
        elif kind == "fan":
            write_datasets(data, seed=42, sim_type="fan")
        else:  # labels as a trainer gets them on the plant: 5 % of windows, 5 % wrong
            write_plant_datasets(
                data, 42, machines=16, hours=plant.hours, test_hours=plant.test_hours
            )
        x, y = np.load(data / "train_data.npy"), np.load(data / "train_labels.npy")
        t0 = time.monotonic()
        out = work / {"seed": "initial", "plant": "plant_initial", "fan": "fan_initial"}[kind]
        run_train(
            x,
            y,
            out,
            private_key=keys[0],
            epochs=plant.epochs if kind == "plant" else 40,
            figures=False,
            verbose=0,
            time_repeats=10,
            quantizations=("int8",),
            kind=fan.FAN_TYPE if kind == "fan" else DEFAULT_TYPE,
        )
        initial[kind] = (data, out, time.monotonic() - t0)
        print(f"initial compact model ({kind}, {len(y)} windows) trained in "
              f"{initial[kind][2]:.0f} s", flush=True)  # fmt: skip
    train_s = initial["seed"][2] if "seed" in initial else None
    results: list[Recovery] = []
    plant_results: list[Recovery] = []
    for mode in modes:
        on_plant, on_fans = mode in PLANT_MODES, mode in FAN_MODES
        command = PLANT_MODES[mode] if on_plant else FAN_MODES[mode] if on_fans else MODES[mode]
        if mode == "ramp":
            command = dataclasses.replace(command, params={"duration_s": args.ramp_s})
        data, model_dir, _ = initial["plant" if on_plant else "fan" if on_fans else "seed"]
        (plant_results if on_plant else results).append(
            run_mode(
                mode,
                command,
                work,
                data,
                model_dir,
                keys,
                plant.timeout_s if on_plant else args.timeout,
                plant.clear_timeout_s if on_plant else args.clear_timeout,
                _given(args.labels, plant.labels if on_plant else 48),
                _given(args.labels_per_class, plant.per_class if on_plant else 2),
                plant if on_plant else None,
                args.ask_labels,
                fans if on_fans else 0,
            )
        )
        r = (plant_results if on_plant else results)[-1]
        print(
            f"{mode}: detect {r.detect_s} first batch {r.first_batch_s} live {r.live_s} "
            f"cleared {r.cleared_s} gate: {r.gate}",
            flush=True,
        )
    if results:
        print(
            "\n| drift mode | onset → drift state (s) | → first batch stored (s) | → new model "
            "live (s) | → drift cleared (s) | labels used | drifted acc. before → after | "
            "original acc. before → after |"
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
    if plant_results:
        print()
        print(plant_table([dataclasses.asdict(r) for r in plant_results]))
        for r in plant_results:  # what the detector and the trainer did (t: s from onset)
            pl = r.plant or {}
            print(
                f"{r.mode}: in drift at the onset {pl.get('machines_in_drift_at_onset')}; "
                f"fine-tunes {pl.get('attempts')}; failed {pl.get('failed_finetunes')}"
            )
    for r in results + plant_results:
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
                f"machines still alarmed: {still}; the last changes [s, model, drift, "
                f"suspect]: {r.states[-6:]}"
            )
    if args.json:
        out = {
            "initial_train_s": train_s,
            "timeout_s": args.timeout,
            "modes": [dataclasses.asdict(r) for r in results],
        }
        if plant_results:  # the realistic plant's rows (bench.report: drift section)
            out["plant_initial_train_s"] = initial["plant"][2]
            out["plant_loop"] = dataclasses.asdict(plant)
            out["plant_modes"] = [dataclasses.asdict(r) for r in plant_results]
        args.json.write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
