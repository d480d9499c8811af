"""Keras architectures: `seed` (seed 000, exactly) and `compact` (for a Pi Zero 2W).

Both take normalised windows (None, T, C) float32 — the batch dimension stays free so the Pi can
resize it for micro-batches — and return softmax probabilities over the classes.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from protocol.machine_type import DEFAULT_TYPE

from ..errors import TrainerError

__all__ = ["ARCHS", "SEED_PARAMS", "build_model", "learning_rate"]

ARCHS = ("compact", "seed", "rocket")  # rocket: jetson_trainer/build/rocket.py (long windows)
SEED_PARAMS = 603_844
_LEARNING_RATE = {"seed": 8e-4, "compact": 3e-3, "rocket": 1e-2}


def learning_rate(arch: str) -> float:
    """Initial Adam learning rate for `arch` (seed 000 used 8e-4)."""
    return _LEARNING_RATE[_check_arch(arch)]


def _check_arch(arch: str) -> str:
    if arch not in ARCHS:
        raise TrainerError(f"unknown architecture {arch!r}; choose one of {ARCHS}")
    return arch


def build_model(
    arch: str = "compact",
    *,
    window_length: int = DEFAULT_TYPE.window_length,
    n_channels: int = len(DEFAULT_TYPE.channels),
    n_classes: int = len(DEFAULT_TYPE.classes),
    seed: int = 0,
) -> Any:
    """An uncompiled Keras model of architecture `arch`."""
    keras.utils.set_random_seed(seed)
    if _check_arch(arch) == "seed":
        return _seed(window_length, n_channels, n_classes)
    return _compact(window_length, n_channels, n_classes)


def _seed(t: int, c: int, k: int) -> Any:
    """Seed 000's 1D-CNN: 603,844 parameters at T=60, C=4, 4 classes."""
    inp = keras.Input(shape=(t, c), name="window")
    x = inp
    for filters, kernel, drop in ((64, 5, 0.3), (128, 5, 0.4), (256, 3, 0.5)):
        x = layers.Conv1D(filters, kernel, padding="same", activation="relu")(x)
        x = layers.BatchNormalization()(x)
        x = layers.MaxPooling1D(2)(x)
        x = layers.Dropout(drop)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(256, activation="relu")(x)
    x = layers.BatchNormalization()(x)
    x = layers.Dropout(0.5)(x)
    out = layers.Dense(k, activation="softmax", name="probs")(x)
    return keras.Model(inp, out, name="seed000_cnn")


def _compact(t: int, c: int, k: int) -> Any:
    """A few-thousand-parameter net: per-window channel statistics + a small strided conv stack.

    The classes differ mostly in per-window channel means (temperature, pressure, power shifts)
    and in the texture of vibration (bearing: a sine; wear: noise), so the net sees
    - the per-channel window mean and mean square (global mean and std pooling, 2·C numbers),
    - a 2-layer Conv1D (kernel 7 stride 2, kernel 5) pooled by mean and by mean square,
    then a 24-unit dense layer.
    """
    inp = keras.Input(shape=(t, c), name="window")
    sq = layers.Multiply(name="x_sq")([inp, inp])
    mean_x = layers.GlobalAveragePooling1D(name="mean_x")(inp)
    msq_x = layers.GlobalAveragePooling1D(name="msq_x")(sq)
    h = layers.Conv1D(12, 7, strides=2, padding="same", activation="relu", name="conv1")(inp)
    h = layers.Conv1D(16, 5, padding="same", activation="relu", name="conv2")(h)
    mean_h = layers.GlobalAveragePooling1D(name="mean_h")(h)
    h_sq = layers.Multiply(name="h_sq")([h, h])
    msq_h = layers.GlobalAveragePooling1D(name="msq_h")(h_sq)
    z = layers.Concatenate(name="features")([mean_x, msq_x, mean_h, msq_h])
    z = layers.Dense(24, activation="relu", name="dense")(z)
    out = layers.Dense(k, activation="softmax", name="probs")(z)
    return keras.Model(inp, out, name="compact_cnn")
