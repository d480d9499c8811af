"""Initial training and fine-tuning of a Keras model on normalised windows.

`train_model` and `finetune_model` take and return values (arrays, a Keras model), so a trainer
daemon can call them without the CLI.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from protocol.machine_type import DEFAULT_TYPE, MachineType
from protocol.model_input import normalise

from ..errors import TrainerError
from .data import check_xy, normalisation, stratified_split

__all__ = [
    "FINETUNE_LR",
    "TrainResult",
    "device_name",
    "finetune_model",
    "finetune_with_summary",
    "train_model",
]

log = logging.getLogger(__name__)

FINETUNE_LR = {"seed": 2e-4, "compact": 1e-3}
VAL_FRACTION = 0.2


@dataclass(slots=True)
class TrainResult:
    """A trained model and what the bundle and report need from the run."""

    model: Any
    arch: str
    norm: dict[str, list[float]]
    history: dict[str, list[float]]
    x_val: np.ndarray  # raw windows of the validation split
    y_val: np.ndarray
    x_train: np.ndarray  # raw windows the model was fitted on
    y_train: np.ndarray
    seconds: float
    device: str
    epochs_run: int
    extra: dict[str, Any] = field(default_factory=dict)


def device_name() -> str:
    """'GPU:<name>' when TensorFlow sees a GPU (as on a Jetson), else 'CPU'."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return f"GPU:{gpus[0].name}" if gpus else "CPU"


def _callbacks(patience: int, verbose: int) -> list[Any]:
    import keras

    cbs: list[Any] = [
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=patience, restore_best_weights=True
        ),
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=0.2, patience=max(2, patience // 2), min_lr=1e-6
        ),
    ]
    if verbose:
        cbs.append(_progress_callback())
    return cbs


def _progress_callback() -> Any:
    import keras

    def on_epoch_end(epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = logs or {}
        log.info(
            "epoch %d: loss %.4f acc %.4f val_loss %.4f val_acc %.4f",
            epoch + 1,
            logs.get("loss", float("nan")),
            logs.get("accuracy", float("nan")),
            logs.get("val_loss", float("nan")),
            logs.get("val_accuracy", float("nan")),
        )

    return keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end)


def train_model(
    x: np.ndarray,
    y: np.ndarray,
    *,
    arch: str = "compact",
    epochs: int = 40,
    seed: int = 0,
    batch_size: int = 64,
    patience: int = 10,
    verbose: int = 0,
    kind: MachineType = DEFAULT_TYPE,
) -> TrainResult:
    """Train `arch` on raw windows `x` (N, T, C) and labels `y` with a 20 % stratified validation.

    Normalisation (per-channel mean/std) comes from the training part only; EarlyStopping on
    val_loss restores the best weights, ReduceLROnPlateau lowers the rate by 5×.
    `verbose`: 0 silent, 1 one log line per epoch, 2 Keras' progress bar.
    """
    import keras

    from .architectures import build_model, learning_rate  # Keras: imported only when training
    from .rocket import architecture_for, build_rocket, fit_head

    x, y = check_xy(x, y, "training data", kind)
    if len(np.unique(y)) < 2:
        raise TrainerError(
            f"training data has only class(es) {np.unique(y).tolist()}; need at least two"
        )
    tr, va = stratified_split(y, VAL_FRACTION, seed)
    norm = normalisation(x[tr])
    xn_tr, xn_va = normalise(x[tr], norm), normalise(x[va], norm)  # what the Pi feeds it
    if arch == "auto":  # by the machine type's window length
        arch = architecture_for(x.shape[1])
    if arch == "rocket":  # fixed front-end: fit the head on its features, computed once
        model = build_rocket(xn_tr, len(kind.classes), seed)
        t0 = time.perf_counter()
        tried = fit_head(model, xn_tr, y[tr], xn_va, y[va], len(kind.classes))
        model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        seconds = time.perf_counter() - t0
        log.info("fitted the rocket head in %.1f s: validation accuracy by C %s", seconds, tried)
        return TrainResult(
            model=model,
            arch=arch,
            norm=norm,
            history={"val_accuracy": tried["val_accuracy"]},
            x_val=x[va],
            y_val=y[va],
            x_train=x[tr],
            y_train=y[tr],
            seconds=seconds,
            device=device_name(),
            epochs_run=0,
        )
    model = build_model(
        arch,
        window_length=x.shape[1],
        n_channels=x.shape[2],
        n_classes=len(kind.classes),
        seed=seed,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate(arch)),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    device = device_name()
    log.info(
        "training %s (%d parameters) on %d windows, validating on %d, device %s",
        arch,
        model.count_params(),
        len(tr),
        len(va),
        device,
    )
    t0 = time.perf_counter()
    hist = model.fit(
        xn_tr,
        y[tr],
        validation_data=(xn_va, y[va]),
        epochs=epochs,
        batch_size=batch_size,
        callbacks=_callbacks(patience, verbose),
        verbose=2 if verbose >= 2 else 0,
        shuffle=True,
    )
    seconds = time.perf_counter() - t0
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    log.info("trained %s in %.1f s (%d epochs)", arch, seconds, len(history.get("loss", [])))
    return TrainResult(
        model=model,
        arch=arch,
        norm=norm,
        history=history,
        x_val=x[va],
        y_val=y[va],
        x_train=x[tr],
        y_train=y[tr],
        seconds=seconds,
        device=device,
        epochs_run=len(history.get("loss", [])),
    )


