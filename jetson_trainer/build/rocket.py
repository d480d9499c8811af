"""A front-end for long windows: fixed random dilated convolutions, pooled by the proportion of
positive values (PPV), and a linear head — MiniRocket's recipe (Dempster et al. 2021) inside
the Keras model, so the Pi computes it in the same single LiteRT call as any model.

Why: the compact network (architectures.py) fits 60 × 4 windows; on a long one-channel real
data set (ACSF1, 1,460 samples) it scored far below the published 1-NN DTW baseline. Random
convolutions at dilations 1, 2, 4 … up to the window reach the long patterns a small stack of
learned convolutions cannot, and need no learning beyond the head: 84 kernels of length 9 with
weights in {−1, 2} (three 2s), per dilation, each over a random subset of the channels; for
each, `BIASES` thresholds from quantiles of its output on training windows; a feature is the
share of a window's time steps above a threshold. `architecture_for` picks this for windows
longer than `LONG_WINDOW` samples, the compact network otherwise.

int8 does not suit it: a quantized convolution output moves relative to its threshold and the
PPV features jump, so conversion's agreement check usually fails and float16 ships (the report
says so, `shipped_reason`).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

__all__ = ["BIASES", "KERNEL", "LONG_WINDOW", "architecture_for", "build_rocket", "dilations"]

KERNEL = 9
BIASES = (0.25, 0.5, 0.75)  # quantiles of a kernel's output on training windows
LONG_WINDOW = 128  # longer windows get this front-end (`arch` "auto")
_PATTERNS = tuple(itertools.combinations(range(KERNEL), 3))  # 84 kernels: where the 2s are
_BIAS_WINDOWS = 64


def architecture_for(window_length: int) -> str:
    """The architecture `auto` means for a machine type's window length.

    >>> architecture_for(60), architecture_for(1460)
    ('compact', 'rocket')
    """
    return "rocket" if window_length > LONG_WINDOW else "compact"


def dilations(window_length: int) -> tuple[int, ...]:
    """1, 2, 4 … while a kernel still fits in the window.

    >>> dilations(60), dilations(1460)
    ((1, 2, 4), (1, 2, 4, 8, 16, 32, 64, 128))
    """
    out, d = [], 1
    while (KERNEL - 1) * d < window_length:
        out.append(d)
        d *= 2
    return tuple(out)


def _weights(n_channels: int, rng: np.random.Generator) -> np.ndarray:
    """(KERNEL, C, 84) kernel weights: −1 everywhere, 2 at each pattern's three places, over a
    random non-empty subset of the channels (zero on the others)."""
    w = np.full((KERNEL, n_channels, len(_PATTERNS)), -1.0, np.float32)
    for k, where in enumerate(_PATTERNS):
        w[list(where), :, k] = 2.0
        if n_channels > 1:
            keep = rng.random(n_channels) < 0.5
            keep[rng.integers(n_channels)] = True
            w[:, ~keep, k] = 0.0
    return w


def build_rocket(xn_train: np.ndarray, n_classes: int, seed: int = 0) -> Any:
    """The Keras model for normalised training windows `xn_train` (N, T, C): fixed dilated
    convolutions, PPV at thresholds fitted on up to 64 of those windows, a softmax head (the
    only trainable weights)."""
    import keras
    from keras import layers, ops

    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    t, c = int(xn_train.shape[1]), int(xn_train.shape[2])
    sample = xn_train[rng.choice(len(xn_train), min(_BIAS_WINDOWS, len(xn_train)), replace=False)]
    inp = keras.Input(shape=(t, c), name="window")
    pooled = []
    for d in dilations(t):
        conv = layers.Conv1D(
            len(_PATTERNS),
            KERNEL,
            dilation_rate=d,
            padding="same",
            use_bias=False,
            trainable=False,
            name=f"rocket_d{d}",
        )
        h = conv(inp)  # (B, T, 84)
        conv.set_weights([_weights(c, rng)])
        out = np.asarray(conv(sample.astype(np.float32)))  # (n, T, 84): thresholds from data
        bias = np.quantile(out.reshape(-1, out.shape[-1]), BIASES, axis=0).T  # (84, nb)
        above = ops.cast(ops.greater(ops.expand_dims(h, -1), bias.astype(np.float32)), "float32")
        pooled.append(ops.reshape(ops.mean(above, axis=1), (-1, bias.size)))
    features = ops.concatenate(pooled, axis=-1) if len(pooled) > 1 else pooled[0]
    probs = layers.Dense(
        n_classes,
        activation="softmax",
        kernel_regularizer=keras.regularizers.L2(1e-3),
        name="probs",
    )(features)
    return keras.Model(inp, probs, name="rocket")


def fit_head(
    model: Any,
    xn_train: np.ndarray,
    y_train: np.ndarray,
    xn_val: np.ndarray,
    y_val: np.ndarray,
    n_classes: int,
) -> dict[str, list[float]]:
    """Fit the softmax head on the fixed features, computed once: a multinomial logistic
    regression (scikit-learn) on standardised PPV features, its regularisation picked on the
    validation windows, then folded into the model's `probs` layer (standardisation included).
    Returns a history of the validation accuracy per C tried."""
    import keras
    from sklearn.linear_model import LogisticRegression

    head = model.get_layer("probs")
    features = keras.Model(model.input, head.input)
    f_tr = np.asarray(features.predict(xn_train, verbose=0, batch_size=64), np.float64)
    f_va = np.asarray(features.predict(xn_val, verbose=0, batch_size=64), np.float64)
    mean, std = f_tr.mean(axis=0), f_tr.std(axis=0) + 1e-6
    z_tr, z_va = (f_tr - mean) / std, (f_va - mean) / std
    tried: dict[str, list[float]] = {"C": [], "val_accuracy": []}
    best: tuple[float, float, Any] | None = None
    for c in (0.01, 0.1, 1.0, 10.0):
        clf = LogisticRegression(C=c, max_iter=2000).fit(z_tr, y_train)
        acc = float((clf.predict(z_va) == y_val).mean()) if len(y_val) else 0.0
        tried["C"].append(c)
        tried["val_accuracy"].append(acc)
        if best is None or acc > best[0]:
            best = (acc, c, clf)
    assert best is not None
    clf = best[2]
    w = np.zeros((f_tr.shape[1], n_classes))
    b = np.full(n_classes, -1e4)  # a class absent from training is never predicted
    coef, intercept = clf.coef_, clf.intercept_
    if len(clf.classes_) == 2:  # binary: sklearn gives one row for class 1
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-1, 1]) * intercept / 2
    for row, k in enumerate(clf.classes_):
        w[:, k] = coef[row] / std
        b[k] = intercept[row] - float((mean / std) @ coef[row])
    head.set_weights([w.astype(np.float32), b.astype(np.float32)])
    return tried
