"""Cold start on the realistic plant: an anomaly model from normal running only, then the fault
classes technicians name (issue 24, item 4).

`python -m bench.cold_start [--json FILE] [--quick] [--seed N]`

1. **History.** A 16-machine plant (`sensor_sim.plant`, `--realism plant`: rare developing
   faults, correlated channels, per-machine baselines, sensor artefacts), one window per
   machine every `PERIOD_S` plant seconds for `hours`. The cold start knows no fault: the
   anomaly model (jetson_trainer/build/anomaly.py, TensorFlow in this process: these are
   quality figures, not speed) is trained on the history's windows whose machine was running
   normally (true class), the last tenth of them kept apart as the growth gate's holdout.
2. **Stream.** The same plant's next `stream_hours`, replayed through pi_edge's own serving
   pieces: the bundle vetted as on a node (`build_model`: LiteRT, golden scores), the
   `AnomalyScorer`'s verdicts, and the `Debouncer` of the machine state (pi_edge default, 5
   windows). Scored against the TRUE class: time from a fault's onset (its first window; the
   fault develops from severity 0) to the machine's debounced state `anomaly`, per episode
   (median, 90th percentile, detected before the episode ended); false `anomaly` events per
   machine-hour (the state turns to `anomaly` while the machine is truly normal, over the
   machines' truly normal hours); the share of normal windows flagged.
3. **Class growth.** In stream order, a technician inspects each fault episode the anomaly
   model detected and labels the first `labels_per_episode` windows it flagged from then on
   with the episode's TRUE class (a technician at the machine, unlike the plant's 5 % wrong
   labels). As in the trainer daemon (jetson_trainer/daemon/growth.py), once a class the model
   does not know has 4 labels the class list grows (jetson_trainer/build/class_growth.py: every
   label of the classes it grows to, the normal history, gated on the old classes' holdout).
   Each grown model is scored on a fresh plant stream (`eval_hours`, another seed): macro-F1
   over the four true classes (a class it does not know yet counts as missed) and over the
   classes it knows (windows of the others left out).

The detection figures come from the anomaly model (v1) alone. A grown classifier carries an
anomaly head (jetson_trainer/build/anomaly_head.py): each growth step reports the share of the
evaluation windows of each class it does not know yet that the node calls `anomaly`, and that
share on truly normal windows (false anomalies); the labels of later classes in step 3 still
come from v1's detections.

--quick: 24 h history, 24 h stream, 12 h evaluation; default 48 h, 48 h, 24 h.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench import quality
from protocol import CLASSES, DEFAULT_PREFIX, decode_bundle
from protocol.machine_type import DEFAULT_TYPE
from sensor_sim.fleet import machine_ids
from sensor_sim.plant import PlantConfig, PlantStream, simulate

log = logging.getLogger("bench.cold_start")

MACHINES = 16
PERIOD_S = 60.0  # plant seconds between two windows of a machine


@dataclass(frozen=True, slots=True)
class Run:
    hours: float = 48.0
    stream_hours: float = 48.0
    eval_hours: float = 24.0
    labels_per_episode: int = 8
    epochs: int = 30

    @classmethod
    def quick(cls) -> Run:
        return cls(hours=24.0, stream_hours=24.0, eval_hours=12.0)


def _plant(hours: float, seed: int, warmup_h: float = 0.0) -> PlantStream:
    config = PlantConfig()
    ticks = round(hours * 3600 / PERIOD_S)
    return simulate(
        config,
        machine_ids(MACHINES),
        ticks,
        PERIOD_S / config.time_scale,
        np.random.default_rng(seed),
        warmup_s=warmup_h * 3600,
    )


def _debounced(
    verdict: npt.NDArray[np.int64], confidence: npt.NDArray[np.float32], s: PlantStream
) -> npt.NDArray[np.int64]:
    """The debounced state per window (−1 unknown, 0 normal, 1 anomaly), as the node's."""
    from pi_edge.report.debounce import Debouncer

    names = (DEFAULT_TYPE.normal, "anomaly")
    deb = Debouncer(normal=DEFAULT_TYPE.normal)
    out = np.empty(len(verdict), np.int64)
    for i, (v, c, m, t) in enumerate(
        zip(verdict.tolist(), confidence.tolist(), s.machine.tolist(), s.time_s, strict=True)
    ):
        ident = s.ids[m]
        deb.update(ident, names[v], c, float(t))
        cur = deb.current(ident)
        out[i] = -1 if cur is None else names.index(cur)
    return out


