"""An anomaly head on a grown classifier: after class growth, a fault of a class the model does
not know is still flagged `anomaly` (issue 24, cold start).

A classifier trained on normal running plus the faults labeled so far has no "none of these"
answer: on the seed simulator, a grown [normal, bearing_fault] calls every drive_wear window
bearing_fault (confidence ≥ 0.94), and on the realistic plant a grown [normal, pump_fault]
calls every bearing_fault window normal. So the model carries a second output beside its
probabilities, computed in the same LiteRT call from the same normalised window:

- `u` = s / (1 + s), s = the window's Mahalanobis score (build/anomaly.py's features: per
  channel mean, standard deviation and roughness, whitened by the normal history) divided by
  the threshold (a 0.999 quantile of held-out normal scores × 1.5, as the anomaly model's):
  0.5 at the threshold, bounded, so int8 keeps it;
- `r` = Σ_c p_c · (cos(z, d_c) − τ_c) for the known fault classes c, − p_healthy: whether the
  window deviates from normal in the direction the labeled windows of its predicted class do.
  z is the whitened feature vector, d_c the mean z of the labeled windows of c that score above
  the threshold, τ_c the cosine of 3 × the widest angle among them (10°..30°). A fault that
  develops moves along its direction (its severity scales |z|), another fault moves elsewhere:
  on the seed simulator, bearing_fault windows lie within 10° of the bearing direction
  (cos ≥ 0.986) and drive_wear windows 27–37° from it (cos 0.80–0.89).

The node (pi_edge/model/anomaly_head.py) calls a window `anomaly` when u > 0.5 and r < 0: unlike
the healthy data, and not recognised as the known fault the classifier picked (or picked
healthy). The manifest says so (`task: classify` with `anomaly: {threshold, method, golden}`,
protocol/README.md "Anomaly models and class growth"); `extra.anomaly_head` keeps the head's
parameters so that the lineage's next growth or fine-tune can rebuild it.

A headed model ships as float16 (else float32), never int8: its cosine divides by |z|, and in
int8 a divisor that quantizes to the zero point makes LiteRT's DIV kernel fail the whole invoke
("data[i] != zero_point"): a fine-tune's int8 conversion did on its check windows, and a window
near the normal mean could on a Pi. float16 costs the node ~2.5 µs/window more at batch 16.

>>> z = np.array([[3.0, 0.0], [0.0, 3.0], [0.1, 0.0]])
>>> np.round(direction_cosines(z, np.array([[1.0, 0.0]])), 3).tolist()
[[1.0], [0.0], [1.0]]
>>> round(float(tolerance_cosine(np.array([0.99, 0.995]))), 3)  # 3 × 8.1° = 24.3°
0.911
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from protocol import Manifest
from protocol.model_input import normalise

from ..errors import TrainerError
from .anomaly import (
    _EPS,
    DEFAULT_MARGIN,
    DEFAULT_QUANTILE,
    Whitening,
    anomaly_scores,
    fit_whitening,
    threshold_of,
    window_features,
)

__all__ = [
    "METHOD",
    "Head",
    "attach_head",
    "direction_cosines",
    "fit_head",
    "head_outputs",
    "tolerance_cosine",
]

log = logging.getLogger(__name__)

METHOD = "mahalanobis-direction"
ANGLE_FACTOR = 3.0  # τ_c: this many times the widest labeled angle …
# … within these: with a 60° cap the realistic plant's drive_wear (labeled windows spread
# wide) took bearing_fault windows as its own, and after the second growth the head flagged
# 0.00 of the unknown bearing faults; at 30° 0.65, no healthy window flagged (bench.cold_start
# --quick, side by side)
MIN_ANGLE_DEG, MAX_ANGLE_DEG = 10.0, 30.0
MIN_VERDICT_AGREEMENT = 0.995  # the converted head's verdicts against its definition's


@dataclass(frozen=True, slots=True)
class Head:
    """The head's parameters: the normal data's whitening, the threshold (on the mean squared
    whitened distance), and per class of the model (its order) a unit direction and tolerance
    cosine (the healthy class: zeros and 2, i.e. never recognised as a fault)."""

    whitening: Whitening
    threshold: float
    directions: np.ndarray  # (K, F)
    tolerance: np.ndarray  # (K,)

    def to_extra(self) -> dict[str, Any]:
        """What `extra.anomaly_head` keeps of it (float64 lists)."""
        return {
            "method": METHOD,
            "mean": self.whitening.mu.tolist(),
            "whiten": self.whitening.w.tolist(),
            "threshold": self.threshold,
            "directions": self.directions.tolist(),
            "tolerance": self.tolerance.tolist(),
        }

    @classmethod
    def from_extra(cls, obj: Any) -> Head:
        """The head a manifest's `extra.anomaly_head` describes (TrainerError if malformed)."""
        try:
            mu = np.asarray(obj["mean"], np.float64)
            head = cls(
                Whitening(mu, np.asarray(obj["whiten"], np.float64).reshape(len(mu), len(mu))),
                float(obj["threshold"]),
                np.asarray(obj["directions"], np.float64).reshape(-1, len(mu)),
                np.asarray(obj["tolerance"], np.float64).reshape(-1),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TrainerError(f"the parent's extra.anomaly_head is malformed: {exc}") from exc
        if len(head.directions) != len(head.tolerance):
            raise TrainerError("the parent's extra.anomaly_head has one tolerance per direction")
        return head


def direction_cosines(z: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """(N, K) cosine of each whitened feature vector with each unit direction (0 for z = 0)."""
    z = np.asarray(z, np.float64)
    unit = z / np.sqrt((z**2).sum(axis=1, keepdims=True) + _EPS)
    return np.asarray(unit @ np.asarray(directions, np.float64).T)


def tolerance_cosine(cosines: np.ndarray) -> float:
    """cos(3 × the widest angle of `cosines`), the angle within 10°..30°."""
    widest = math.degrees(math.acos(float(np.clip(np.min(cosines), -1.0, 1.0))))
    return math.cos(math.radians(min(max(ANGLE_FACTOR * widest, MIN_ANGLE_DEG), MAX_ANGLE_DEG)))


def fit_head(
    classes: Sequence[str],
    normal_xn: np.ndarray,
    labeled_xn: np.ndarray,
    labeled: Sequence[str],
    *,
    seed: int = 0,
    quantile: float = DEFAULT_QUANTILE,
    margin: float = DEFAULT_MARGIN,
) -> Head:
    """Fit a head for a classifier of `classes` (healthy first) on NORMALISED windows: the
    normal history (4/5 fitted, 1/5 sets the threshold) and the labeled windows of the fault
    classes (`labeled`: their class names)."""
    normal = np.asarray(normal_xn)
    order = np.random.default_rng(seed).permutation(len(normal))
    n_val = max(1, len(order) // 5)
    fit = fit_whitening(window_features(normal[order[n_val:]]))
    threshold = threshold_of(
        anomaly_scores(window_features(normal[order[:n_val]]), fit), quantile, margin
    )
    f = window_features(np.asarray(labeled_xn))
    z = (f - fit.mu) @ fit.w
    loud = (z**2).mean(axis=1) > threshold
    names = np.asarray(list(labeled))
    k, width = len(classes), z.shape[1]
    directions, tolerance = np.zeros((k, width)), np.full(k, 2.0)
    for i, c in enumerate(classes[1:], start=1):
        mine = names == c
        if not mine.any():
            raise TrainerError(f"no labeled window of {c!r} to give the anomaly head its direction")
        use = mine & loud if (mine & loud).any() else mine  # quiet ones: mostly normal noise
        d = z[use].mean(axis=0)
        directions[i] = d / (np.linalg.norm(d) + _EPS)
        tolerance[i] = tolerance_cosine(direction_cosines(z[use], directions[i : i + 1])[:, 0])
    return Head(fit, threshold, directions, tolerance)


def head_outputs(probs: np.ndarray, xn: np.ndarray, head: Head) -> np.ndarray:
    """The head's (N, 2) output [u, r] by its definition (float64, numpy) for NORMALISED windows
    `xn` and the classifier's probabilities `probs` — what the converted model must reproduce."""
    z = (window_features(xn) - head.whitening.mu) @ head.whitening.w
    s = (z**2).mean(axis=1) / head.threshold
    cos = direction_cosines(z, head.directions) - head.tolerance
    cos[:, 0] = -1.0  # healthy: not a recognised fault
    r = (np.asarray(probs, np.float64) * cos).sum(axis=1)
    return np.stack([s / (1.0 + s), r], axis=1)


def flagged(out: np.ndarray) -> np.ndarray:
    """The node's rule on the head's output: unlike normal (u > 0.5) and not recognised (r < 0)."""
    return (out[:, 0] > 0.5) & (out[:, 1] < 0.0)


def headed_network(classifier: Any, head: Head) -> Any:
    """Keras: normalised window → [probabilities (K), head (2)], the head's weights fixed."""
    import keras
    from keras import layers, ops

    inp = keras.Input(shape=tuple(classifier.input_shape[1:]), name="window")
    probs = classifier(inp)
    mean = ops.mean(inp, axis=1)
    std = ops.sqrt(ops.mean(ops.square(inp - ops.expand_dims(mean, 1)), axis=1) + _EPS)
    if inp.shape[1] > 1:
        rough = ops.mean(ops.abs(inp[:, 1:, :] - inp[:, :-1, :]), axis=1)
    else:
        rough = ops.zeros_like(mean)
    w = head.whitening.w
    whiten = layers.Dense(w.shape[1], name="head_whiten", trainable=False)
    z = whiten(ops.concatenate([mean, std, rough], axis=-1))
    whiten.set_weights([w.astype(np.float32), (-head.whitening.mu @ w).astype(np.float32)])
    s = ops.mean(ops.square(z), axis=-1, keepdims=True) / np.float32(head.threshold)
    u = s / (1.0 + s)
    unit = z * ops.rsqrt(ops.sum(ops.square(z), axis=-1, keepdims=True) + _EPS)
    towards = layers.Dense(len(head.tolerance), name="head_directions", trainable=False)
    cos = towards(unit)
    bias = -head.tolerance.astype(np.float32)
    bias[0] = -1.0
    towards.set_weights([head.directions.T.astype(np.float32), bias])
    r = ops.sum(probs * cos, axis=-1, keepdims=True)
    return keras.Model(inp, [probs, ops.concatenate([u, r], axis=-1)], name="headed")


@dataclass(frozen=True, slots=True)
class HeadedModel:
    """The converted headed model and its checks."""

    model: bytes
    quantization: str
    argmax_agreement: float
    verdict_agreement: float
    max_head_diff: float
    us_per_window: float
    tried: dict[str, dict[str, float]]


def convert_headed(
    classifier: Any,
    head: Head,
    norm: dict[str, list[float]],
    x_rep: np.ndarray,
    x_check: np.ndarray,
    preferred: str,
    *,
    seed: int = 0,
) -> HeadedModel:
    """Convert the headed network at `preferred` (unless int8), else float16, else float32: the
    first whose
    probabilities agree with Keras (argmax) and whose anomaly verdicts agree with the head's
    definition on ≥ 99.5 % of the raw windows `x_check`, and whose batch resizes."""
    from .convert import MIN_AGREEMENT, QUANTIZATIONS, convert
    from .interpreter import LiteModel, micros_per_window

    net = headed_network(classifier, head)
    xn_check = normalise(x_check, norm)
    want_p = np.asarray(classifier.predict(xn_check, verbose=0, batch_size=256))
    want_h = head_outputs(want_p, xn_check, head)
    rep = normalise(x_rep, norm)
    tried: dict[str, dict[str, float]] = {}
    # never int8 (see the module doc); `preferred` among the float ones
    floats = [q for q in QUANTIZATIONS if q != "int8"]
    order = [preferred] if preferred in floats else []
    order += [q for q in floats if q not in order]
    for q in order:
        model = convert(net, q, rep if q == "int8" else None, seed)
        lite = LiteModel(model, norm)
        outs = [lite.outputs(x_check[i : i + 256]) for i in range(0, len(x_check), 256)]
        if any(len(o) != 2 or o[0].shape[1] != want_p.shape[1] for o in outs):
            raise TrainerError("the converted headed model does not give (probabilities, head)")
        p = np.concatenate([o[0] for o in outs])
        h = np.concatenate([o[1] for o in outs])
        one = np.concatenate([lite.outputs(x_check[i : i + 1])[1] for i in range(3)])
        checks = {
            "argmax_agreement": float(np.mean(p.argmax(1) == want_p.argmax(1))),
            "verdict_agreement": float(np.mean(flagged(h) == flagged(want_h))),
            "max_head_diff": float(np.abs(h - want_h).max()),
            "batch_resize_ok": float(np.allclose(one, h[:3], atol=1e-5)),
        }
        tried[q] = {k: round(v, 6) for k, v in checks.items()}
        log.info("headed %s: %s", q, tried[q])
        if (
            checks["argmax_agreement"] >= MIN_AGREEMENT
            and checks["verdict_agreement"] >= MIN_VERDICT_AGREEMENT
            and checks["batch_resize_ok"]
        ):
            us = micros_per_window(model, norm, x_check, batch=1, repeats=50)
            return HeadedModel(
                model,
                q,
                checks["argmax_agreement"],
                checks["verdict_agreement"],
                checks["max_head_diff"],
                us,
                tried,
            )
    raise TrainerError(f"no quantization of the headed model passed its checks: {tried}")


def attach_head(
    bundle_path: Path,
    classifier: Any,
    head: Head,
    x_rep: np.ndarray,
    x_check: np.ndarray,
    *,
    private_key: Path | None = None,
    seed: int = 0,
) -> tuple[Path, dict[str, Any]]:
    """Re-make the classifier bundle at `bundle_path` with the anomaly head: the headed model
    (converted and checked, its own golden outputs), the manifest's `anomaly` and
    `extra.anomaly_head`. Returns the bundle path and the head's figures for the report."""
    from protocol import decode_bundle

    from .artifacts import GOLDEN_TOLERANCE, write_artifacts
    from .interpreter import LiteModel

    old = decode_bundle(Path(bundle_path).read_bytes(), None, allow_unsigned=True).manifest
    norm = old.normalisation
    made = convert_headed(
        classifier, head, norm, x_rep, x_check, old.quantization or "int8", seed=seed
    )
    golden_x = np.asarray([g["x"] for g in old.golden], np.float32)
    lite = LiteModel(made.model, norm)
    probs, outs = lite.outputs(golden_x) if len(golden_x) else (np.zeros((0, 1)), np.zeros((0, 2)))
    manifest: Manifest = dataclasses.replace(
        old,
        quantization=made.quantization,
        model_sha256=hashlib.sha256(made.model).hexdigest(),
        model_bytes=len(made.model),
        golden=[
            {"x": g["x"], "probs": [float(v) for v in p]}
            for g, p in zip(old.golden, probs, strict=True)
        ],
        golden_tolerance=GOLDEN_TOLERANCE.get(made.quantization, 0.05),
        anomaly={
            "threshold": head.threshold,
            "method": METHOD,
            "golden": [[float(v) for v in o] for o in outs],
        },
        extra={**old.extra, "anomaly_head": head.to_extra()},
    )
    path = write_artifacts(Path(bundle_path).parent, manifest, made.model, classifier, private_key)
    figures = {
        "quantization": made.quantization,
        "argmax_agreement": made.argmax_agreement,
        "verdict_agreement": made.verdict_agreement,
        "max_head_diff": round(made.max_head_diff, 6),
        "us_per_window": round(made.us_per_window, 2),
        "threshold": head.threshold,
        "tolerance_deg": {
            c: round(math.degrees(math.acos(float(t))), 1)
            for c, t in zip(old.classes[1:], head.tolerance[1:], strict=True)
        },
        "tried": made.tried,
    }
    return path, figures


def carried_head(manifest: Manifest, parent: Manifest, model: bytes) -> Manifest:
    """`manifest` of `model`, the parent's headed network re-issued with new statistics (a
    reference update, daemon/reference.py), carrying the parent's head: its `anomaly`
    (threshold, method) with the head's golden outputs for `manifest`'s own golden windows,
    and `extra.anomaly_head`. Without it a node refuses the two-output model as incompatible.
    A parent without a head leaves `manifest` as it is."""
    if parent.task != "classify" or not parent.anomaly:
        return manifest
    kept = parent.extra.get("anomaly_head")
    if kept is None:  # a node would refuse the two-output model with a head-less manifest
        raise TrainerError(
            f"v{parent.version} has an anomaly head but no extra.anomaly_head to carry over"
        )
    from .interpreter import LiteModel

    golden_x = np.asarray([g["x"] for g in manifest.golden], np.float32)
    outs = (
        LiteModel(model, manifest.normalisation).outputs(golden_x)[1]
        if len(golden_x)
        else np.zeros((0, 2), np.float32)
    )
    anomaly = {k: v for k, v in parent.anomaly.items() if k != "golden"}
    anomaly["golden"] = [[float(v) for v in o] for o in outs]
    extra = {**manifest.extra, "anomaly_head": kept}
    return dataclasses.replace(manifest, anomaly=anomaly, extra=extra)
