"""A realistic plant: rare, developing faults, correlated channels, sensor artefacts, late labels.

The seed-faithful model (physics.py) draws every window independently from its class table.
This one is what a real shop floor looks like to the classifier (sensor_sim/README.md,
"Realistic plant", has the equations and defaults):

* faults are rare (`fault_fraction` of machine-time, 5 %) and **develop**: from its onset a
  fault's severity grows as ``s = min(1, age / develop)^severity_power`` (quadratic: the early
  stage is subtle), the window's distribution is the normal one moved by ``s`` towards the
  fault's seed 000 table; the fault is repaired after its episode ends;
* channels are **correlated**: a slow operating-point load L per machine moves power (× L),
  temperature (+ 15 °C·(L − 1)), pressure (× (1 + 0.25·(L − 1))) and vibration (× √L) together
  (the `regime` drift model), and inside a window temperature and power share a noise term;
* every machine has its own **baseline** (per-channel offset) and **noise level**;
* **sensor artefacts**: spikes, dropouts (the last good value held: the window format has no
  NaN) and stuck channels (one value for minutes);
* **labels** are scarce (`label_fraction` of windows), late (`label_delay_s` after the window)
  and `label_error` wrong; the true class and severity are kept apart from them;
* **drift** on chosen machines only (`drift_machines`: a ramp from seed 000's standard towards
  its drift regime), the others stay put.

Pure: a `Plant` holds the machines' state and takes the random generator and the elapsed plant
time as arguments; `simulate` turns it into arrays. Plant time runs `time_scale` × the caller's
clock (tests and benches compress hours into seconds).

>>> plant = Plant(PlantConfig(), ("m01", "m02"), np.random.default_rng(0))
>>> plant.advance(30.0, np.random.default_rng(1))
>>> x, flags = plant.windows(np.random.default_rng(2))
>>> x.shape, x.dtype, flags.dtype
((2, 60, 4), dtype('float32'), dtype('uint8'))
>>> s = simulate(PlantConfig(), ("m01", "m02"), 10, 30.0, np.random.default_rng(3))
>>> s.data.shape, s.true.shape, sorted(set(s.machine.tolist()))
((20, 60, 4), (20,), [0, 1])
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from protocol import CHANNELS, CLASSES, WINDOW_LENGTH

from .errors import SimError
from .kinds import REGIME_PRESSURE_PER_LOAD, REGIME_TEMPERATURE_PER_LOAD
from .physics import DRIFT, STANDARD

__all__ = [
    "ARTEFACT_DROPOUT",
    "ARTEFACT_SPIKE",
    "ARTEFACT_STUCK",
    "DueLabel",
    "Plant",
    "PlantConfig",
    "PlantStream",
    "simulate",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

NORMAL = CLASSES.index("normal")
FAULTS = tuple(i for i in range(len(CLASSES)) if i != NORMAL)
_TEMP, _VIB, _PRES, _POWER = (
    CHANNELS.index(c) for c in ("temperature", "vibration", "pressure", "power")
)
_BEARING = CLASSES.index("bearing_fault")
_WEAR = CLASSES.index("drive_wear")

ARTEFACT_SPIKE, ARTEFACT_DROPOUT, ARTEFACT_STUCK = 1, 2, 4  # bits of a window's artefact flags


def _finite_ge(name: str, value: float, low: float) -> None:
    if not (math.isfinite(value) and value >= low):
        raise SimError(f"plant {name}={value!r} must be a finite number ≥ {low}", "bad_field")


@dataclass(frozen=True, slots=True)
class PlantConfig:
    """The realistic plant's parameters; times are plant seconds (see `time_scale`).

    fault_fraction   share of machine-time spent in a fault (onset → repair)
    fault_mean_s     mean fault episode, onset → repair (develop time + an exponential hold)
    develop_s        mean time for severity 0 → 1; per episode × U(0.5, 1.5)
    severity_power   s = (age / develop)^p, capped at 1: p > 1 makes the early stage subtle
    load_std         std of the operating-point load L − 1 (AR(1) between windows)
    load_tau_s       correlation time of L
    coupling         share ρ of the temperature and power sample noise that is common
    baseline_std     std of each machine's fixed per-channel offset (CHANNELS order)
    noise_spread     each machine's per-channel noise factor is U(1 − x, 1 + x)
    spike_rate       probability of a spike per sample and channel
    spike_size       spike height in the channel's normal std (× U(0.7, 1.3), random sign)
    dropout_rate     probability per window and channel of a dropout run
    dropout_samples  run length bounds (inclusive); the value before the run is held
    stuck_per_h      rate per channel-hour of a stuck sensor
    stuck_mean_s     mean time a stuck channel stays stuck (exponential)
    label_fraction   share of windows that get a label
    label_delay_s    a label arrives U(lo, hi) after its window
    label_error      share of labels naming a wrong class (uniform over the others)
    drift_machines   ids of machines that drift (a ramp towards seed 000's drift regime)
    drift_start_s    plant time at which their drift begins
    drift_ramp_s     plant seconds from the start to the full drift regime
    time_scale       plant seconds per second of the caller's clock (live: wall seconds)
    """

    fault_fraction: float = 0.05
    fault_mean_s: float = 3600.0
    develop_s: float = 1200.0
    severity_power: float = 2.0
    load_std: float = 0.05
    load_tau_s: float = 900.0
    coupling: float = 0.6
    baseline_std: tuple[float, ...] = (2.0, 0.03, 0.3, 5.0)
    noise_spread: float = 0.3
    spike_rate: float = 0.001
    spike_size: float = 8.0
    dropout_rate: float = 0.01
    dropout_samples: tuple[int, int] = (5, 30)
    stuck_per_h: float = 0.02
    stuck_mean_s: float = 600.0
    label_fraction: float = 0.05
    label_delay_s: tuple[float, float] = (120.0, 900.0)
    label_error: float = 0.05
    drift_machines: tuple[str, ...] = ()
    drift_start_s: float = 0.0
    drift_ramp_s: float = 3600.0
    time_scale: float = 1.0
    gap_mean_s: float = field(init=False, repr=False, default=0.0)

    def __post_init__(self) -> None:
        for name in ("fault_fraction", "label_fraction", "label_error", "coupling"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise SimError(f"plant {name}={value!r} must be within 0..1", "bad_field")
        if self.fault_fraction >= 1.0:
            raise SimError("plant fault_fraction must be < 1 (a machine needs normal time)")
        for name in ("fault_mean_s", "develop_s", "load_tau_s", "stuck_mean_s", "drift_ramp_s"):
            _finite_ge(name, getattr(self, name), 1e-9)
        for name in ("severity_power", "load_std", "noise_spread", "spike_rate", "spike_size",
                     "dropout_rate", "stuck_per_h", "drift_start_s"):  # fmt: skip
            _finite_ge(name, getattr(self, name), 0.0)
        _finite_ge("time_scale", self.time_scale, 1e-9)
        if self.develop_s > self.fault_mean_s:
            raise SimError(
                f"plant develop_s={self.develop_s} exceeds fault_mean_s={self.fault_mean_s}: an "
                "episode is the development plus a hold, so its mean cannot be shorter"
            )
        if self.noise_spread >= 1 or self.spike_rate > 1 or self.dropout_rate > 1:
            raise SimError("plant noise_spread must be < 1, spike_rate and dropout_rate ≤ 1")
        if len(self.baseline_std) != len(CHANNELS) or min(self.baseline_std) < 0:
            raise SimError(f"plant baseline_std needs {len(CHANNELS)} values ≥ 0 ({CHANNELS})")
        lo, hi = self.dropout_samples
        if not 1 <= lo <= hi:
            raise SimError(f"plant dropout_samples {self.dropout_samples} needs 1 ≤ lo ≤ hi")
        dlo, dhi = self.label_delay_s
        if not (math.isfinite(dhi) and 0.0 <= dlo <= dhi):
            raise SimError(f"plant label_delay_s {self.label_delay_s} needs 0 ≤ lo ≤ hi")
        gap = self.fault_mean_s * (1.0 - self.fault_fraction) / max(self.fault_fraction, 1e-12)
        object.__setattr__(self, "gap_mean_s", gap)


@dataclass(frozen=True, slots=True)
class DueLabel:
    """A label whose delay has passed: window `window_ts_ns` of machine `machine` is `cls`."""

    machine: int
    window_ts_ns: int
    cls: int
    true: int
    due_s: float


class Plant:
    """The machines of one plant: fault episodes, load, stuck sensors, pending labels.

    Not thread-safe: one owner. `advance` moves plant time; `windows` draws one window per
    machine for the current state; `draw_labels` decides which of them get a (late) label.
    """

    def __init__(self, config: PlantConfig, ids: Sequence[str], rng: np.random.Generator) -> None:
        self.config = config
        self.ids = tuple(ids)
        n = len(self.ids)
        unknown = sorted(set(config.drift_machines) - set(self.ids))
        if unknown:
            raise SimError(
                f"plant drift machine(s) {unknown} are not in this plant ({self.ids[0]}.."
                f"{self.ids[-1]})",
                kind="unknown_machine",
            )
        c = len(CHANNELS)
        self.baseline = rng.standard_normal((n, c)) * np.asarray(config.baseline_std)
        spread = config.noise_spread
        self.noise = rng.uniform(1.0 - spread, 1.0 + spread, (n, c))
        self.load = rng.standard_normal(n) * config.load_std  # L − 1
        self.clock = 0.0
        self.cls = np.full(n, NORMAL, np.int64)
        self.onset = np.full(n, math.inf)
        self.develop = np.ones(n)
        self.forced = np.zeros(n, bool)
        self.next_change = rng.exponential(config.gap_mean_s, n)  # first onsets
        self.stuck_until = np.zeros((n, c))  # stuck while clock < stuck_until
        self.stuck_value = np.full((n, c), np.nan)
        self.drifting = np.array([m in config.drift_machines for m in self.ids])
        self._pending: list[tuple[float, int, int, int, int]] = []  # heap of due labels

    # ---- state ----------------------------------------------------------------------------
    @property
    def severity(self) -> F64:
        """Per machine: 0 when normal, else min(1, age / develop)^p (monotone in a fault)."""
        age = np.where(self.cls == NORMAL, 0.0, self.clock - self.onset)
        frac = np.clip(age / self.develop, 0.0, 1.0)
        return np.where(self.cls == NORMAL, 0.0, frac**self.config.severity_power)

    @property
    def blend(self) -> F64:
        """Per machine: how far its distributions moved to seed 000's drift regime (0..1)."""
        cfg = self.config
        b = np.clip((self.clock - cfg.drift_start_s) / cfg.drift_ramp_s, 0.0, 1.0)
        return np.where(self.drifting, b, 0.0)

    @property
    def stuck(self) -> npt.NDArray[np.bool_]:
        return self.clock < self.stuck_until

    def _start_fault(self, i: int, at: float, cls: int, rng: np.random.Generator) -> None:
        cfg = self.config
        develop = cfg.develop_s * rng.uniform(0.5, 1.5)
        hold = (
            rng.exponential(cfg.fault_mean_s - cfg.develop_s)
            if cfg.fault_mean_s > cfg.develop_s
            else 0.0
        )
        self.cls[i], self.onset[i], self.develop[i] = cls, at, develop
        self.next_change[i] = at + develop + hold

    def _repair(self, i: int, at: float, rng: np.random.Generator) -> None:
        self.cls[i], self.onset[i], self.forced[i] = NORMAL, math.inf, False
        gap = self.config.gap_mean_s
        self.next_change[i] = (
            at + rng.exponential(gap) if self.config.fault_fraction > 0 else math.inf
        )

    def force(self, i: int, cls: int, rng: np.random.Generator) -> None:
        """A commanded fault: it starts developing now and holds until `repair`."""
        if cls == NORMAL:
            self.repair(i, rng)
            return
        self._start_fault(i, self.clock, cls, rng)
        self.forced[i], self.next_change[i] = True, math.inf

    def repair(self, i: int, rng: np.random.Generator) -> None:
        self._repair(i, self.clock, rng)

    def advance(self, dt: float, rng: np.random.Generator) -> None:
        """Let `dt` plant seconds pass: faults start and end, the load wanders, sensors stick."""
        if not (math.isfinite(dt) and dt >= 0):
            raise SimError(f"plant time step {dt!r} must be a finite number ≥ 0")
        cfg = self.config
        self.clock += dt
        if cfg.fault_fraction == 0:
            self.next_change[~self.forced & (self.cls == NORMAL)] = math.inf
        for i in np.flatnonzero(self.next_change <= self.clock):
            while self.next_change[i] <= self.clock:  # a long step may span several changes
                at = float(self.next_change[i])
                if self.cls[i] == NORMAL:
                    self._start_fault(int(i), at, int(rng.choice(FAULTS)), rng)
                else:
                    self._repair(int(i), at, rng)
        phi = math.exp(-dt / cfg.load_tau_s)
        self.load = self.load * phi + rng.standard_normal(len(self.ids)) * (
            cfg.load_std * math.sqrt(1.0 - phi * phi)
        )
        p_stuck = -math.expm1(-dt * cfg.stuck_per_h / 3600.0)
        start = (~self.stuck) & (rng.random(self.stuck_until.shape) < p_stuck)
        if start.any():
            self.stuck_until[start] = self.clock + rng.exponential(
                cfg.stuck_mean_s, int(start.sum())
            )
            self.stuck_value[start] = np.nan  # taken from the next window
        self.stuck_value[~self.stuck] = np.nan

    # ---- windows --------------------------------------------------------------------------
    def windows(
        self,
        rng: np.random.Generator,
        window_length: int = WINDOW_LENGTH,
        extra_blend: F64 | None = None,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8]]:
        """One window per machine for the current state: (M, T, C) float32 and artefact flags.

        `extra_blend` (per machine) is a commanded drift's blend; the larger one applies.
        """
        cfg = self.config
        n, t, c = len(self.ids), window_length, len(CHANNELS)
        b = self.blend if extra_blend is None else np.maximum(self.blend, extra_blend)
        s = self.severity
        bc = b[:, None]

        def profile(k: I64) -> tuple[F64, F64]:
            mean = STANDARD.mean[k] + bc * (DRIFT.mean[k] - STANDARD.mean[k])
            std = STANDARD.std[k] + bc * (DRIFT.std[k] - STANDARD.std[k])
            return mean, std

        m0, s0 = profile(np.full(n, NORMAL))
        m1, s1 = profile(self.cls)
        sc = s[:, None]
        mean = m0 + sc * (m1 - m0) + self.baseline
        std = (s0 + sc * (s1 - s0)) * self.noise
        z = rng.standard_normal((n, t, c))
        common = rng.standard_normal((n, t))
        rho = cfg.coupling
        keep = math.sqrt(1.0 - rho * rho)
        for ch in (_TEMP, _POWER):  # temperature and power share a noise term
            z[:, :, ch] = keep * z[:, :, ch] + rho * common
        x = mean[:, None, :] + std[:, None, :] * z

        # bearing sine and wear noise, scaled by severity (bounds blended like physics.sample)
        def lerp(lo: float, hi: float) -> F64:
            return lo + b * (hi - lo)

        k_lo, k_hi = (
            lerp(STANDARD.sine_k[0], DRIFT.sine_k[0]),
            lerp(STANDARD.sine_k[1], DRIFT.sine_k[1]),
        )
        a_lo, a_hi = (
            lerp(STANDARD.sine_a[0], DRIFT.sine_a[0]),
            lerp(STANDARD.sine_a[1], DRIFT.sine_a[1]),
        )
        k = k_lo + rng.random(n) * (k_hi - k_lo)
        a = (a_lo + rng.random(n) * (a_hi - a_lo)) * np.where(self.cls == _BEARING, s, 0.0)
        ramp = np.linspace(0.0, 1.0, t)
        x[:, :, _VIB] += np.sin(ramp[None, :] * (k * np.pi)[:, None]) * a[:, None]
        wear = np.where(self.cls == _WEAR, lerp(STANDARD.wear_noise, DRIFT.wear_noise) * s, 0.0)
        x[:, :, _VIB] += rng.standard_normal((n, t)) * wear[:, None]
        # the operating point: the regime drift model at load L = 1 + load
        load = 1.0 + self.load
        x[:, :, _POWER] *= load[:, None]
        x[:, :, _TEMP] += (REGIME_TEMPERATURE_PER_LOAD * (load - 1.0))[:, None]
        x[:, :, _PRES] *= (1.0 + REGIME_PRESSURE_PER_LOAD * (load - 1.0))[:, None]
        x[:, :, _VIB] *= np.sqrt(np.maximum(load, 0.0))[:, None]
        flags = self._artefacts(x, rng)
        return x.astype(np.float32), flags

    def _artefacts(self, x: F64, rng: np.random.Generator) -> npt.NDArray[np.uint8]:
        """Spikes, dropouts and stuck channels, in place; the flags of each window."""
        cfg = self.config
        n, t, c = x.shape
        flags = np.zeros(n, np.uint8)
        scale = STANDARD.std[NORMAL][None, :] * self.noise  # (n, c)
        spikes = rng.random((n, t, c)) < cfg.spike_rate
        if spikes.any():
            size = (
                cfg.spike_size
                * rng.uniform(0.7, 1.3, spikes.shape)
                * rng.choice((-1.0, 1.0), spikes.shape)
            )
            x += spikes * size * scale[:, None, :]
            flags[spikes.any(axis=(1, 2))] |= ARTEFACT_SPIKE
        drop = rng.random((n, c)) < cfg.dropout_rate
        lo, hi = cfg.dropout_samples
        for i, ch in zip(*np.nonzero(drop), strict=True):
            if t < 2:
                break
            start = int(rng.integers(1, t))
            length = int(rng.integers(lo, hi + 1))
            x[i, start : start + length, ch] = x[i, start - 1, ch]
            flags[i] |= ARTEFACT_DROPOUT
        stuck = self.stuck
        if stuck.any():
            fresh = stuck & np.isnan(self.stuck_value)
            self.stuck_value[fresh] = x[:, 0, :][fresh]  # it sticks at what it read then
            ii, cc = np.nonzero(stuck)
            x[ii, :, cc] = self.stuck_value[ii, cc][:, None]
            flags[np.unique(ii)] |= ARTEFACT_STUCK
        return flags

    # ---- labels ---------------------------------------------------------------------------
    def draw_labels(
        self, rng: np.random.Generator, fraction: float | None = None
    ) -> tuple[I64, F64]:
        """Which of this tick's windows get a label: (observed class or −1, delay s or NaN).

        A label names the true class, except with probability `label_error` a uniformly drawn
        other class; it arrives U(label_delay_s) plant seconds after its window.
        """
        cfg = self.config
        n = len(self.ids)
        fraction = cfg.label_fraction if fraction is None else fraction
        labeled = rng.random(n) < fraction
        wrong = rng.random(n) < cfg.label_error
        shift = rng.integers(1, len(CLASSES), n)  # a wrong label: any other class
        observed = np.where(wrong, (self.cls + shift) % len(CLASSES), self.cls)
        delay = rng.uniform(cfg.label_delay_s[0], cfg.label_delay_s[1], n)
        return np.where(labeled, observed, -1), np.where(labeled, delay, np.nan)

    def queue_labels(self, observed: I64, delay: F64, window_ts_ns: int) -> None:
        """Hold this tick's labels until their delay has passed (`due_labels` hands them out)."""
        for i in np.flatnonzero(observed >= 0):
            due = self.clock + float(delay[i])
            heapq.heappush(
                self._pending, (due, int(i), window_ts_ns, int(observed[i]), int(self.cls[i]))
            )

    def due_labels(self) -> list[DueLabel]:
        """The queued labels whose time has come, oldest first."""
        out = []
        while self._pending and self._pending[0][0] <= self.clock:
            due, i, ts, cls, true = heapq.heappop(self._pending)
            out.append(DueLabel(i, ts, cls, true, due))
        return out

    @property
    def pending_labels(self) -> int:
        return len(self._pending)


