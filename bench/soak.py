"""Soak: a real pi_edge process under a steady fleet for minutes, with drift injected part way.

`python -m bench.soak [--machines 100] [--hz 10] [--minutes 10] [--drift-at 0.5] [--out FILE]`

One private Mosquitto; pi_edge as its own process (so /proc/PID gives its own RSS and CPU
time), started from a freshly trained, signed compact model (bench.edge.make_model, in
subprocesses); the trainer daemon as a process too unless --no-trainer; the live simulator
(`python -m sensor_sim run`) publishing N machines × H Hz. After --warmup seconds of traffic the
soak clock starts (t = 0); at --drift-at × the soak length the simulator's own drift command
(bench.drift_detection.MODES, sent on …/sim/control) hits every machine.

Every --sample-s seconds: pi_edge's VmRSS and CPU time in the interval (from /proc), and from
the retained statuses on the broker: windows sent (simulator), classified, inbox depth, drops,
error counters, drift state and model version (pi_edge), the trainer's phase. Statuses are read
as plain JSON, so fields a newer pi_edge adds (a `degraded` state, fault counters) are kept.

Output: a summary printed and written to --out (Markdown, or JSON if it ends in .json) and the
raw samples as CSV next to it (same name, .csv). The summary gives RSS at start (after warm-up),
at the drift point and at the end (flat = end/start ratio and the least-squares slope in
MB/min), max inbox depth, drops, errors by kind, windows sent vs classified, seconds from the
drift command to pi_edge's drift state and, with a trainer, to a new model serving and to the
drift state back at ok.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from bench.drift_detection import MODES
from bench.edge import cpu_seconds, make_model, peak_rss_mb
from nodekit.mqtt import connect, make_client
from protocol import DEFAULT_PREFIX, Topics
from protocol.status_detail import DetailReader, ShipperDetail, TrainerPhase
from scripts.broker import Broker, _die_with_parent
from sensor_sim.publisher import send_command

log = logging.getLogger("bench.soak")

PY = sys.executable
NODE = "soak-pi"
SIM = "soak-sim"
TRAINER = "soak-trainer"


# ---- what is measured --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Point:
    """One pi_edge status as it arrived: `t` on the soak clock (s), and what it said."""

    t: float
    state: str
    drift: str | None
    model_version: int | None
    queue_depth: int | None


@dataclass(frozen=True, slots=True)
class Sample:
    """One row of the CSV: pi_edge's process figures and its latest status at time `t_s`.

    `t_s` is on the soak clock (negative during warm-up); `cpu_s` is pi_edge's user + system
    CPU time since the previous sample, `interval_s` that interval's length. Status fields are
    None while no status has said them; `sent` comes from the simulator's status (every 2 s)
    and `classified` from pi_edge's, so mid-run one may run ahead of the other.
    """

    t_s: float
    event: str  # "", "start", "drift", "end" or "drained"
    rss_mb: float
    cpu_s: float
    interval_s: float
    sent: int | None
    classified: int | None
    queue_depth: int | None
    drops: int | None
    errors: int | None
    error_kinds: str
    state: str | None
    drift: str | None
    model_version: int | None
    batches_sent: int | None
    batches_acked: int | None
    status_age_s: float | None
    trainer_rss_mb: float | None
    trainer_phase: str | None


@dataclass(frozen=True, slots=True)
class Summary:
    """The soak's result; `None` means "did not happen within the soak" (or not measured)."""

    machines: int
    hz: float
    soak_s: float
    warmup_s: float
    drift_mode: str
    drift_at_s: float | None  # when the drift command went out (None: pi_edge died before)
    status_interval_s: float  # the resolution of every "→" time below
    trainer: bool
    rss_start_mb: float
    rss_drift_mb: float
    rss_end_mb: float
    rss_ratio: float
    rss_slope_mb_per_min: float
    rss_peak_mb: float
    cpu_percent: float
    cpu_us_per_window: float
    max_queue_depth: int | None
    queue_capacity: int | None
    drops: int | None
    errors: dict[str, int]
    sent: int | None
    classified: int | None
    sim_late_ticks: int | None
    states_seen: list[str]
    false_alarms_before_drift: int
    suspect_s: float | None
    detect_s: float | None
    model_changes: list[tuple[float, int | None]]
    new_model_s: float | None
    back_to_ok_s: float | None
    pi_edge_exit: int | None
    tracebacks: int
    trainer_errors: dict[str, int] = field(default_factory=dict)
    final_metrics: dict[str, float] = field(default_factory=dict)

    def to_markdown(self) -> str:
        def s(v: float | None) -> str:
            return "not within the soak" if v is None else f"{v:.1f} s"

        lost = (
            "-"
            if self.sent is None or self.classified is None
            else f"{self.sent - self.classified:,}"
        )
        errors = ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items())) or "none"
        models = ", ".join(f"v{v} at {t:+.1f} s" for t, v in self.model_changes) or "no change"
        lines = [
            f"# edgeloop soak: {self.machines} machines × {self.hz:g} Hz for "
            f"{self.soak_s / 60:g} min (+{self.warmup_s:g} s warm-up), drift "
            f"'{self.drift_mode}' at {s(self.drift_at_s)}, trainer "
            f"{'on' if self.trainer else 'off'}",
            "",
            f"Times after the drift command come from pi_edge's statuses, one every "
            f"{self.status_interval_s:g} s.",
            "",
            "| figure | value |",
            "|---|---|",
            f"| pi_edge RSS start → drift → end | {self.rss_start_mb:.1f} → "
            f"{self.rss_drift_mb:.1f} → {self.rss_end_mb:.1f} MB |",
            f"| RSS end/start, slope | {self.rss_ratio:.3f}, "
            f"{self.rss_slope_mb_per_min:+.3f} MB/min |",
            f"| RSS peak (VmHWM) | {self.rss_peak_mb:.1f} MB |",
            f"| pi_edge CPU | {self.cpu_percent:.1f} % of a core, "
            f"{self.cpu_us_per_window:.0f} µs/window |",
            f"| windows sent / classified / not classified | {_n(self.sent)} / "
            f"{_n(self.classified)} / {lost} |",
            f"| inbox drops | {_n(self.drops)} |",
            f"| max inbox depth | {_n(self.max_queue_depth)} of {_n(self.queue_capacity)} |",
            f"| simulator late ticks | {_n(self.sim_late_ticks)} |",
            f"| pi_edge errors by kind | {errors} |",
            f"| pi_edge states seen | {', '.join(self.states_seen) or '-'} |",
            f"| pi_edge exit code | {_n(self.pi_edge_exit)} |",
            f"| tracebacks in pi_edge's log | {self.tracebacks} |",
            f"| drift alarms before the drift | {self.false_alarms_before_drift} |",
            f"| drift command → suspect | {s(self.suspect_s)} |",
            f"| drift command → drift | {s(self.detect_s)} |",
            f"| model versions (soak clock) | {models} |",
            f"| drift command → new model serving | {s(self.new_model_s)} |",
            f"| drift command → drift state back to ok | {s(self.back_to_ok_s)} |",
        ]
        if self.trainer:
            trainer_errors = ", ".join(f"{k} {v}" for k, v in sorted(self.trainer_errors.items()))
            lines.append(f"| trainer errors | {trainer_errors or 'none'} |")
        if self.final_metrics:
            metrics = ", ".join(f"{k} {v:g}" for k, v in sorted(self.final_metrics.items()))
            lines += ["", f"pi_edge's final metrics: {metrics}"]
        return "\n".join(lines) + "\n"


