"""Other versions of the test model, validly signed with the test key: a bad one and a good one.

Built like `_model.build` (same tiny network, same normalisation as v1, real TFLite conversion,
golden vectors from LiteRT), but trained on other labels or data:

- `permuted`: trained on the classes shifted by one, so it is as confident as v1 and wrong on
  nearly every window — a model that only labeled accuracy can catch;
- `shuffled`: trained on shuffled labels, so it is unsure of everything;
- `finetuned`: v1's recipe, then fine-tuned on drifted data with replay of the original data —
  the good model a trainer sends after a drift.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace

import numpy as np

from protocol import CLASSES, Manifest, encode_bundle
from protocol.features import feature_stats

from ._model import EdgeModels, _tiny_model


def _tflite_probs(model_bytes: bytes, z: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model_bytes)
    d = interp.get_input_details()[0]
    interp.resize_tensor_input(d["index"], [len(z), *z.shape[1:]])
    interp.allocate_tensors()
    interp.set_tensor(d["index"], z.astype(np.float32))
    interp.invoke()
    return np.asarray(interp.get_tensor(interp.get_output_details()[0]["index"]))


def variant(models: EdgeModels, kind: str, version: int, site: str) -> bytes:
    """A signed float32 bundle `version` of `kind` (permuted, shuffled or finetuned)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from sensor_sim.dataset import make_split

    norm = models.manifest.normalisation
    mean = np.asarray(norm["mean"], np.float32)
    std = np.asarray(norm["std"], np.float32)

    def normalise(a: np.ndarray) -> np.ndarray:
        return ((a - mean) / std).astype(np.float32)

    rng = np.random.default_rng(0)
    x, y = make_split("train", 800, rng)  # v1's training data (same stream as _model.build)
    model = _tiny_model(tf, x.shape[1], x.shape[2], len(CLASSES))
    if kind == "permuted":
        y_fit = (y + 1) % len(CLASSES)
        model.fit(normalise(x), y_fit, epochs=8, batch_size=32, verbose=0)  # type: ignore[attr-defined]
        x_stats, y_stats = x, y_fit
    elif kind == "shuffled":
        y_fit = np.random.default_rng(7).permutation(y)
        model.fit(normalise(x), y_fit, epochs=8, batch_size=32, verbose=0)  # type: ignore[attr-defined]
        x_stats, y_stats = x, y_fit
    elif kind == "finetuned":
        model.fit(normalise(x), y, epochs=8, batch_size=32, verbose=0)  # type: ignore[attr-defined]
        xd, yd = make_split("drift_train", 800, np.random.default_rng(11))
        x_ft = np.concatenate([xd, x[:400]])  # the drifted data, with replay of the original
        y_ft = np.concatenate([yd, y[:400]])
        model.fit(normalise(x_ft), y_ft, epochs=8, batch_size=32, verbose=0)  # type: ignore[attr-defined]
        x_stats, y_stats = x_ft, y_ft
    else:
        raise ValueError(f"no test model variant {kind!r}")
    tflite = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    golden_x = models.x_test[:6]
    probs = _tflite_probs(tflite, normalise(golden_x))
    manifest: Manifest = replace(
        models.manifest,
        version=version,
        parent=version - 1,
        site=site,
        model_sha256=hashlib.sha256(tflite).hexdigest(),
        model_bytes=len(tflite),
        golden=[
            {"x": g.tolist(), "probs": p.tolist()} for g, p in zip(golden_x, probs, strict=True)
        ],
        train_stats={"features": feature_stats(x_stats, y_stats, CLASSES)},
    )
    return encode_bundle(manifest, tflite, models.private_key.sign)