def finetune_model(
    keras_model: Any,
    x_new: np.ndarray,
    y_new: np.ndarray,
    x_replay: np.ndarray | None,
    y_replay: np.ndarray | None,
    *,
    norm: dict[str, list[float]],
    epochs: int = 40,
    seed: int = 0,
    lr: float | None = None,
    replay_size: int = 1000,
    new_weight: float = 0.5,
    batch_size: int = 64,
    arch: str = "compact",
) -> Any:
    """The fine-tuned Keras model; see `finetune_with_summary` for the parameters."""
    model, _ = finetune_with_summary(
        keras_model,
        x_new,
        y_new,
        x_replay,
        y_replay,
        norm=norm,
        epochs=epochs,
        seed=seed,
        lr=lr,
        replay_size=replay_size,
        new_weight=new_weight,
        batch_size=batch_size,
        arch=arch,
    )
    return model


def finetune_with_summary(
    keras_model: Any,
    x_new: np.ndarray,
    y_new: np.ndarray,
    x_replay: np.ndarray | None,
    y_replay: np.ndarray | None,
    *,
    norm: dict[str, list[float]],
    epochs: int = 40,
    seed: int = 0,
    lr: float | None = None,
    replay_size: int = 1000,
    new_weight: float = 0.5,
    batch_size: int = 64,
    arch: str = "compact",
) -> tuple[Any, dict[str, Any]]:
    """Continue training `keras_model` on labeled new (drift) windows plus replay of old data.

    Raw windows in, normalised with the *original* `norm` (the model's input contract does not
    change). The few new windows are repeated so they make up about `new_weight` of each epoch;
    `replay_size` old windows (class-balanced sample) keep old conditions from being forgotten.
    Returns the tuned model (a copy; `keras_model` is untouched) and a summary of the run.
    """
    import keras

    x_new, y_new = check_xy(x_new, y_new, "fine-tuning data")
    rng = np.random.default_rng(seed)
    parts_x, parts_y = [], []
    n_replay = 0
    if x_replay is not None and y_replay is not None and replay_size > 0:
        x_replay, y_replay = check_xy(x_replay, y_replay, "replay data")
        n = min(replay_size, len(x_replay))
        idx = rng.choice(len(x_replay), n, replace=False)
        parts_x.append(x_replay[idx])
        parts_y.append(y_replay[idx])
        n_replay = n
    target_new = max(len(x_new), round(n_replay * new_weight / max(1e-9, 1 - new_weight)))
    reps = max(1, round(target_new / len(x_new)))
    parts_x.append(np.repeat(x_new, reps, axis=0))
    parts_y.append(np.repeat(y_new, reps, axis=0))
    x_all = normalise(np.concatenate(parts_x), norm)
    y_all = np.concatenate(parts_y)
    order = rng.permutation(len(x_all))
    x_all, y_all = x_all[order], y_all[order]

    keras.utils.set_random_seed(seed)
    tuned = keras.models.clone_model(keras_model)
    tuned.set_weights(keras_model.get_weights())
    lr = lr if lr is not None else FINETUNE_LR.get(arch, 1e-3)
    tuned.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    t0 = time.perf_counter()
    hist = tuned.fit(x_all, y_all, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True)
    seconds = time.perf_counter() - t0
    summary = {
        "n_new": len(x_new),
        "new_repeats": reps,
        "n_replay": n_replay,
        "lr": lr,
        "epochs": epochs,
        "seconds": seconds,
        "history": {k: [float(v) for v in vals] for k, vals in hist.history.items()},
    }
    log.info(
        "fine-tuned on %d new (×%d) + %d replay windows in %.1f s",
        len(x_new),
        reps,
        n_replay,
        seconds,
    )
    return tuned, summary