@dataclass(frozen=True, slots=True)
class PlantStream:
    """A plant's windows in time order (tick-major, machines in id order within a tick).

    data (N, T, C) float32; machine (N,) index into `ids`; time_s (N,) plant seconds;
    true (N,) class; severity (N,) 0..1; observed (N,) label or −1; label_delay_s (N,) or NaN;
    drift (N,) blend towards seed 000's drift regime; artefacts (N,) ARTEFACT_* bits.
    """

    ids: tuple[str, ...]
    data: npt.NDArray[np.float32] = field(repr=False)
    machine: npt.NDArray[np.int16] = field(repr=False)
    time_s: F64 = field(repr=False)
    true: I64 = field(repr=False)
    severity: npt.NDArray[np.float32] = field(repr=False)
    observed: I64 = field(repr=False)
    label_delay_s: npt.NDArray[np.float32] = field(repr=False)
    drift: npt.NDArray[np.float32] = field(repr=False)
    artefacts: npt.NDArray[np.uint8] = field(repr=False)

    def __len__(self) -> int:
        return len(self.true)


def simulate(
    config: PlantConfig,
    ids: Sequence[str],
    ticks: int,
    period_s: float,
    rng: np.random.Generator,
    *,
    warmup_s: float = 0.0,
    window_length: int = WINDOW_LENGTH,
) -> PlantStream:
    """`ticks` windows per machine, one every `period_s` × `time_scale` plant seconds.

    `warmup_s` plant seconds pass before the first window (so a stream can start mid-life).

    >>> s = simulate(PlantConfig(fault_fraction=0.0), ("m01",), 3, 60.0, np.random.default_rng(0))
    >>> s.time_s.tolist(), s.true.tolist()
    ([60.0, 120.0, 180.0], [0, 0, 0])
    """
    if ticks < 0 or not (math.isfinite(period_s) and period_s > 0):
        raise SimError(f"simulate needs ticks ≥ 0 and a period > 0, got {ticks}, {period_s}")
    plant = Plant(config, ids, rng)
    step = period_s * config.time_scale
    if warmup_s > 0:
        plant.advance(warmup_s, rng)
    n = len(plant.ids)
    total = ticks * n
    data = np.empty((total, window_length, len(CHANNELS)), np.float32)
    true = np.empty(total, np.int64)
    sev = np.empty(total, np.float32)
    obs = np.empty(total, np.int64)
    delay = np.empty(total, np.float32)
    drift = np.empty(total, np.float32)
    flags = np.empty(total, np.uint8)
    time_s = np.empty(total)
    for k in range(ticks):
        plant.advance(step, rng)
        sl = slice(k * n, (k + 1) * n)
        data[sl], flags[sl] = plant.windows(rng, window_length)
        true[sl], sev[sl], drift[sl] = plant.cls, plant.severity, plant.blend
        obs[sl], delay[sl] = plant.draw_labels(rng)
        time_s[sl] = plant.clock
    machine = np.tile(np.arange(n, dtype=np.int16), ticks)
    return PlantStream(plant.ids, data, machine, time_s, true, sev, obs, delay, drift, flags)
