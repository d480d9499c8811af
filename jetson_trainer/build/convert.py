"""Keras → TFLite (float32, float16, full int8) and the checks every variant must pass.

The converted model keeps float32 input and output (int8 inside for `int8`) and the free batch
dimension; its input is the *normalised* window, so a per-tensor int8 input scale never has to
span temperature (~50) and vibration (~0.3) at once. Every function here takes raw windows and
the normalisation: Keras and the representative data get `protocol.model_input.normalise`, the
converted model gets what the Pi would feed it (`LiteModel`, the same transform).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from protocol.model_input import normalise

from ..errors import TrainerError
from .interpreter import LiteModel, micros_per_window

__all__ = [
    "MIN_AGREEMENT",
    "QUANTIZATIONS",
    "Variant",
    "convert",
    "convert_and_verify",
    "converter_version",
    "pick_variant",
]

log = logging.getLogger(__name__)

Norm = Mapping[str, Sequence[float]]  # a manifest's normalisation: per-channel mean, std

QUANTIZATIONS = ("int8", "float16", "float32")
MIN_AGREEMENT = 0.995
_REPRESENTATIVE = 500


@dataclass(frozen=True, slots=True)
class Variant:
    """One converted model and how well it matches Keras on held-out data."""

    quantization: str
    model: bytes
    agreement: float
    max_prob_diff: float
    size_bytes: int
    us_per_window: float
    batch_resize_ok: bool

    @property
    def passed(self) -> bool:
        return self.agreement >= MIN_AGREEMENT and self.batch_resize_ok

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        del d["model"]
        d["passed"] = self.passed
        return d


def converter_version() -> str:
    import tensorflow as tf

    return f"tensorflow {tf.__version__}"


def convert(
    keras_model: Any, quantization: str, representative: np.ndarray | None = None, seed: int = 0
) -> bytes:
    """The .tflite bytes of `keras_model` at `quantization` (`representative`: normalised x,
    `protocol.model_input.normalise` of raw training windows)."""
    import tensorflow as tf

    if quantization not in QUANTIZATIONS:
        raise TrainerError(f"unknown quantization {quantization!r}; choose one of {QUANTIZATIONS}")
    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    if quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        if representative is None or len(representative) == 0:
            raise TrainerError("int8 conversion needs representative (normalised training) windows")
        rng = np.random.default_rng(seed)
        n = min(_REPRESENTATIVE, len(representative))
        rep = np.asarray(representative, np.float32)[
            rng.choice(len(representative), n, replace=False)
        ]

        def gen() -> Iterator[list[np.ndarray]]:
            for i in range(len(rep)):
                yield [rep[i : i + 1]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = gen
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    old = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    try:
        # Keras' export prints the SavedModel signature to stdout; keep stdout for --json.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            # "Statistics for quantized inputs were expected": the input stays float32 on purpose.
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            model = bytes(converter.convert())
    except Exception as exc:  # the converter raises many unrelated types
        raise TrainerError(f"TFLite conversion to {quantization} failed: {exc}") from exc
    finally:
        if old is None:
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
        else:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = old
    return model


def _batch_resize_ok(model: bytes, norm: Norm, x: np.ndarray) -> bool:
    """True if the model runs at batch 1 and 7 and gives the same rows either way (raw `x`)."""
    lite = LiteModel(model, norm)
    if lite.input_shape[0] != -1:
        return False
    sample = np.asarray(x[:7], np.float32)
    one = np.concatenate(
        [lite.predict(sample[i : i + 1], batch_size=1) for i in range(len(sample))]
    )
    many = lite.predict(sample, batch_size=len(sample))
    return bool(np.allclose(one, many, atol=1e-5))


def verify(
    quantization: str,
    model: bytes,
    keras_probs: np.ndarray,
    x_held: np.ndarray,
    *,
    norm: Norm,
    time_repeats: int = 300,
) -> Variant:
    """Compare a converted model with Keras probabilities on raw held-out windows."""
    probs = LiteModel(model, norm).predict(x_held)
    agreement = float(np.mean(probs.argmax(1) == keras_probs.argmax(1)))
    return Variant(
        quantization=quantization,
        model=model,
        agreement=agreement,
        max_prob_diff=float(np.abs(probs - keras_probs).max()),
        size_bytes=len(model),
        us_per_window=micros_per_window(model, norm, x_held, batch=1, repeats=time_repeats),
        batch_resize_ok=_batch_resize_ok(model, norm, x_held),
    )


def convert_and_verify(
    keras_model: Any,
    x_rep: np.ndarray,
    x_held: np.ndarray,
    quantizations: tuple[str, ...] = QUANTIZATIONS,
    *,
    norm: Norm,
    seed: int = 0,
    time_repeats: int = 300,
) -> dict[str, Variant]:
    """Convert to every quantization in `quantizations` and verify each against Keras.

    `x_rep` (calibration) and `x_held` (the check) are raw windows; `norm` the normalisation.
    """
    xn_held = normalise(x_held, norm)
    keras_probs = np.asarray(keras_model.predict(xn_held, verbose=0, batch_size=256))
    rep = normalise(x_rep, norm) if "int8" in quantizations else None
    out: dict[str, Variant] = {}
    for q in quantizations:
        v = verify(
            q,
            convert(keras_model, q, rep, seed),
            keras_probs,
            x_held,
            norm=norm,
            time_repeats=time_repeats,
        )
        log.info(
            "%s: agreement %.4f, max |Δp| %.4f, %d bytes, %.1f µs/window, resize %s",
            q,
            v.agreement,
            v.max_prob_diff,
            v.size_bytes,
            v.us_per_window,
            "ok" if v.batch_resize_ok else "FAILED",
        )
        out[q] = v
    return out


def convert_with_fallback(
    keras_model: Any,
    x_rep: np.ndarray,
    x_held: np.ndarray,
    preferred: str = "int8",
    *,
    norm: Norm,
    seed: int = 0,
    time_repeats: int = 300,
) -> dict[str, Variant]:
    """`preferred` first; only if it fails its check, the other quantizations in turn until
    one passes. A model that does not quantize well (a fine-tune on hard data: int8 agreeing
    with Keras on 98 % of windows) still ships, as float16 or float32, instead of failing."""
    variants = convert_and_verify(
        keras_model, x_rep, x_held, (preferred,), norm=norm, seed=seed, time_repeats=time_repeats
    )
    for q in QUANTIZATIONS:
        if any(v.passed for v in variants.values()):
            break
        if q not in variants:
            log.warning("%s failed its check; trying %s", preferred, q)
            variants.update(
                convert_and_verify(
                    keras_model,
                    x_rep,
                    x_held,
                    (q,),
                    norm=norm,
                    seed=seed,
                    time_repeats=time_repeats,
                )
            )
    return variants


def pick_variant(variants: dict[str, Variant], preferred: str = "int8") -> Variant:
    """`preferred` if it passed, else the first passing of int8, float16, float32."""
    order = [preferred, *(q for q in QUANTIZATIONS if q != preferred)]
    for q in order:
        v = variants.get(q)
        if v is not None and v.passed:
            if q != preferred:
                log.warning("%s failed its check; shipping %s instead", preferred, q)
            return v
    detail = ", ".join(
        f"{q}: agreement {v.agreement:.4f}, resize ok {v.batch_resize_ok}"
        for q, v in variants.items()
    )
    raise TrainerError(
        f"no converted variant passed (need argmax agreement ≥ {MIN_AGREEMENT} "
        f"and a resizable batch): {detail}"
    )
