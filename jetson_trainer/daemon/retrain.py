"""One fine-tune attempt of the daemon: challenger from champion, scored, gated, bundled.

The challenger is fine-tuned on the recent labels plus replay of the original data (the
windows the champion agrees with, class-balanced: daemon/replay.py), then
(self-training, daemon/selftrain.py) once more with the first pass's confident pseudo-labels of the
unlabeled recent drift windows added; it is converted to int8 TFLite (float16/float32 when int8
disagrees), and both models are scored with LiteRT (the artifact that ships) on drift labels it
never trained on and on the original holdout. Those drift labels are the caller's spare ones
(`held_out`) when there are at least `min_gate_labels`, else a stratified part of the labels
(then the challenger trains on the rest); labels that arrive while it trains (`late_labels`)
join them, so the gate judges on more than a handful. Only an accepted challenger becomes a
signed bundle on disk.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from protocol import DEFAULT_PREFIX, decode_bundle
from protocol.model_input import normalise

from ..build.anomaly_head import Head, attach_head
from ..build.artifacts import make_manifest, write_artifacts
from ..build.convert import convert_with_fallback, converter_version, pick_variant
from ..build.data import stratified_split
from ..build.interpreter import LiteModel
from ..build.train import finetune_model
from ..versions.gate import GateConfig, GateDecision, Scores, decide, macro_f1, moved_to
from .reference import balanced, pseudo_label
from .replay import pick_replay
from .selftrain import pick as pick_pseudo_labels

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Champion:
    """The model the Pis run: its bundle bytes, manifest and the Keras model it came from."""

    version: int
    bundle: bytes
    model: bytes
    manifest: Any
    keras: Any = field(repr=False)
    path: Path | None = None

    @property
    def norm(self) -> dict[str, list[float]]:
        return dict(self.manifest.normalisation)

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        return accuracy(self.model, self.norm, x, y)


@dataclass(frozen=True, slots=True)
class RetrainConfig:
    holdout_fraction: float = 0.25
    epochs: int = 30
    replay_size: int = 1000
    seed: int = 0
    gate: GateConfig = field(default_factory=GateConfig)
    self_training: bool = True  # second pass with the first's confident pseudo-labels
    min_gate_labels: int = 4  # spare drift labels that let the challenger train on all others

    def __post_init__(self) -> None:
        if not 0 < self.holdout_fraction < 1 or self.epochs < 1 or self.replay_size < 0:
            raise ValueError("retrain needs 0 < holdout_fraction < 1, epochs ≥ 1, replay_size ≥ 0")
        if self.min_gate_labels < 1:
            raise ValueError("retrain needs min_gate_labels ≥ 1: the gate judges on drift labels")


@dataclass(frozen=True, slots=True)
class Attempt:
    decision: GateDecision
    labels_used: int
    holdout: int  # drift windows the gate judged on
    seconds: float
    challenger: Champion | None  # set when accepted
    pseudo_labels: int = 0  # unlabeled drift windows the second pass trained on


def score(
    model: bytes, norm: dict[str, list[float]], x: np.ndarray, y: np.ndarray
) -> tuple[float, float]:
    """(accuracy, mean log-loss) of a .tflite model on raw windows (LiteRT, as on the Pi)."""
    if len(y) == 0:
        return float("nan"), float("nan")
    probs = LiteModel(model, norm).predict(x)
    p_true = np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0)
    return float((probs.argmax(axis=1) == y).mean()), float(-np.log(p_true).mean())


def original_scores(
    model: bytes, norm: dict[str, list[float]], x: np.ndarray, y: np.ndarray
) -> tuple[float, float | None]:
    """(accuracy, macro-F1) of a .tflite model on the original holdout (nan, None if empty)."""
    if len(y) == 0:
        return float("nan"), None
    probs = LiteModel(model, norm).predict(x)
    pred = probs.argmax(axis=1)  # the model's outputs are its classes
    return float((pred == y).mean()), macro_f1(y, pred, probs.shape[1])


def accuracy(model: bytes, norm: dict[str, list[float]], x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of a .tflite model on raw windows."""
    return score(model, norm, x, y)[0]


