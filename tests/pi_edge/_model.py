"""Build a real, tiny, trained TFLite model and signed bundles for the pi_edge tests.

Uses TensorFlow (tests only) and sensor_sim's data. Kept independent of pi_edge's own code:
golden probabilities come from LiteRT's interpreter with the normalisation written here.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol import CLASSES, DEFAULT_PREFIX, Manifest, encode_bundle
from protocol.features import feature_stats


@dataclass(frozen=True)
class EdgeModels:
    dir: Path
    public_key_path: Path
    public_key: bytes
    private_key: Ed25519PrivateKey
    manifest: Manifest  # v1, float32 input
    model: bytes
    bundle_path: Path  # v1 signed
    int8_manifest: Manifest
    int8_model: bytes
    x_test: np.ndarray
    y_test: np.ndarray
    x_test_path: Path
    y_test_path: Path
    keras_path: Path  # the trained Keras model, as a trainer keeps it beside a bundle

    def bundle(
        self, version: int, *, signed: bool = True, int8: bool = False, **changes: object
    ) -> bytes:
        """Bundle `version` of the test model; a node takes one from MQTT only if it was made
        for its prefix: pass `site=topics.prefix` (the default is DEFAULT_PREFIX)."""
        base = self.int8_manifest if int8 else self.manifest
        model = self.int8_model if int8 else self.model
        m = replace(base, version=version, parent=version - 1 if version > 1 else None, **changes)
        return encode_bundle(m, model, self.private_key.sign if signed else None)

    def bundle_manifest(self, version: int, **changes: object) -> dict[str, object]:
        """The JSON object of `bundle(version)`'s manifest, to corrupt in tests."""
        m = replace(self.manifest, version=version, parent=version - 1 if version > 1 else None)
        return {**m.to_dict(), **changes}


def _tiny_model(tf: object, t: int, c: int, k: int) -> object:
    keras = tf.keras  # type: ignore[attr-defined]
    keras.utils.set_random_seed(0)
    inp = keras.Input((t, c))
    h = keras.layers.Conv1D(8, 5, activation="relu")(inp)
    h = keras.layers.GlobalAveragePooling1D()(h)
    out = keras.layers.Dense(k, activation="softmax")(h)
    model = keras.Model(inp, out)
    model.compile(
        optimizer=keras.optimizers.Adam(0.02),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def build(out: Path) -> EdgeModels:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from sensor_sim.dataset import make_split

    rng = np.random.default_rng(0)
    x, y = make_split("train", 800, rng)
    x_test, y_test = make_split("infer", 200, rng)
    mean = x.reshape(-1, x.shape[2]).mean(axis=0)
    std = x.reshape(-1, x.shape[2]).std(axis=0) + 1e-6
    norm = {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}

    def normalise(a: np.ndarray) -> np.ndarray:
        return ((a - np.float32(mean)) / np.float32(std)).astype(np.float32)

    model = _tiny_model(tf, x.shape[1], x.shape[2], 4)
    model.fit(normalise(x), y, epochs=8, batch_size=32, verbose=0)  # type: ignore[attr-defined]
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.keras")  # type: ignore[attr-defined]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    f32 = conv.convert()
    conv8 = tf.lite.TFLiteConverter.from_keras_model(model)
    conv8.optimizations = [tf.lite.Optimize.DEFAULT]
    rep = normalise(x[:100])
    conv8.representative_dataset = lambda: ([rep[i : i + 1]] for i in range(len(rep)))
    conv8.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv8.inference_input_type = tf.int8
    conv8.inference_output_type = tf.float32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        i8 = conv8.convert()

    def tflite_probs(model_bytes: bytes, a: np.ndarray) -> np.ndarray:
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_content=model_bytes)
        d = interp.get_input_details()[0]
        interp.resize_tensor_input(d["index"], [len(a), *a.shape[1:]])
        interp.allocate_tensors()
        z = normalise(a)
        if d["dtype"] == np.int8:
            s, zp = d["quantization"]
            z = np.clip(np.round(z / s) + zp, -128, 127).astype(np.int8)
        interp.set_tensor(d["index"], z)
        interp.invoke()
        return interp.get_tensor(interp.get_output_details()[0]["index"])

    golden_x = x_test[:6]

    def manifest(model_bytes: bytes, quant: str) -> Manifest:
        probs = tflite_probs(model_bytes, golden_x)
        return Manifest(
            version=1,
            model_sha256=hashlib.sha256(model_bytes).hexdigest(),
            model_bytes=len(model_bytes),
            created=1.7e9,
            site=DEFAULT_PREFIX,
            quantization=quant,
            arch="test-tiny",
            converter=f"tensorflow {tf.__version__}",
            normalisation=norm,
            golden=[
                {"x": g.tolist(), "probs": p.tolist()} for g, p in zip(golden_x, probs, strict=True)
            ],
            golden_tolerance=0.05,
            train_stats={"features": feature_stats(x, y, CLASSES)},
            metrics={"accuracy": 0.99, "mean_confidence": 0.95},
        )

    key = Ed25519PrivateKey.generate()
    out.mkdir(parents=True, exist_ok=True)
    pub_path = out / "trainer_ed25519.pub.pem"
    pub_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    raw_pub = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    m32 = manifest(f32, "float32")
    m8 = manifest(i8, "int8")
    bundle_path = out / "model_v1.bundle"
    bundle_path.write_bytes(encode_bundle(m32, f32, key.sign))
    np.save(out / "x_test.npy", x_test)
    np.save(out / "y_test.npy", y_test)
    return EdgeModels(
        out,
        pub_path,
        raw_pub,
        key,
        m32,
        f32,
        bundle_path,
        m8,
        i8,
        x_test,
        y_test,
        out / "x_test.npy",
        out / "y_test.npy",
        out / "model.keras",
    )