def _serve(bundle_bytes: bytes) -> Any:
    """The bundle vetted as a node vets it (LiteRT, golden vectors/scores)."""
    from pi_edge.model.vetting import Expected, build_model

    b = decode_bundle(bundle_bytes, None, allow_unsigned=True)
    return build_model(b, expected=Expected(CLASSES, None, None))


def detection(model: Any, s: PlantStream) -> dict[str, Any]:
    """Onset → anomaly state per episode, false anomaly events per machine-hour, flag rates."""
    probs = model.classifier.predict(s.data)
    verdict = probs.argmax(axis=1)
    state = _debounced(verdict, probs.max(axis=1), s)
    first = float(s.time_s.min())
    every = quality.episodes(s.true, s.machine, s.time_s)
    found = [e for e in every if e.onset > first]  # not one already under way at the start
    delays = quality.detection_delays(found, state, s.machine, s.time_s)
    normal = s.true == 0
    healthy_h = float(normal.sum()) * PERIOD_S / 3600.0
    false_events = quality.false_fault_events(state, s.true, s.machine)
    flagged = {
        CLASSES[c]: round(float(verdict[s.true == c].mean()), 4)
        for c in range(len(CLASSES))
        if (s.true == c).any()
    }
    developed = (s.true > 0) & (s.severity >= 0.5)
    minutes = [None if d is None else d / 60.0 for d in delays]
    return {
        "episodes": len(found),
        "episodes_under_way_at_start": len(every) - len(found),
        "detected": sum(d is not None for d in delays),
        "delay_min_median": quality.percentile(minutes, 50),
        "delay_min_p90": quality.percentile(minutes, 90),
        "false_anomaly_events": false_events,
        "healthy_machine_hours": round(healthy_h, 1),
        "false_anomaly_events_per_machine_hour": false_events / healthy_h
        if healthy_h
        else math.nan,
        "flagged_share_per_true_class": flagged,
        "flagged_share_developed_faults": round(float(verdict[developed].mean()), 4)
        if developed.any()
        else math.nan,
        "_verdict": verdict,
        "_found": found,
        "_delays": delays,
    }


def _f1s(model: Any, ev: PlantStream) -> dict[str, Any]:
    """Macro-F1 against the true classes: over all four, and over the classes it knows (a
    window its anomaly head flags counts as none of them); the head's `anomaly` share on the
    windows of each class it does not know yet, and on truly normal windows."""
    served = model.classes
    to_type = np.array([CLASSES.index(c) if c in CLASSES else -1 for c in served])
    top = model.classifier.predict(ev.data).argmax(axis=1)
    pred = to_type[top]
    anomaly = pred < 0
    known = np.isin(ev.true, to_type)
    k = len(CLASSES)
    unknown = {
        CLASSES[c]: round(float(anomaly[ev.true == c].mean()), 4)
        for c in range(len(CLASSES))
        if c not in to_type and (ev.true == c).any()
    }
    return {
        "classes": list(served),
        "anomaly_share_unknown_classes": unknown,
        "anomaly_share_normal": round(float(anomaly[ev.true == 0].mean()), 5),
        "macro_f1_all": round(quality.macro_f1(ev.true, pred, k), 4),
        "macro_f1_known": round(quality.macro_f1(ev.true[known], pred[known], k), 4),
        "recall": {
            c: round(r, 4)
            for c, r in zip(
                CLASSES,
                quality.per_class_recall(ev.true, np.where(anomaly, k, pred), k + 1)[:k],
                strict=True,
            )
            if not math.isnan(r)
        },
    }