def _n(v: int | None) -> str:
    return "-" if v is None else f"{v:,}"


# ---- pure helpers ------------------------------------------------------------------------------
def slope_per_min(t_s: Sequence[float], values: Sequence[float]) -> float:
    """Least-squares slope of `values` per minute of `t_s` (0.0 with fewer than two points).

    >>> round(slope_per_min([0, 60, 120], [50.0, 51.0, 52.0]), 6)
    1.0
    >>> slope_per_min([0], [50.0])
    0.0
    """
    if len(t_s) < 2 or len(set(t_s)) < 2:
        return 0.0
    return float(np.polyfit(np.asarray(t_s) / 60.0, np.asarray(values), 1)[0])


def first_after(points: Sequence[Point], t0: float, pred: Callable[[Point], bool]) -> Point | None:
    """The first point at or after `t0` for which `pred` holds.

    >>> ps = [Point(1, "online", "ok", 1, 0), Point(3, "online", "drift", 1, 0)]
    >>> first_after(ps, 2, lambda p: p.drift == "drift").t
    3
    """
    return next((p for p in points if p.t >= t0 and pred(p)), None)


def alarms(points: Sequence[Point], start: float, end: float) -> int:
    """How many times the drift state turned to 'drift' in [start, end).

    >>> ps = [Point(t, "online", d, 1, 0) for t, d in enumerate(["ok", "drift", "ok", "drift"])]
    >>> alarms(ps, 0, 4), alarms(ps, 2, 4)
    (2, 1)
    """
    count, before = 0, None
    for p in points:
        if start <= p.t < end and p.drift == "drift" and before != "drift":
            count += 1
        before = p.drift
    return count