def retrain(
    champion: Champion,
    x_new: np.ndarray,
    y_new: np.ndarray,
    *,
    replay: tuple[np.ndarray, np.ndarray],
    original_holdout: tuple[np.ndarray, np.ndarray],
    out_dir: Path,
    private_key: Path | None,
    config: RetrainConfig | None = None,
    late_labels: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None,
    site: str | None = None,
    version: int | None = None,
    recent: tuple[np.ndarray, np.ndarray] | None = None,
    held_out: tuple[np.ndarray, np.ndarray] | None = None,
) -> Attempt:
    """Fine-tune, score, gate; write a signed bundle into `out_dir` only if accepted.

    The challenger is made for `site` (the daemon's --prefix), by default the champion's, as
    `version` (default the champion's + 1; the daemon passes one above every version it ever
    saw, since a champion restored after a rollback is older than the newest on disk).
    `recent`: the windows the Pis shipped since the trigger, labeled or not (y = -1 where not),
    for self-training and the accepted challenger's detector statistics (daemon/reference.py).
    `held_out`: recent drift labels not in `x_new`, for the gate only.
    """
    cfg = config or RetrainConfig()
    start = time.monotonic()
    if held_out is not None and len(held_out[1]) >= cfg.min_gate_labels:
        x_fit, y_fit = x_new, y_new  # every label trains; the gate has its own
        x_hold, y_hold = held_out
    else:
        fit_idx, hold_idx = stratified_split(y_new, cfg.holdout_fraction, cfg.seed)
        x_fit, y_fit = x_new[fit_idx], y_new[fit_idx]
        x_hold, y_hold = x_new[hold_idx], y_new[hold_idx]
        if held_out is not None and len(held_out[1]):
            x_hold = np.concatenate([x_hold, held_out[0]])
            y_hold = np.concatenate([y_hold, held_out[1]])
    x_rep, y_rep = replay
    x_orig, y_orig = original_holdout
    rng = np.random.default_rng(cfg.seed)
    # replay: original windows the champion agrees with, class-balanced (daemon/replay.py)
    tune_rep = np.zeros(0, np.int64)
    if len(y_rep) and cfg.replay_size:
        rep_pred = LiteModel(champion.model, champion.norm).predict(x_rep)
        tune_rep = pick_replay(rep_pred.argmax(axis=1), y_rep, cfg.replay_size, rng)
    log.info(
        "fine-tuning v%d on %d new labels (+%d held out) with %d replay windows",
        champion.version,
        len(y_fit),
        len(y_hold),
        len(tune_rep),
    )
    unlabeled = (
        recent[0][np.asarray(recent[1]) < 0]
        if cfg.self_training and recent is not None
        else x_new[:0]
    )
    # with self-training each pass gets half the epochs: about the time of one full pass
    passes = 2 if len(unlabeled) else 1
    epochs = max(1, cfg.epochs // passes)

    def tune(start: Any, x: np.ndarray, y: np.ndarray, n_epochs: int) -> Any:
        """`start` fine-tuned on (x, y) plus replay, in the champion's input contract."""
        return finetune_model(
            start,
            x,
            y,
            x_rep[tune_rep],
            y_rep[tune_rep],
            norm=champion.norm,
            epochs=n_epochs,
            seed=cfg.seed,
            replay_size=len(tune_rep),
        )

    keras_model = tune(champion.keras, x_fit, y_fit, epochs)
    n_pseudo = 0
    if passes == 2:
        probs = keras_model.predict(normalise(unlabeled, champion.norm), verbose=0)
        idx, y_pseudo = pick_pseudo_labels(np.asarray(probs), rng=rng)
        n_pseudo = len(idx)
        log.info(
            "self-training: %d of %d unlabeled drift windows pseudo-labeled (confident)",
            n_pseudo,
            len(unlabeled),
        )
        if n_pseudo:
            x_both = np.concatenate([x_fit, unlabeled[idx]])
            keras_model = tune(champion.keras, x_both, np.concatenate([y_fit, y_pseudo]), epochs)
        elif cfg.epochs > epochs:  # nothing sure enough: the labels get the other half
            keras_model = tune(keras_model, x_fit, y_fit, cfg.epochs - epochs)
    rep_idx = rng.choice(len(x_rep), min(len(x_rep), 500), replace=False)
    x_cal = np.concatenate([x_rep[rep_idx], x_fit])  # conversion calibration: both regimes
    x_check = np.concatenate([x_orig[:500], x_hold])
    variants = convert_with_fallback(
        keras_model,
        x_cal,
        x_check,
        "int8",
        norm=champion.norm,
        seed=cfg.seed,
        time_repeats=10,
    )
    chosen = pick_variant(variants, "int8")
    if late_labels is not None:
        x_late, y_late = late_labels()
        if len(y_late):
            x_hold, y_hold = np.concatenate([x_hold, x_late]), np.concatenate([y_hold, y_late])
    champ_drift, champ_loss = score(champion.model, champion.norm, x_hold, y_hold)
    chall_drift, chall_loss = score(chosen.model, champion.norm, x_hold, y_hold)
    champ_acc, champ_f1 = original_scores(champion.model, champion.norm, x_orig, y_orig)
    chall_acc, chall_f1 = original_scores(chosen.model, champion.norm, x_orig, y_orig)
    # the original holdout moved to the recent regime: labels no label sender gave (gate.py)
    regime = np.concatenate([x for x in (x_fit, x_hold, unlabeled) if len(x)] or [x_fit])
    champ_anchor = chall_anchor = None
    if len(y_orig) and len(regime):
        x_anchor = moved_to(x_orig[:500], regime)
        champ_anchor = accuracy(champion.model, champion.norm, x_anchor, y_orig[:500])
        chall_anchor = accuracy(chosen.model, champion.norm, x_anchor, y_orig[:500])
    champ_scores = Scores(champ_drift, champ_acc, champ_loss, champ_f1, champ_anchor)
    chall_scores = Scores(chall_drift, chall_acc, chall_loss, chall_f1, chall_anchor)
    decision = decide(champ_scores, chall_scores, cfg.gate)
    log.info(
        "gate %s on %d drift windows: %s",
        "ACCEPTS" if decision.accepted else "REJECTS",
        len(y_hold),
        decision.reason,
    )
    challenger = None
    if decision.accepted:
        version = champion.version + 1 if version is None else version
        # Statistics (and the confidence reference) cover both regimes, weighted equally, so
        # the Pi's detector accepts the regime this model was tuned for as well as the
        # original one; "now" is every recent window (of the drifting machines), not the
        # labels, which may come from every machine while one drifts (daemon/reference.py)
        x_now, y_now = x_fit, y_fit
        if recent is not None and len(recent[1]):
            x_now = recent[0]
            y_now = pseudo_label(chosen.model, champion.norm, recent[0], recent[1])
        x_stats, y_stats = balanced(x_rep[rep_idx], y_rep[rep_idx], x_now, y_now, rng)
        manifest = make_manifest(
            model=chosen.model,
            version=version,
            parent=champion.version,
            site=site if site is not None else (champion.manifest.site or DEFAULT_PREFIX),
            quantization=chosen.quantization,
            arch=str(champion.manifest.arch),
            converter=converter_version(),
            norm=champion.norm,
            x_stats=x_stats,
            y_stats=y_stats,
            x_confidence=x_stats,
            x_val=np.concatenate([x_hold, x_orig[:500]]),
            y_val=np.concatenate([y_hold, y_orig[:500]]),
            kind=champion.manifest.machine(),
            extra={
                "labels_used": len(y_new),
                "pseudo_labels": n_pseudo,
                "gate": decision.reason,
            },
        )
        path = write_artifacts(
            out_dir / f"v{version:04d}", manifest, chosen.model, keras_model, private_key
        )
        model = chosen.model
        if champion.manifest.task == "classify" and champion.manifest.anomaly:
            # a grown lineage keeps flagging faults it does not know (build/anomaly_head.py):
            # the champion's head on the tuned network, converted and checked again
            head = Head.from_extra(champion.manifest.extra.get("anomaly_head"))
            path, _ = attach_head(path, keras_model, head, x_cal, x_check, private_key=private_key)
            bundle = decode_bundle(path.read_bytes(), None, allow_unsigned=True)
            manifest, model = bundle.manifest, bundle.model
        challenger = Champion(version, path.read_bytes(), model, manifest, keras_model, path)
    seconds = time.monotonic() - start
    return Attempt(decision, len(y_new), len(y_hold), seconds, challenger, n_pseudo)