def growth(
    run: Run,
    det: dict[str, Any],
    s: PlantStream,
    ev: PlantStream,
    champion: Any,
    history: npt.NDArray[np.float32],
    holdout: npt.NDArray[np.float32],
    work: Path,
) -> list[dict[str, Any]]:
    """The technician's labels of detected episodes, in stream order; a growth per new class."""
    from jetson_trainer.build.class_growth import grow
    from jetson_trainer.daemon.growth import MIN_NEW_LABELS, pending

    verdict = det["_verdict"]
    xs: list[npt.NDArray[np.float32]] = []
    names: list[str] = []
    steps: list[dict[str, Any]] = []
    current = champion
    version = 1
    for ep, delay in zip(det["_found"], det["_delays"], strict=True):
        if delay is None:
            continue
        idx = np.flatnonzero(
            (s.machine == ep.machine)
            & (s.time_s >= ep.onset + delay)
            & (s.time_s < ep.end)
            & (verdict == 1)
        )[: run.labels_per_episode]
        if not idx.size:
            continue
        xs.append(s.data[idx])
        names.extend([CLASSES[ep.cls]] * len(idx))
        y = np.array([CLASSES.index(n) for n in names], np.int64)
        new = pending(CLASSES, current.bundle.manifest.classes, y, MIN_NEW_LABELS)
        if not new:  # as the daemon: 4 labels of a class before it grows by it
            continue
        cls = ", ".join(new)
        version += 1
        old = current.bundle.manifest.classes
        keep = [i for i, n in enumerate(names) if n in old and n != DEFAULT_TYPE.normal]
        grows_to = set(old) | set(new)  # a class with fewer labels than that: not yet
        use = [i for i, n in enumerate(names) if n in grows_to]
        x_lab = np.concatenate(xs)
        hx = np.concatenate([holdout, x_lab[keep]]) if keep else holdout
        hn = [DEFAULT_TYPE.normal] * len(holdout) + [names[i] for i in keep]
        t0 = time.monotonic()
        g = grow(
            DEFAULT_TYPE,
            current.bundle,
            history,
            (hx, hn),
            (x_lab[use], [names[i] for i in use]),
            work / f"v{version}",
            version=version,
            site=DEFAULT_PREFIX,
            epochs=run.epochs,
        )
        step: dict[str, Any] = {
            "version": version,
            "new_class": cls,
            "at_stream_h": round(float(s.time_s[idx[-1]] - s.time_s[0]) / 3600, 2),
            "labels": {n: names.count(n) for n in sorted(grows_to - {DEFAULT_TYPE.normal})},
            "gate": g.report["gate"],
            "head": {
                k: g.report["anomaly_head"][k]
                for k in ("quantization", "tolerance_deg", "verdict_agreement")
            },
            "train_s": round(time.monotonic() - t0, 1),
        }
        if g.bundle_path is not None:
            current = _serve(g.bundle_path.read_bytes())
            step.update(_f1s(current, ev))
        else:
            version -= 1
        steps.append(step)
        log.info("growth step: %s", {k: v for k, v in step.items() if k != "recall"})
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cold_start", description=__doc__)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--quick", action="store_true", help="shorter plant spans")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--work", type=Path, help="keep the bundles here (default: a temp dir)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    run = Run.quick() if args.quick else Run()
    from jetson_trainer.build.anomaly import run_train_anomaly

    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        whole = _plant(run.hours + run.stream_hours, args.seed)
        n_hist = round(run.hours * 3600 / PERIOD_S) * MACHINES
        normal = whole.data[:n_hist][whole.true[:n_hist] == 0]
        cut = len(normal) - len(normal) // 10
        history, holdout = normal[:cut], normal[cut:]
        t0 = time.monotonic()
        run_train_anomaly(history, None, work / "v1", kind=DEFAULT_TYPE, site=DEFAULT_PREFIX)
        train_s = time.monotonic() - t0
        v1 = _serve((work / "v1" / "model.bundle").read_bytes())
        stream = PlantStream(
            whole.ids,
            *(getattr(whole, f)[n_hist:] for f in PlantStream.__dataclass_fields__ if f != "ids"),
        )
        det = detection(v1, stream)
        ev = _plant(run.eval_hours, args.seed + 1000, warmup_h=run.hours)
        steps = growth(run, det, stream, ev, v1, history, holdout, work)
    figures = {
        "run": {
            "machines": MACHINES,
            "period_s": PERIOD_S,
            "history_h": run.hours,
            "stream_h": run.stream_hours,
            "eval_h": run.eval_hours,
            "labels_per_episode": run.labels_per_episode,
            "seed": args.seed,
            "normal_windows_fitted": len(history),
            "anomaly_train_s": round(train_s, 1),
            "threshold": float(v1.bundle.manifest.anomaly["threshold"]),
            "wall_s": round(time.monotonic() - started, 1),
        },
        "detection": {k: v for k, v in det.items() if not k.startswith("_")},
        "growth": steps,
    }
    text = json.dumps(figures, indent=1, default=float)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
