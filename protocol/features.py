"""Window summary features and the training statistics the Pi's drift detector compares to.

Both sides must compute features identically, so the definition lives here: for each channel,
the window's mean and its standard deviation over time — 2·C numbers per window, in the order
mean(c0) … mean(c(C−1)), std(c0) … std(c(C−1)).

>>> import numpy as np
>>> x = np.stack([np.full((60, 4), 1.0), np.full((60, 4), 3.0)]).astype(np.float32)
>>> window_features(x)[1].tolist()
[3.0, 3.0, 3.0, 3.0, 0.0, 0.0, 0.0, 0.0]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

MIN_STD = 1e-6


def window_features(x: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
    """(N, T, C) windows → (N, 2C) features: per-channel mean, then per-channel std."""
    x32 = np.asarray(x, dtype=np.float32)
    t = x32.shape[1]
    mean = x32.sum(axis=1) / t
    mean_sq = np.einsum("ntc,ntc->nc", x32, x32) / t  # one pass; float32 is ample for z-scores
    std = np.sqrt(np.maximum(mean_sq - mean * mean, 0.0))
    return np.concatenate([mean, std], axis=1).astype(np.float64)


def feature_stats(
    x: npt.NDArray[np.floating[Any]], y: npt.NDArray[np.integer[Any]], classes: tuple[str, ...]
) -> dict[str, Any]:
    """Per-class mean/std of the window features: the manifest's train_stats["features"]."""
    f = window_features(x)
    per_class: dict[str, dict[str, list[float]]] = {}
    for i, name in enumerate(classes):
        fc = f[np.asarray(y) == i]
        if len(fc) < 2:
            continue
        per_class[name] = {
            "mean": fc.mean(axis=0).tolist(),
            "std": np.maximum(fc.std(axis=0), MIN_STD).tolist(),
        }
    return {
        "definition": "per-channel window mean, then per-channel window std",
        "per_class": per_class,
    }


class FeatureReference:
    """Class-conditional feature means/stds loaded from a manifest's train_stats["features"]."""

    def __init__(self, stats: dict[str, Any], classes: tuple[str, ...]) -> None:
        per_class = stats.get("per_class", {})
        missing = [c for c in classes if c not in per_class]
        if missing:
            raise ValueError(f"feature stats lack classes {missing}; retrain with this trainer")
        self.mean = np.array([per_class[c]["mean"] for c in classes], dtype=np.float64)
        self.std = np.maximum(np.array([per_class[c]["std"] for c in classes]), MIN_STD)

    def z2(
        self, features: npt.NDArray[np.float64], cap: float | None = None
    ) -> npt.NDArray[np.float64]:
        """(N, 2C) features → (N, K) mean squared z-score against each class.

        With `cap`, each feature's z² is capped first, so one wild channel counts at most
        cap / 2C (drift statistics); without, it counts fully (out-of-distribution score).
        """
        return self.z2_both(features, cap if cap is not None else np.inf)[0 if cap else 1]

    def z2_both(
        self, features: npt.NDArray[np.float64], cap: float
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """(capped, uncapped) mean squared z-scores from one computation of z."""
        z = (features[:, None, :] - self.mean[None]) / self.std[None]
        z2 = z * z
        return np.minimum(z2, cap).mean(axis=2), z2.mean(axis=2)