def _int(v: Any) -> int | None:
    """A counter from status JSON, or None if it is missing or not a finite number."""
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return int(v)


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _phase(status: Mapping[str, Any]) -> str | None:
    """The trainer's phase (text) from its status JSON, through the contract's codec."""
    phase = DetailReader(status.get("detail"), "trainer").get(TrainerPhase)
    return None if phase is None else phase.text


def summarise(
    samples: Sequence[Sample],
    points: Sequence[Point],
    *,
    args: argparse.Namespace,
    soak_s: float,
    drift_at: float | None,
    edge_status: Mapping[str, Any],
    trainer_status: Mapping[str, Any],
    sent: int | None,
    sim_late_ticks: int | None,
    rss_peak_mb: float,
    pi_edge_exit: int | None,
    tracebacks: int,
) -> Summary:
    """The figures of one soak from its samples and the pi_edge statuses it saw.

    `drift_at` is when the drift command went out on the soak clock (None: never); `sent` the
    simulator's final window count.
    """
    cut = math.inf if drift_at is None else drift_at
    soak = [s for s in samples if s.t_s >= 0] or list(samples)
    start = soak[0]
    drift_sample = next((s for s in soak if s.event == "drift"), soak[-1])
    end = next((s for s in reversed(soak) if s.event == "end"), soak[-1])
    timed = [s for s in soak if s.t_s <= end.t_s]
    classified = [(s.t_s, s.classified) for s in timed if s.classified is not None]
    cpu = sum(s.cpu_s for s in timed[1:])
    span = end.t_s - start.t_s
    done = classified[-1][1] - classified[0][1] if len(classified) > 1 else 0
    before = [p for p in points if p.t < cut]
    version_at_drift = before[-1].model_version if before else None
    suspect = first_after(points, cut, lambda p: p.drift in ("suspect", "drift"))
    detect = first_after(points, cut, lambda p: p.drift == "drift")
    newer = first_after(
        points,
        cut,
        lambda p: p.model_version is not None and p.model_version != version_at_drift,
    )
    back = first_after(points, detect.t, lambda p: p.drift == "ok") if detect is not None else None
    changes: list[tuple[float, int | None]] = []
    last: int | None = None
    for p in points:
        if p.state != "offline" and p.model_version != last:
            changes.append((round(p.t, 1), p.model_version))
            last = p.model_version
    final = [s for s in samples if s.classified is not None]
    depths = [p.queue_depth for p in points if p.queue_depth is not None]
    metrics = _dict(edge_status.get("metrics"))
    return Summary(
        machines=args.machines,
        hz=args.hz,
        soak_s=soak_s,
        warmup_s=args.warmup,
        drift_mode=args.drift_mode,
        drift_at_s=None if drift_at is None else round(drift_at, 2),
        status_interval_s=args.status_interval,
        trainer=args.trainer,
        rss_start_mb=start.rss_mb,
        rss_drift_mb=drift_sample.rss_mb,
        rss_end_mb=end.rss_mb,
        rss_ratio=round(end.rss_mb / start.rss_mb, 4) if start.rss_mb else math.nan,
        rss_slope_mb_per_min=round(
            slope_per_min([s.t_s for s in timed], [s.rss_mb for s in timed]), 4
        ),
        rss_peak_mb=round(rss_peak_mb, 1),
        cpu_percent=round(100.0 * cpu / span, 2) if span > 0 else math.nan,
        cpu_us_per_window=round(1e6 * cpu / done, 1) if done > 0 else math.nan,
        max_queue_depth=max(depths) if depths else None,
        queue_capacity=_int(metrics.get("queue_capacity")),
        drops=_int(metrics.get("drops")),
        errors={str(k): n for k, v in _dict(edge_status.get("errors")).items() if (n := _int(v))},
        sent=sent,
        classified=final[-1].classified if final else None,
        sim_late_ticks=sim_late_ticks,
        states_seen=sorted({p.state for p in points}),
        false_alarms_before_drift=alarms(points, 0.0, cut),
        suspect_s=None if suspect is None else round(suspect.t - cut, 1),
        detect_s=None if detect is None else round(detect.t - cut, 1),
        model_changes=changes,
        new_model_s=None if newer is None else round(newer.t - cut, 1),
        back_to_ok_s=None if back is None else round(back.t - cut, 1),
        pi_edge_exit=pi_edge_exit,
        tracebacks=tracebacks,
        trainer_errors={
            str(k): n for k, v in _dict(trainer_status.get("errors")).items() if (n := _int(v))
        },
        final_metrics={
            str(k): float(v)
            for k, v in metrics.items()
            if _int(v) is not None  # finite numbers only
        },
    )


