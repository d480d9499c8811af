"""Class physics: seed 000's window generator, vectorised, with an explicit random generator.

Every sample of every channel is drawn independently from N(mean, std) of its class (the
tables below, in `protocol.CLASSES` × `protocol.CHANNELS` order). On top of that:

* bearing_fault vibration adds ``sin(linspace(0, k·π, T)) · a`` with k ~ U(k_lo, k_hi) and
  a ~ U(a_lo, a_hi), drawn once per window;
* drive_wear vibration adds N(0, wear_noise) per sample.

Three profiles exist: ``STANDARD`` (seed 000's `train`), ``INFER`` (its "small deviations"
`infer` set) and ``DRIFT`` (the step to a new regime of `drift_train`/`drift_infer`).
`sample` can blend STANDARD towards DRIFT by a fraction (used by the `ramp` drift mode):
means, stds, the sine's k and a bounds and the wear noise are interpolated linearly.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = generate(np.array([0, 1, 2, 3]), rng)
>>> x.shape, x.dtype
((4, 60, 4), dtype('float32'))
>>> big = generate(np.zeros(2000, dtype=np.int64), np.random.default_rng(1), regime="drift")
>>> round(float(big[..., 0].mean()))  # normal temperature under drift: 58 °C
58
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from protocol import CHANNELS, CLASSES, WINDOW_LENGTH

from .errors import SimError

FloatArray = npt.NDArray[np.float64]
REGIMES = ("standard", "infer", "drift")

_VIB = CHANNELS.index("vibration")
_BEARING = CLASSES.index("bearing_fault")
_WEAR = CLASSES.index("drive_wear")

# (mean, std) per class and channel, as in ../shared/SEEDS.md (seed 000).
_Table = Mapping[str, Mapping[str, tuple[float, float]]]

STANDARD_TABLE: _Table = {
    "normal": {
        "temperature": (50, 5),
        "vibration": (0.3, 0.1),
        "pressure": (11, 0.5),
        "power": (125, 10),
    },
    "bearing_fault": {
        "temperature": (65, 8),
        "vibration": (1.0, 0.3),
        "pressure": (11, 0.5),
        "power": (140, 12),
    },
    "drive_wear": {
        "temperature": (55, 6),
        "vibration": (0.5, 0.15),
        "pressure": (11, 0.5),
        "power": (150, 15),
    },
    "pump_fault": {
        "temperature": (55, 10),
        "vibration": (0.35, 0.15),
        "pressure": (7, 1),
        "power": (110, 20),
    },
}

INFER_CHANGES: Mapping[str, Mapping[str, float]] = {
    "normal": {"temperature": 52, "vibration": 0.32},
    "drive_wear": {"temperature": 57, "vibration": 0.55},
    "pump_fault": {"pressure": 6.8},
}

DRIFT_TABLE: _Table = {
    "normal": {
        "temperature": (58, 5),
        "vibration": (0.4, 0.1),
        "pressure": (11.8, 0.4),
        "power": (135, 8),
    },
    "bearing_fault": {
        "temperature": (70, 7),
        "vibration": (1.2, 0.25),
        "pressure": (8.0, 1.0),
        "power": (150, 18),
    },
    "drive_wear": {
        "temperature": (75, 7),
        "vibration": (0.9, 0.2),
        "pressure": (10.5, 0.6),
        "power": (170, 20),
    },
    "pump_fault": {
        "temperature": (60, 12),
        "vibration": (0.45, 0.25),
        "pressure": (5.5, 0.8),
        "power": (90, 28),
    },
}


def _array(table: _Table, index: int) -> FloatArray:
    return np.array([[float(table[c][ch][index]) for ch in CHANNELS] for c in CLASSES])


@dataclass(frozen=True, slots=True)
class Profile:
    """One set of class-conditional distributions.

    mean, std:  (classes, channels) arrays
    sine_k, sine_a:  bounds of the uniform draws for the bearing sine
    wear_noise:  std of the extra per-sample vibration noise of drive_wear
    """

    name: str
    mean: FloatArray = field(repr=False)
    std: FloatArray = field(repr=False)
    sine_k: tuple[float, float]
    sine_a: tuple[float, float]
    wear_noise: float

    def __post_init__(self) -> None:
        shape = (len(CLASSES), len(CHANNELS))
        if self.mean.shape != shape or self.std.shape != shape:
            raise SimError(
                f"profile {self.name!r} tables must be {shape}, got "
                f"{self.mean.shape} and {self.std.shape}"
            )
        if not (self.std > 0).all() or self.wear_noise < 0:
            raise SimError(f"profile {self.name!r} has a std ≤ 0 or a negative wear noise")
        for lo, hi in (self.sine_k, self.sine_a):
            if not lo <= hi:
                raise SimError(f"profile {self.name!r} has a uniform range {lo}..{hi} with lo > hi")


STANDARD = Profile(
    "standard",
    _array(STANDARD_TABLE, 0),
    _array(STANDARD_TABLE, 1),
    sine_k=(4.0, 9.0),
    sine_a=(0.1, 0.25),
    wear_noise=0.07,
)


def _infer_mean() -> FloatArray:
    mean = STANDARD.mean.copy()
    for cls, changes in INFER_CHANGES.items():
        for ch, value in changes.items():
            mean[CLASSES.index(cls), CHANNELS.index(ch)] = value
    return mean


INFER = Profile(
    "infer",
    _infer_mean(),
    STANDARD.std.copy(),
    sine_k=STANDARD.sine_k,
    sine_a=STANDARD.sine_a,
    wear_noise=STANDARD.wear_noise,
)
DRIFT = Profile(
    "drift",
    _array(DRIFT_TABLE, 0),
    _array(DRIFT_TABLE, 1),
    sine_k=(6.0, 11.0),
    sine_a=(0.15, 0.35),
    wear_noise=0.1,
)
PROFILES: Mapping[str, Profile] = {"standard": STANDARD, "infer": INFER, "drift": DRIFT}


def check_labels(labels: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """`labels` as a 1-D int64 array of class indices, or SimError."""
    arr = np.asarray(labels)
    if arr.ndim != 1 or not (arr.size == 0 or np.issubdtype(arr.dtype, np.integer)):
        raise SimError(f"labels must be a 1-D integer array, got shape {arr.shape} {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= len(CLASSES)):
        raise SimError(
            f"labels must be in 0..{len(CLASSES) - 1} {CLASSES}, got "
            f"{int(arr.min())}..{int(arr.max())}"
        )
    return arr.astype(np.int64, copy=False)


def sample(
    labels: npt.ArrayLike,
    rng: np.random.Generator,
    *,
    blend: float | npt.ArrayLike = 0.0,
    base: Profile = STANDARD,
    target: Profile = DRIFT,
    window_length: int = WINDOW_LENGTH,
) -> npt.NDArray[np.float32]:
    """Windows (N, T, C) float32 for class `labels`, from `base` blended towards `target`.

    `blend` is a scalar or one value per window in 0..1 (0 = base, 1 = target exactly).

    >>> rng = np.random.default_rng(3)
    >>> x = sample(np.array([0, 0]), rng, blend=np.array([0.0, 1.0]), window_length=5000)
    >>> [round(float(v)) for v in x[:, :, 0].mean(axis=1)]  # 50 °C and 58 °C
    [50, 58]
    """
    labels = check_labels(labels)
    if window_length < 1:
        raise SimError(f"window_length {window_length} must be ≥ 1")
    n = labels.shape[0]
    b = np.broadcast_to(np.asarray(blend, dtype=np.float64), (n,))
    if b.size and not (np.isfinite(b).all() and b.min() >= 0 and b.max() <= 1):
        raise SimError("blend must be finite and within 0..1")
    bc = b[:, None]
    mean = base.mean[labels] + bc * (target.mean[labels] - base.mean[labels])
    std = base.std[labels] + bc * (target.std[labels] - base.std[labels])

    def lerp(lo: float, hi: float) -> FloatArray:
        return lo + b * (hi - lo)

    x = rng.standard_normal((n, window_length, len(CHANNELS)))
    x *= std[:, None, :]
    x += mean[:, None, :]

    k_lo, k_hi = lerp(base.sine_k[0], target.sine_k[0]), lerp(base.sine_k[1], target.sine_k[1])
    a_lo, a_hi = lerp(base.sine_a[0], target.sine_a[0]), lerp(base.sine_a[1], target.sine_a[1])
    k = k_lo + rng.random(n) * (k_hi - k_lo)
    a = a_lo + rng.random(n) * (a_hi - a_lo)
    a = np.where(labels == _BEARING, a, 0.0)
    ramp = np.linspace(0.0, 1.0, window_length)
    x[:, :, _VIB] += np.sin(ramp[None, :] * (k * np.pi)[:, None]) * a[:, None]

    wear = np.where(labels == _WEAR, lerp(base.wear_noise, target.wear_noise), 0.0)
    x[:, :, _VIB] += rng.standard_normal((n, window_length)) * wear[:, None]
    return x.astype(np.float32)


def generate(
    labels: npt.ArrayLike,
    rng: np.random.Generator,
    regime: str = "standard",
    window_length: int = WINDOW_LENGTH,
) -> npt.NDArray[np.float32]:
    """Windows (N, T, C) float32 for `labels` under seed 000's "standard", "infer" or "drift".

    >>> rng = np.random.default_rng(0)
    >>> generate([3], rng, regime="infer").shape
    (1, 60, 4)
    >>> generate([0], rng, regime="later")
    Traceback (most recent call last):
    ...
    sensor_sim.errors.SimError: regime 'later' is not one of ('standard', 'infer', 'drift')
    """
    if regime not in PROFILES:
        raise SimError(f"regime {regime!r} is not one of {REGIMES}")
    return sample(labels, rng, base=PROFILES[regime], window_length=window_length)


def sine_moments(
    k: tuple[float, float],
    a: tuple[float, float],
    window_length: int = WINDOW_LENGTH,
    grid: int = 20001,
) -> tuple[float, float]:
    """(mean, variance) of the bearing sine term over samples, k and a, by quadrature.

    The expected per-sample vibration of bearing_fault is then mean_vib + this mean, and its
    pooled variance std_vib² + this variance (tests use it to check the generated data).

    >>> m, v = sine_moments((4.0, 9.0), (0.1, 0.25))
    >>> round(m, 4), round(v, 4)
    (0.0089, 0.016)
    """
    ks = np.linspace(k[0], k[1], grid)
    s = np.sin(np.linspace(0.0, 1.0, window_length)[None, :] * (ks * np.pi)[:, None])
    ea = (a[0] + a[1]) / 2
    ea2 = (a[0] ** 2 + a[0] * a[1] + a[1] ** 2) / 3
    es, es2 = float(s.mean()), float((s**2).mean())
    return ea * es, ea2 * es2 - (ea * es) ** 2
