"""A second real model for the machine-type tests: a made-up type `press` (3 channels × 32
samples, 3 classes), trained and converted with the trainer's build path.

The trainer's architecture (`compact`), its normalisation, its converter and its golden vectors
(jetson_trainer/build) make a real `.tflite` of another shape than the built-in type's; the
manifest names the type (`machine_type`), signed with the session's key (tests/pi_edge/_model.py)
so one node with one public key takes both models. TensorFlow: tests only.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from protocol import DEFAULT_PREFIX, Manifest, encode_bundle
from protocol.features import feature_stats
from protocol.machine_type import Channel, MachineType

from ._model import EdgeModels

PRESS = MachineType(
    "press",
    (Channel("force", "kN"), Channel("stroke", "mm"), Channel("current", "A")),
    sample_hz=50.0,
    window_length=32,
    classes=("ok", "jam", "overload"),
    normal="ok",
    machines=("press-*",),
)


@dataclass(frozen=True)
class TypeModel:
    """The `press` model: manifest v1 (float32), its .tflite bytes, test windows of each class."""

    machine_type: MachineType
    manifest: Manifest
    model: bytes
    x_test: np.ndarray
    y_test: np.ndarray
    edge: EdgeModels  # the session's default-type model and key

    def bundle(self, version: int, **changes: object) -> bytes:
        """Bundle `version` of the press model, signed with the session's key (pass
        `site=topics.prefix` for a node on a test prefix)."""
        m = replace(
            self.manifest, version=version, parent=version - 1 if version > 1 else None, **changes
        )
        return encode_bundle(m, self.model, self.edge.private_key.sign)


def press_windows(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`n` raw press windows (32 × 3) and their labels: ok (a clean stroke), jam (force high,
    stroke stuck short), overload (current and force high, the stroke normal)."""
    y = rng.integers(0, 3, n)
    t = np.linspace(0.0, 1.0, 32, dtype=np.float64)
    stroke = 40.0 * np.sin(np.pi * t)  # one stroke per window, mm
    x = np.empty((n, 32, 3), np.float64)
    for i, k in enumerate(y):
        force = 20.0 + 30.0 * np.sin(np.pi * t) + rng.normal(0, 1.5, 32)
        s = stroke + rng.normal(0, 0.8, 32)
        current = 8.0 + rng.normal(0, 0.4, 32)
        if k == 1:  # jam: the stroke stops short, force piles up
            s = np.minimum(s, 12.0)
            force = force + 25.0
        elif k == 2:  # overload: the motor works hard through a normal stroke
            current = current + 6.0
            force = force + 12.0
        x[i] = np.stack([force, s, current], axis=1)
    return x.astype(np.float32), y.astype(np.int64)


def build_press(out: Path, edge: EdgeModels) -> TypeModel:
    """Train the press model with the trainer's `compact` net, convert to float32, manifest."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from jetson_trainer.build.architectures import build_model, learning_rate
    from jetson_trainer.build.artifacts import golden_vectors
    from jetson_trainer.build.convert import convert, converter_version
    from jetson_trainer.build.data import normalisation
    from protocol.model_input import normalise

    rng = np.random.default_rng(7)
    x, y = press_windows(600, rng)
    x_test, y_test = press_windows(60, rng)
    norm = normalisation(x)
    net = build_model("compact", window_length=32, n_channels=3, n_classes=3, seed=0)
    net.compile(
        optimizer=keras.optimizers.Adam(learning_rate("compact")),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    net.fit(normalise(x, norm), y, epochs=25, batch_size=32, verbose=0)
    model = convert(net, "float32")
    out.mkdir(parents=True, exist_ok=True)
    kind = PRESS.to_dict()
    del kind["classes"], kind["window_length"]  # the manifest's own fields say them
    manifest = Manifest(
        version=1,
        model_sha256=hashlib.sha256(model).hexdigest(),
        model_bytes=len(model),
        created=1.7e9,
        site=DEFAULT_PREFIX,
        classes=PRESS.classes,
        channels=PRESS.channel_names,
        window_length=PRESS.window_length,
        quantization="float32",
        arch="compact",
        converter=converter_version(),
        normalisation=norm,
        golden=golden_vectors(model, x_test, y_test, norm),
        golden_tolerance=0.001,
        train_stats={"features": feature_stats(x, y, PRESS.classes)},
        metrics={"accuracy": 0.99, "mean_confidence": 0.95},
        machine_type=kind,
    )
    (out / "press_v1.bundle").write_bytes(encode_bundle(manifest, model, edge.private_key.sign))
    return TypeModel(PRESS, manifest, model, x_test, y_test, edge)
