"""`make bench`: the whole benchmark suite in one command, then bench/results.md and its plots.

    python -m bench [--only codec,edge,...] [--raw bench/raw] [--work DIR]

Runs each bench as a subprocess, one after the other (never two at once: this box has 2 cores
and every bench measures CPU or latency), with parameters scaled so the whole run stays under
15 minutes; each writes its JSON into the raw directory. One compact model, trained first with
bench.edge.make_model, serves edge, demo_load and fleet. Then bench/report.py turns the JSON
into bench/results.md and bench/plots/*.png, every figure beside its target.

The steps, their parameters and their seconds in the first full run (715 s in all, quiet box):

- codec: binary vs JSON window, pure CPU (1 s)
- models: seed 000 vs compact; compact at the full 40 epochs, seed 000's net capped at 15 (its
  size and speed do not depend on it; 40 epochs and their fine-tuning would add ~60 s) (70 s)
- model: the shared compact model, bench.edge.make_model in a subprocess (17 s)
- edge: 2 rounds, 15,000 windows flat out (fewer made the rate noisy), 10 s at 1,000/s (a p99
  over 10,000 windows, not 5,000); pi_edge of 0b7a045 (before issue 13) flat out beside it
- demo_load: 2 rounds of 15 s per target at 16 machines × 10 Hz; `--two-types`: also a site of
  8 seed machines and 8 fans, pi_edge serving both types against the ceiling decoding both
- fleet: 1, 2, 3 nodes, as bench/fleet.py's author sized it (93 s)
- drift_recovery: every mode, up to 50 s from onset to the new model, then until the drift
  has cleared on every machine and stayed clear for 20 s (a 60 s ramp ends within the run);
  `--fans 4`: the fan type's row too (fan-step, its own typed trainer and initial model)
- plant: bench.plant --quick, seed-style data vs the realistic plant (quality, delays, false alarms)
- estimate: the Pi's label-free accuracy estimate against the truth, per drift mode
- machine_types: a second machine type's model (made with the trainer's build path), µs/window
  of each type's model and the RSS one more type costs a node
- cold_start: bench.cold_start --quick, an anomaly model from the plant's normal running, then
  class growth from technicians' labels (detection delay, false anomaly events, macro-F1) (25 s)
- console: the operator console's screen refresh with 100 machines changing every round

A bench that fails or overruns its time limit is stopped (its whole process group), recorded
with the end of its log in meta.json, and the others still run; the report says "not measured".
Logs of every step go to the work directory (printed at the start).
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import json
import logging
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import report

log = logging.getLogger("bench")

PY = sys.executable
BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent


_SHARED = "--model MODEL --public-key KEY"
BASELINE = "0b7a045"  # pi_edge before issue 13: the edge bench runs it side by side, flat out


@dataclass(frozen=True)
class Step:
    """One bench: its python arguments, space-separated (MODEL/KEY: the shared model's paths)."""

    name: str
    args: str
    timeout_s: float
    json_flag: bool = True  # the bench takes --json PATH


STEPS = (
    Step("codec", "-m bench.codec", 60),
    Step("models", "-m bench.models --seed-epochs 15", 360),
    Step(
        "edge",
        f"-m bench.edge {_SHARED} --rounds 2 --count 15000 --seconds 10 --baseline {BASELINE}",
        300,
    ),
    Step("demo_load", f"-m bench.demo_load {_SHARED} --seconds 15 --rounds 2 --two-types", 480),
    Step("fleet", f"-m bench.fleet {_SHARED}", 360),
    Step("drift_recovery", "-m bench.drift_recovery --timeout 50 --ramp-s 60 --fans 4", 840),
    Step("plant", "-m bench.plant --quick", 240),
    Step("estimate", f"-m bench.estimate {_SHARED}", 120),
    Step("machine_types", f"-m bench.machine_types {_SHARED}", 180),
    Step("cold_start", "-m bench.cold_start --quick", 180),
    Step("console", "-m bench.console_refresh", 120),
)
NEEDS_MODEL = {"edge", "demo_load", "fleet", "estimate", "machine_types"}


def machine() -> dict[str, Any]:
    """CPU model, cores, memory and Python of this box (Linux /proc)."""
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        kb = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal:")
        )
        mem = round(kb / 1024 / 1024, 1)
    except (OSError, StopIteration, ValueError) as exc:
        log.warning("could not read /proc (%s): machine details will show '?'", exc)
        mem = float("nan")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": mem,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def git_state() -> tuple[str, bool]:
    """(short commit, whether the work tree has uncommitted changes); '?' outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            check=False,
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            check=False,
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "?", False
    return commit or "?", bool(dirty)


def tail(path: Path, lines: int = 6) -> str:
    """The last lines of a log, on one line (for meta.json's error)."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " / ".join(text[-lines:])


def run_logged(argv: list[str], logfile: Path, timeout_s: float) -> tuple[int, str]:
    """Run `argv` in its own process group with output to `logfile`; (exit code, error text).

    On overrun the whole group (the bench and the brokers/nodes it started) is terminated.
    """
    with logfile.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"},
        )
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            return -1, f"stopped after its {timeout_s:.0f} s limit; log: {tail(logfile)}"
    return rc, "" if rc == 0 else f"exit {rc}; log: {tail(logfile)}"