# ---- the shell: processes, statuses, samples ---------------------------------------------------
def rss_mb(pid: int) -> float:
    """Resident set size of process `pid` now (VmRSS), MB; NaN once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return math.nan
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


class Watch:
    """Keeps the latest retained status of each node and a timeline of pi_edge's statuses.

    paho's thread only parses JSON (defensively: anything a newer node adds is kept, anything
    malformed is counted) and appends under a lock; the main thread reads copies.
    """

    def __init__(self, broker: str, topics: Topics) -> None:
        self._lock = threading.Lock()
        self._latest: dict[str, tuple[float, dict[str, Any]]] = {}
        self._points: list[tuple[float, Point]] = []
        self.sent_max = 0
        self.late_ticks: int | None = None
        self.bad = 0
        self._client = make_client(f"bench-soak-watch-{time.monotonic_ns()}")
        self._client.on_connect = lambda c, *a: c.subscribe(topics.statuses(), qos=1)
        self._client.on_message = self._on_message
        connect(self._client, broker)
        self._client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        now = time.monotonic()
        try:
            status = json.loads(msg.payload)
        except (ValueError, RecursionError):
            with self._lock:
                self.bad += 1
            return
        if not isinstance(status, dict):
            with self._lock:
                self.bad += 1
            return
        node = str(status.get("node"))
        metrics = _dict(status.get("metrics"))
        with self._lock:
            if status.get("state") != "offline" or node not in self._latest:
                self._latest[node] = (now, status)
            if node == SIM:
                sent = _int(metrics.get("windows_total"))
                self.sent_max = max(self.sent_max, sent or 0)
                late = _int(metrics.get("late_ticks"))
                self.late_ticks = late if late is not None else self.late_ticks
            if node == NODE:
                drift = status.get("drift")
                point = Point(
                    0.0,
                    str(status.get("state")),
                    drift if isinstance(drift, str) else None,
                    _int(status.get("model_version")),
                    _int(metrics.get("queue_depth")),
                )
                self._points.append((now, point))

    def latest(self, node: str) -> tuple[float, dict[str, Any]] | None:
        with self._lock:
            return self._latest.get(node)

    def points(self, origin: float) -> list[Point]:
        """pi_edge's statuses so far, timed on the soak clock that starts at `origin`."""
        with self._lock:
            return [
                Point(round(t - origin, 3), p.state, p.drift, p.model_version, p.queue_depth)
                for t, p in self._points
            ]

    def wait_for(self, node: str, cond: Callable[[dict[str, Any]], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.latest(node)
            if got is not None and cond(got[1]):
                return True
            time.sleep(0.2)
        return False

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


class Sampler:
    """Takes one `Sample` of pi_edge (and the trainer) at a time; remembers the CPU clock."""

    def __init__(self, watch: Watch, edge_pid: int, trainer_pid: int | None, origin: float):
        self.watch = watch
        self.edge_pid = edge_pid
        self.trainer_pid = trainer_pid
        self.origin = origin
        self.samples: list[Sample] = []
        self._cpu = cpu_seconds(edge_pid)
        self._at = time.monotonic()

    def take(self, event: str = "") -> Sample:
        now = time.monotonic()
        try:
            cpu = cpu_seconds(self.edge_pid)
        except OSError:  # pi_edge is gone: no CPU figure for this interval
            cpu = self._cpu
        got = self.watch.latest(NODE)
        received, status = got if got is not None else (now, {})
        metrics = _dict(status.get("metrics"))
        shipper = DetailReader(status.get("detail"), "edge").get(ShipperDetail)
        errors = {str(k): n for k, v in _dict(status.get("errors")).items() if (n := _int(v))}
        trainer = self.watch.latest(TRAINER)
        sample = Sample(
            t_s=round(now - self.origin, 3),
            event=event,
            rss_mb=round(rss_mb(self.edge_pid), 3),
            cpu_s=round(cpu - self._cpu, 3),
            interval_s=round(now - self._at, 3),
            sent=self.watch.sent_max,
            classified=_int(metrics.get("classified")),
            queue_depth=_int(metrics.get("queue_depth")),
            drops=_int(metrics.get("drops")),
            errors=sum(errors.values()) if got is not None else None,
            error_kinds=";".join(f"{k}={v}" for k, v in sorted(errors.items())),
            state=status.get("state") if got is not None else None,
            drift=status.get("drift") if got is not None else None,
            model_version=_int(status.get("model_version")),
            batches_sent=None if shipper is None else shipper.batches_sent,
            batches_acked=None if shipper is None else shipper.batches_acked,
            status_age_s=round(now - received, 2) if got is not None else None,
            trainer_rss_mb=None if self.trainer_pid is None else round(rss_mb(self.trainer_pid), 1),
            trainer_phase=None if trainer is None else _phase(trainer[1]),
        )
        self._cpu, self._at = cpu, now
        self.samples.append(sample)
        log.info(
            "t=%+7.1f s %-7s RSS %6.1f MB CPU %5.1f %% sent %s classified %s depth %s drops %s "
            "errors %s drift %s model v%s",
            sample.t_s,
            event,
            sample.rss_mb,
            100 * sample.cpu_s / sample.interval_s if sample.interval_s else 0.0,
            sample.sent,
            sample.classified,
            sample.queue_depth,
            sample.drops,
            sample.errors,
            sample.drift,
            sample.model_version,
        )
        return sample


def spawn(cmd: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start one role as its own process, its output to `log_path`; it dies with this one."""
    out = log_path.open("wb")
    return subprocess.Popen(
        cmd,
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, safe before exec
    )


def stop(proc: subprocess.Popen[bytes] | None, timeout: float = 20.0) -> int | None:
    """SIGTERM, then SIGKILL after `timeout`; the exit code (None if never started)."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("pid %d ignored SIGTERM for %.0f s; killing it", proc.pid, timeout)
            proc.kill()
            proc.wait(timeout=5)
    return proc.returncode


def prepare(work: Path) -> tuple[Path, Path, Path]:
    """(bundle, public key, private key): the model of a previous run in `work`, else a new one."""
    bundle, pub = work / "model" / "model.bundle", work / "keys" / "trainer_ed25519.pub.pem"
    if not (bundle.exists() and pub.exists()):
        log.info("training the initial compact model in %s (subprocesses)", work)
        bundle, pub = make_model(work)
    return bundle, pub, work / "keys" / "trainer_ed25519.pem"


def run(args: argparse.Namespace) -> Summary:
    """The whole soak; returns its summary and writes the CSV and the summary file."""
    soak_s = args.minutes * 60.0
    drift_at = args.drift_at * soak_s
    work: Path = args.work or Path(tempfile.mkdtemp(prefix="edgeloop-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    bundle, pub, private = prepare(work)
    run_dir = work / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir()
    topics = Topics(DEFAULT_PREFIX)
    procs: dict[str, subprocess.Popen[bytes] | None] = {"sim": None, "edge": None, "trainer": None}
    edge_exit: int | None = None
    with Broker(run_dir=run_dir / "broker") as broker:
        watch = Watch(broker.address, topics)
        try:
            if args.trainer:
                shutil.copytree(bundle.parent, run_dir / "models" / "v0001")
                procs["trainer"] = spawn(
                    [
                        PY,
                        "-m",
                        "jetson_trainer",
                        "serve",
                        "--broker",
                        broker.address,
                        "--store",
                        str(run_dir / "trainer"),
                        "--models",
                        str(run_dir / "models"),
                        "--data",
                        str(work / "data"),
                        "--private-key",
                        str(private),
                        "--client-id",
                        TRAINER,
                        "--no-dashboard",
                    ],
                    run_dir / "trainer.log",
                )
                if not watch.wait_for(
                    TRAINER, lambda s: s.get("model_version") is not None, args.ready_timeout
                ):
                    raise SystemExit(
                        f"error: the trainer published no champion within {args.ready_timeout:g}"
                        f" s; see {run_dir / 'trainer.log'}"
                    )
            edge = procs["edge"] = spawn(
                [
                    PY,
                    "-m",
                    "pi_edge",
                    "run",
                    "--broker",
                    broker.address,
                    "--node",
                    NODE,
                    "--public-key",
                    str(pub),
                    "--model",
                    str(bundle),
                    "--state-dir",
                    str(run_dir / "edge"),
                    "--status-interval",
                    str(args.status_interval),
                    "--no-dashboard",
                ],
                run_dir / "pi_edge.log",
            )
            if not watch.wait_for(
                NODE,
                lambda s: s.get("state") == "online" and s.get("model_version") is not None,
                args.ready_timeout,
            ):
                raise SystemExit(
                    f"error: pi_edge reported no model within {args.ready_timeout:g} s; "
                    f"see {run_dir / 'pi_edge.log'}"
                )
            procs["sim"] = spawn(
                [
                    PY,
                    "-m",
                    "sensor_sim",
                    "run",
                    "--broker",
                    broker.address,
                    "--node",
                    SIM,
                    "--machines",
                    str(args.machines),
                    "--hz",
                    str(args.hz),
                    "--seed",
                    str(args.seed),
                    "--label-fraction",
                    str(args.label_fraction),
                    "--fault-mtbf",
                    "30",
                    "--repair-mean",
                    "30",
                    "--duration",
                    str(args.warmup + soak_s + 120),  # a backstop; stopped by SIGTERM
                    "--no-dashboard",
                ],
                run_dir / "sim.log",
            )
            origin = time.monotonic() + args.warmup
            trainer = procs["trainer"]
            sampler = Sampler(watch, edge.pid, None if trainer is None else trainer.pid, origin)
            edge_exit, injected = soak_loop(
                args, broker, topics, sampler, edge, origin, soak_s, drift_at
            )
            sim_exit = stop(procs["sim"])
            if sim_exit:
                log.warning("the simulator exited with %s; see %s", sim_exit, run_dir / "sim.log")
            drain(watch, args.drain_s)
            if edge.poll() is None:
                sampler.take("drained")
            peak = peak_rss_mb(edge.pid) if edge.poll() is None else math.nan
            points = watch.points(origin)  # before the stop: its offline status is not news
            edge_exit = stop(procs["edge"])
            got_edge = watch.latest(NODE)
            got_trainer = watch.latest(TRAINER)
        finally:
            for name in ("sim", "edge", "trainer"):
                stop(procs[name])
            watch.close()
    log_text = (run_dir / "pi_edge.log").read_text(errors="replace")
    summary = summarise(
        sampler.samples,
        points,
        args=args,
        soak_s=soak_s,
        drift_at=injected,
        edge_status=got_edge[1] if got_edge else {},
        trainer_status=got_trainer[1] if got_trainer else {},
        sent=watch.sent_max,
        sim_late_ticks=watch.late_ticks,
        rss_peak_mb=peak,
        pi_edge_exit=edge_exit,
        tracebacks=log_text.count("Traceback"),
    )
    write(args.out, summary, sampler.samples)
    log.info("logs of every process are in %s", run_dir)
    return summary


def soak_loop(
    args: argparse.Namespace,
    broker: Broker,
    topics: Topics,
    sampler: Sampler,
    edge: subprocess.Popen[bytes],
    origin: float,
    soak_s: float,
    drift_at: float,
) -> tuple[int | None, float | None]:
    """Warm-up, then sample every --sample-s until the end; inject the drift on time.

    Returns pi_edge's exit code if it ended during the soak (the soak stops there, else None)
    and when the broker acknowledged the drift command, on the soak clock (None: not sent).
    """
    next_sample = time.monotonic()
    started = False
    injected: float | None = None
    while True:
        now = time.monotonic()
        t = now - origin
        if edge.poll() is not None:
            log.error("pi_edge exited with %s at t=%+.1f s; soak stopped", edge.returncode, t)
            return edge.returncode, injected
        event = ""
        if not started and t >= 0:
            event, started = "start", True
            next_sample = now
        elif injected is None and t >= drift_at:
            event = "drift"  # RSS at the drift point, just before the command
        elif t >= soak_s:
            sampler.take("end")
            return None, injected
        if event or now >= next_sample:
            sampler.take(event)
            while next_sample <= now + args.sample_s / 2:  # no extra sample beside an event
                next_sample += args.sample_s
        if event == "drift":
            send_command(broker.address, topics.prefix, MODES[args.drift_mode])
            injected = time.monotonic() - origin
            log.info("drift '%s' commanded at t=%.1f s", args.drift_mode, injected)
        due = [next_sample, origin + soak_s]
        due += [origin] if not started else []
        due += [origin + drift_at] if injected is None else []
        time.sleep(max(0.0, min(min(due) - time.monotonic(), 1.0)))


def drain(watch: Watch, seconds: float) -> None:
    """Wait until pi_edge's classified count stops moving (or `seconds` pass)."""
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        time.sleep(2.5)
        got = watch.latest(NODE)
        now = _int(_dict(got[1].get("metrics")).get("classified")) if got else None
        if now is not None and now == last:
            return
        last = now


def write(out: Path, summary: Summary, samples: Sequence[Sample]) -> None:
    """The summary to `out` (JSON if it ends in .json, else Markdown), the samples beside it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".json":
        out.write_text(json.dumps(asdict(summary), indent=2, default=str) + "\n")
    else:
        out.write_text(summary.to_markdown())
    samples_path = out.with_suffix(".csv")
    with samples_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[f.name for f in fields(Sample)])
        writer.writeheader()
        for s in samples:
            writer.writerow(asdict(s))
    log.info("summary in %s, samples in %s", out, samples_path)


def _fraction(value: str) -> float:
    v = float(value)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not a fraction in 0..1 (0.5 = half way)")
    return v


def _positive(value: str) -> float:
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"{value} must be a number > 0")
    return v


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--machines", type=int, default=100)
    p.add_argument("--hz", type=_positive, default=10.0, help="windows/s per machine")
    p.add_argument("--minutes", type=_positive, default=10.0, help="soak length after warm-up")
    p.add_argument(
        "--drift-at", type=_fraction, default=0.5, help="fraction of the soak (default 0.5)"
    )
    p.add_argument("--drift-mode", choices=sorted(MODES), default="step")
    p.add_argument("--out", type=Path, default=Path("runs/soak/soak.md"), help="summary file")
    p.add_argument(
        "--trainer",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the trainer daemon, so drift leads to a fine-tuned model (default on)",
    )
    p.add_argument("--warmup", type=float, default=30.0, help="seconds before the soak clock")
    p.add_argument("--sample-s", type=_positive, default=5.0, help="seconds between samples")
    p.add_argument("--status-interval", type=_positive, default=2.0, help="pi_edge's, seconds")
    p.add_argument("--label-fraction", type=_fraction, default=0.05)
    p.add_argument("--seed", type=int, default=3, help="simulator seed")
    p.add_argument("--drain-s", type=float, default=15.0, help="max wait for pi_edge to drain")
    p.add_argument("--ready-timeout", type=float, default=180.0, help="seconds per role start")
    p.add_argument("--work", type=Path, help="working dir; a model in it is reused")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    summary = run(args)
    print(summary.to_markdown(), flush=True)
    return 0 if summary.pi_edge_exit in (None, 0) else 1


if __name__ == "__main__":
    sys.exit(main())
