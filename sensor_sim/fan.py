"""A second simulated machine type: a belt-driven fan, three channels, 128-sample windows.

The seed machine (physics.py) draws every sample independently; a fan's vibration is periodic.
Each window is 128 samples at 1 kHz (0.128 s) of two radial accelerometers (`vib_x`, `vib_y`,
g, 90° apart) and the motor's current (`current`, A). The shaft turns at `rpm_hz` (25 Hz,
about 3.2 turns per window) with a random phase per window; each class is the textbook
vibration signature of its fault (ISO 20816 practice, e.g. Mobius Institute's charts):

* ok            1× at 0.10 g, 2× at 0.03 g, sensor noise 0.05 g; current 5.0 A ± 0.10
* imbalance     1× at 0.60 g in both axes, in quadrature (a rotating force); current +0.3 A
* misalignment  2× at 0.45 g, x and y in phase (an axial bending), 1× at 0.20 g; current +0.6 A
* looseness     harmonics 1×…5× at 0.15 g each plus ½× at 0.10 g, noise 0.15 g, and
                random impacts (2 per window, 0.8 g, one sample wide); current ± 0.35 A

The drift regime is a belt swap: the shaft speeds up to 30 Hz, the mounts stiffen (vibration
× 1.3) and the motor draws 1.0 A more; `blend` moves every window linearly towards it.

>>> rng = np.random.default_rng(0)
>>> x = generate(np.array([0, 1, 2, 3]), rng)
>>> x.shape, x.dtype
((4, 128, 3), dtype('float32'))
>>> ok, imb = generate(np.zeros(200, np.int64), rng), generate(np.ones(200, np.int64), rng)
>>> bool(imb[..., 0].std() > 3 * ok[..., 0].std())  # imbalance shakes the fan
True
>>> round(float(generate(np.zeros(500, np.int64), rng, blend=1.0)[..., 2].mean()), 1)
6.0
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from protocol.machine_type import Channel, MachineType

from .errors import SimError

SAMPLE_HZ = 1000.0
WINDOW = 128
RPM_HZ = 25.0  # shaft speed in the standard regime
DRIFT_RPM_HZ = 30.0  # after the belt swap
DRIFT_VIB_GAIN = 1.3
DRIFT_CURRENT_A = 1.0

FAN_TYPE = MachineType(
    name="fan",
    channels=(
        Channel("vib_x", "g", SAMPLE_HZ),
        Channel("vib_y", "g", SAMPLE_HZ),
        Channel("current", "A", SAMPLE_HZ),
    ),
    sample_hz=SAMPLE_HZ,
    window_length=WINDOW,
    hop=WINDOW,
    classes=("ok", "imbalance", "misalignment", "looseness"),
    normal="ok",
    machines=("fan-*",),
)
OK, IMBALANCE, MISALIGNMENT, LOOSENESS = range(4)


def generate(
    labels: npt.ArrayLike,
    rng: np.random.Generator,
    *,
    blend: npt.ArrayLike = 0.0,
    window_length: int = WINDOW,
) -> npt.NDArray[np.float32]:
    """Fan windows (N, T, 3) float32 for class indices `labels` (0 ok … 3 looseness), each
    `blend` (scalar or per window, 0..1) of the way from the standard to the drift regime."""
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    if y.size and (y.min() < 0 or y.max() >= len(FAN_TYPE.classes)):
        raise SimError(f"fan class indices must be 0..{len(FAN_TYPE.classes) - 1}")
    if window_length < 1:
        raise SimError(f"window_length {window_length} must be ≥ 1")
    n = len(y)
    b = np.broadcast_to(np.asarray(blend, dtype=np.float64), (n,))
    if b.size and not (np.isfinite(b).all() and b.min() >= 0 and b.max() <= 1):
        raise SimError("blend must be finite and within 0..1")
    t = np.arange(window_length) / SAMPLE_HZ
    f = RPM_HZ + b * (DRIFT_RPM_HZ - RPM_HZ)
    theta = 2 * np.pi * f[:, None] * t[None, :] + rng.uniform(0, 2 * np.pi, (n, 1))  # (N, T)
    col = {c: (y == c)[:, None] for c in (IMBALANCE, MISALIGNMENT, LOOSENESS)}
    amp1 = np.select([col[IMBALANCE], col[MISALIGNMENT], col[LOOSENESS]], [0.60, 0.20, 0.15], 0.10)
    amp2 = np.select([col[MISALIGNMENT], col[LOOSENESS]], [0.45, 0.15], 0.03)
    s2 = np.sin(2 * theta)
    vx = amp1 * np.sin(theta) + amp2 * s2
    vy = amp1 * np.cos(theta) + amp2 * np.where(col[MISALIGNMENT], s2, np.cos(2 * theta))
    for order, amp in ((0.5, 0.10), (3, 0.15), (4, 0.15), (5, 0.15)):  # looseness' comb
        vx += col[LOOSENESS] * amp * np.sin(order * theta)
        vy += col[LOOSENESS] * amp * np.cos(order * theta)
    noise = np.where(col[LOOSENESS], 0.15, 0.05)
    vx += rng.standard_normal((n, window_length)) * noise
    vy += rng.standard_normal((n, window_length)) * noise
    hits = rng.integers(0, window_length, (n, 2))
    kick = np.where(y == LOOSENESS, 0.8, 0.0)
    np.add.at(vx, (np.repeat(np.arange(n), 2), hits.ravel()), np.repeat(kick, 2))
    gain = 1.0 + b[:, None] * (DRIFT_VIB_GAIN - 1.0)
    mean = 5.0 + np.select([y == IMBALANCE, y == MISALIGNMENT], [0.3, 0.6], 0.0)
    mean = mean + b * DRIFT_CURRENT_A
    spread = np.where(y == LOOSENESS, 0.35, 0.10)
    current = mean[:, None] + rng.standard_normal((n, window_length)) * spread[:, None]
    return np.stack([vx * gain, vy * gain, current], axis=-1).astype(np.float32)