_FLEET_REPR = re.compile(r"FleetResult\((.*)\)\s*$")


def fleet_rows_from_log(text: str) -> list[dict[str, Any]]:
    """bench.fleet's printed `FleetResult(...)` lines as dicts (for a fleet bench without --json).

    >>> fleet_rows_from_log("x\\nFleetResult(nodes=2, rate=1.5, kill_takeover_s=nan)\\n")
    [{'nodes': 2, 'rate': 1.5, 'kill_takeover_s': nan}]
    """
    rows = []
    for line in text.splitlines():
        m = _FLEET_REPR.search(line.strip())
        if not m:
            continue
        row: dict[str, Any] = {}
        for part in m.group(1).split(", "):
            key, _, value = part.partition("=")
            if value in ("nan", "inf", "-inf"):
                row[key] = float(value)
            else:
                row[key] = ast.literal_eval(value)
        rows.append(row)
    return rows


def takes_json(module: str) -> bool:
    """Whether `python -m module --help` lists a --json option."""
    out = subprocess.run(
        [PY, "-m", module, "--help"],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return "--json" in out.stdout


def run_step(step: Step, raw: Path, work: Path, model: tuple[Path, Path] | None) -> dict[str, Any]:
    """Run one bench; its JSON lands in raw/<name>.json. Returns its meta record."""
    target = raw / f"{step.name}.json"
    target.unlink(missing_ok=True)  # never report an older run's figures as this one's
    subst = {"MODEL": str(model[0]), "KEY": str(model[1])} if model else {}
    argv = [PY, *(subst.get(a, a) for a in step.args.split())]
    module = step.args.split()[1]
    json_flag = step.json_flag and (step.name != "fleet" or takes_json(module))
    if json_flag:
        argv += ["--json", str(target)]
    logfile = work / f"{step.name}.log"
    log.info("%s: %s", step.name, " ".join(argv[1:]))
    t0 = time.monotonic()
    rc, error = run_logged(argv, logfile, step.timeout_s)
    seconds = time.monotonic() - t0
    if rc == 0 and not json_flag:  # bench.fleet before it grew --json: read its printed rows
        rows = fleet_rows_from_log(logfile.read_text(errors="replace"))
        if rows:
            target.write_text(json.dumps(rows, indent=1) + "\n")
    if rc == 0 and not target.exists():
        rc, error = 1, f"finished but wrote no {target.name}; log: {tail(logfile)}"
    log.info("%s: %s in %.0f s", step.name, "ok" if rc == 0 else error, seconds)
    shown = [Path(argv[0]).name, *argv[1:]]
    raw_shown = str(raw.relative_to(REPO)) if raw.is_relative_to(REPO) else "RAW"
    shown = [a.replace(str(work), "WORK").replace(str(raw), raw_shown) for a in shown]
    return {"name": step.name, "argv": shown, "seconds": seconds, "rc": rc, "error": error}


_MAKE_MODEL = (
    "import sys; from pathlib import Path; from bench.edge import make_model; "
    "print(*make_model(Path(sys.argv[1])), sep='\\n')"
)


def shared_model(work: Path) -> tuple[tuple[Path, Path] | None, dict[str, Any]]:
    """bench.edge.make_model once, in a subprocess (TensorFlow's output goes to its log)."""
    logfile = work / "model.log"
    argv = [PY, "-c", _MAKE_MODEL, str(work / "shared")]
    log.info("model: bench.edge.make_model into %s", work / "shared")
    t0 = time.monotonic()
    rc, error = run_logged(argv, logfile, 300)
    seconds = time.monotonic() - t0
    model = None
    if rc == 0:
        lines = logfile.read_text(errors="replace").strip().splitlines()
        paths = (Path(lines[-2]), Path(lines[-1])) if len(lines) >= 2 else None
        if paths and all(p.is_file() for p in paths):
            model = paths
        else:
            rc, error = 1, f"make_model printed no model and key paths; log: {tail(logfile)}"
    if model is None:
        error = f"training the shared model failed ({error}); edge, demo_load and fleet skipped"
    log.info("model: %s in %.0f s", model[0] if model else error, seconds)
    return model, {
        "name": "model",
        "argv": ["bench.edge.make_model (sensor_sim dataset + jetson_trainer train, compact)"],
        "seconds": seconds,
        "rc": rc,
        "error": error if model is None else "",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    names = [s.name for s in STEPS]
    p.add_argument("--only", help=f"comma-separated subset of {names} (default: all)")
    p.add_argument("--raw", type=Path, default=BENCH_DIR / "raw", help="where the JSON goes")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results.md")
    p.add_argument("--plots", type=Path, default=BENCH_DIR / "plots")
    p.add_argument("--work", type=Path, help="logs, model, brokers (default: a temp dir)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    chosen = names if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        p.error(f"unknown bench {unknown}; choose from {names}")
    work = args.work or Path(tempfile.mkdtemp(prefix="edgeloop-bench-all-"))
    work.mkdir(parents=True, exist_ok=True)
    args.raw.mkdir(parents=True, exist_ok=True)
    log.info("logs and working files in %s", work)
    commit, dirty = git_state()
    meta: dict[str, Any] = {
        "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "dirty": dirty,
        "machine": machine(),
        "only": ",".join(chosen) if args.only else None,
        "steps": [],
    }
    t0 = time.monotonic()
    model: tuple[Path, Path] | None = None
    model_tried = False
    for step in STEPS:
        if step.name not in chosen:
            continue
        if step.name in NEEDS_MODEL:
            if not model_tried:
                model, record = shared_model(work)
                meta["steps"].append(record)
                model_tried = True
            if model is None:
                meta["steps"].append(
                    {"name": step.name, "argv": [], "seconds": 0.0, "rc": 1,
                     "error": "skipped: no shared model"}
                )  # fmt: skip
                continue
        meta["steps"].append(run_step(step, args.raw, work, model))
    meta["total_s"] = time.monotonic() - t0
    (args.raw / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    rep = report.write(args.raw, args.out, args.plots)
    failed = [s["name"] for s in meta["steps"] if s["rc"] != 0]
    met = sum(c.ok for c in rep.checks)
    log.info(
        "wrote %s and %s in %.0f s: %d of %d targets met%s",
        args.out,
        args.plots,
        meta["total_s"],
        met,
        len(rep.checks),
        f"; failed: {', '.join(failed)}" if failed else "",
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
