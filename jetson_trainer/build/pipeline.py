"""train → convert → verify → bundle → report, and finetune → … → child bundle.

The CLI and `jetson_trainer.api` both call these; they take arrays and paths, never argv.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from protocol import DEFAULT_PREFIX, Bundle
from protocol.machine_type import DEFAULT_TYPE, MachineType

from ..errors import TrainerError
from .artifacts import make_manifest, write_artifacts
from .convert import (
    MIN_AGREEMENT,
    QUANTIZATIONS,
    convert_and_verify,
    convert_with_fallback,
    converter_version,
    pick_variant,
)
from .data import check_xy
from .energy import PowerMeter
from .interpreter import LiteModel
from .scores import classification_metrics

__all__ = ["Outcome", "evaluate_model_bytes", "run_finetune", "run_train", "select_labels"]

log = logging.getLogger(__name__)

Splits = dict[str, tuple[np.ndarray, np.ndarray]]


@dataclass(slots=True)
class Outcome:
    """Where the bundle went, and the report written beside it."""

    bundle_path: Path
    report: dict[str, Any]
    keras_model: Any = field(repr=False, default=None)


def evaluate_model_bytes(
    model: bytes,
    norm: dict[str, list[float]],
    x: np.ndarray,
    y: np.ndarray,
    kind: MachineType = DEFAULT_TYPE,
) -> dict[str, Any]:
    """Metrics of a .tflite model (LiteRT) on raw windows, fed as the Pi feeds them (`norm`)."""
    x, y = check_xy(x, y, "evaluation data", kind)
    probs = LiteModel(model, norm).predict(x)
    return classification_metrics(y, probs, kind.classes)


def _figures(
    out_dir: Path,
    results: dict[str, dict[str, Any]],
    history: dict[str, list[float]],
    title: str,
    classes: tuple[str, ...] = DEFAULT_TYPE.classes,
) -> list[str]:
    from .plots import plot_confusion, plot_training_curves

    files = []
    for split, m in results.items():
        p = plot_confusion(
            m["confusion_matrix"],
            classes,
            out_dir / f"confusion_matrix_{split}.png",
            f"{title}: {split} (accuracy {m['accuracy']:.3f})",
        )
        files.append(p.name)
    if history.get("loss"):
        files.append(plot_training_curves(history, out_dir / "training_curves.png", title).name)
    return files


def _write_report(out_dir: Path, report: dict[str, Any]) -> None:
    from .model_card import write_model_card

    (out_dir / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    write_model_card(out_dir)  # model_card.md: manifest + this report, figures linked


def _class_counts(y: np.ndarray, classes: tuple[str, ...]) -> dict[str, int]:
    """Labeled windows per class name (the model card's and registry's labels)."""
    return {name: int((np.asarray(y) == i).sum()) for i, name in enumerate(classes)}


def run_train(
    x: np.ndarray,
    y: np.ndarray,
    out_dir: Path,
    *,
    arch: str = "compact",
    epochs: int = 40,
    seed: int = 0,
    quantization: str = "int8",
    private_key: Path | None = None,
    version: int = 1,
    parent: int | None = None,
    site: str = DEFAULT_PREFIX,
    eval_splits: Splits | None = None,
    figures: bool = True,
    verbose: int = 1,
    time_repeats: int = 300,
    quantizations: tuple[str, ...] = QUANTIZATIONS,
    kind: MachineType = DEFAULT_TYPE,
    fallback_only: bool = False,
) -> Outcome:
    """Train, convert every variant, ship the best passing one, and write the report.

    `fallback_only`: convert `quantization` alone, and the others in turn only while none
    passed its check (a daemon's first model: int8 costs one conversion when it agrees, and a
    data set on which it does not still gets a model, float16 or float32, with the reason).

    `site`: the topic prefix of the nodes the bundle is for (they refuse other sites' bundles);
    `kind`: the machine type of the windows and labels (its classes, channels, window length).
    """
    if quantization not in QUANTIZATIONS:
        raise TrainerError(f"unknown quantization {quantization!r}; choose one of {QUANTIZATIONS}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if quantization not in quantizations:
        quantizations = (quantization, *quantizations)
    from .train import train_model  # TensorFlow: only commands that train import it

    with PowerMeter() as meter:
        result = train_model(x, y, arch=arch, epochs=epochs, seed=seed, verbose=verbose, kind=kind)
    if fallback_only:
        variants = convert_with_fallback(
            result.model,
            result.x_train,
            result.x_val,
            quantization,
            norm=result.norm,
            seed=seed,
            time_repeats=time_repeats,
        )
    else:
        variants = convert_and_verify(
            result.model,
            result.x_train,
            result.x_val,
            quantizations,
            norm=result.norm,
            seed=seed,
            time_repeats=time_repeats,
        )
    chosen = pick_variant(variants, quantization)
    arch = result.arch  # "auto" resolved by the window length
    shipped_reason = _shipped_reason(variants, quantization, chosen.quantization)
    manifest = make_manifest(
        model=chosen.model,
        version=version,
        parent=parent,
        site=site,
        quantization=chosen.quantization,
        arch=arch,
        converter=converter_version(),
        norm=result.norm,
        x_stats=result.x_train,
        y_stats=result.y_train,
        x_val=result.x_val,
        y_val=result.y_val,
        kind=kind,
        extra={
            "params": int(result.model.count_params()),
            "train_seconds": round(result.seconds, 2),
            "device": result.device,
            **({"shipped_reason": shipped_reason} if shipped_reason else {}),
        },
    )
    bundle_path = write_artifacts(out_dir, manifest, chosen.model, result.model, private_key)
    results = {
        "validation": evaluate_model_bytes(
            chosen.model, result.norm, result.x_val, result.y_val, kind
        )
    }
    for split, (xs, ys) in (eval_splits or {}).items():
        results[split] = evaluate_model_bytes(chosen.model, result.norm, xs, ys, kind)
    report: dict[str, Any] = {
        "command": "train",
        "arch": arch,
        "params": int(result.model.count_params()),
        "device": result.device,
        "train_seconds": round(result.seconds, 2),
        "epochs_run": result.epochs_run,
        "n_train": len(result.x_train),
        "n_validation": len(result.x_val),
        "machine_type": kind.name,
        "class_counts": _class_counts(y, kind.classes),
        "requested": quantization,
        "version": version,
        "parent": parent,
        "shipped": chosen.quantization,
        "shipped_reason": shipped_reason,
        "conversion": {q: v.summary() for q, v in variants.items()},
        "splits": results,
        "history": result.history,
        "energy": meter.summary(),
    }
    if figures:
        report["figures"] = _figures(
            out_dir, results, result.history, f"{arch} v{version}", kind.classes
        )
    _write_report(out_dir, report)
    return Outcome(bundle_path, report, result.model)


def _shipped_reason(variants: dict[str, Any], requested: str, shipped: str) -> str | None:
    """Why another quantization than the requested one shipped (None when it did not)."""
    if shipped == requested or requested not in variants:
        return None
    v = variants[requested]
    why = (
        f"agreement with Keras {v.agreement:.4f} < {MIN_AGREEMENT}"
        if v.agreement < MIN_AGREEMENT
        else "its batch does not resize"
    )
    return f"{requested} failed its check ({why}); {shipped} is the first that passed"


def select_labels(
    y: np.ndarray, *, per_class: int | None = None, max_labels: int | None = None, seed: int = 0
) -> np.ndarray:
    """Indices of the windows whose labels fine-tuning may use (the rest count as unlabeled).

    >>> y = np.repeat(np.arange(4), 100)
    >>> len(select_labels(y, per_class=12)), len(select_labels(y, max_labels=50))
    (48, 50)
    """
    rng = np.random.default_rng(seed)
    if max_labels is not None:
        classes = np.unique(y)
        base = max_labels // len(classes)
        picks = [rng.permutation(np.flatnonzero(y == c)) for c in classes]
        idx = [p[:base] for p in picks]
        rest = np.concatenate([p[base:] for p in picks])
        extra = rng.permutation(rest)[: max(0, max_labels - base * len(classes))]
        return np.sort(np.concatenate([*idx, extra]))
    k = per_class if per_class is not None else 12
    return np.sort(
        np.concatenate([rng.permutation(np.flatnonzero(y == c))[:k] for c in np.unique(y)])
    )


def run_finetune(
    parent: Bundle,
    keras_model: Any,
    x_new: np.ndarray,
    y_new: np.ndarray,
    out_dir: Path,
    *,
    x_replay: np.ndarray | None = None,
    y_replay: np.ndarray | None = None,
    per_class: int | None = 12,
    max_labels: int | None = None,
    epochs: int = 40,
    seed: int = 0,
    private_key: Path | None = None,
    eval_splits: Splits | None = None,
    figures: bool = True,
    time_repeats: int = 300,
    site: str | None = None,
) -> Outcome:
    """Fine-tune the parent's Keras model on a few labeled new windows + replay → child bundle.

    The child is made for `site`, by default the parent's (DEFAULT_PREFIX if it names none).

    The child keeps the parent's normalisation; its `train_stats` describe the new windows (all
    of `x_new`, labels not needed) and an equal number of replay windows, so the Pi's input-drift
    detector accepts both the regime the child was tuned for and the original one.
    """
    pm = parent.manifest
    norm = pm.normalisation
    if not norm:
        raise TrainerError(f"parent bundle v{pm.version} has no normalisation in its manifest")
    kind = pm.machine()
    x_new, y_new = check_xy(x_new, y_new, "fine-tuning data", kind)
    if x_replay is not None and y_replay is not None:
        x_replay, y_replay = check_xy(x_replay, y_replay, "replay data", kind)
    labeled = select_labels(y_new, per_class=per_class, max_labels=max_labels, seed=seed)
    held = np.setdiff1d(np.arange(len(y_new)), labeled)
    arch = pm.arch or "compact"
    from .train import finetune_with_summary

    with PowerMeter() as meter:
        tuned, summary = finetune_with_summary(
            keras_model,
            x_new[labeled],
            y_new[labeled],
            x_replay,
            y_replay,
            norm=norm,
            epochs=epochs,
            seed=seed,
            arch=arch,
        )
    # Verify and pick a variant on new windows not used for training plus some replay.
    x_check = x_new[held] if len(held) else x_new[labeled]
    y_check = y_new[held] if len(held) else y_new[labeled]
    if x_replay is not None and y_replay is not None:
        k = min(len(x_replay), max(200, len(x_check)))
        pick = np.random.default_rng(seed + 1).choice(len(x_replay), k, replace=False)
        x_check = np.concatenate([x_check, x_replay[pick]])
        y_check = np.concatenate([y_check, y_replay[pick]])
    rep_x = np.concatenate([x_new] if x_replay is None else [x_new, x_replay[:2000]])
    variants = convert_with_fallback(
        tuned,
        rep_x,
        x_check,
        pm.quantization,
        norm=norm,
        seed=seed,
        time_repeats=time_repeats,
    )
    chosen = pick_variant(variants, pm.quantization)
    version = pm.version + 1
    x_stats, y_stats = x_new, y_new
    if x_replay is not None and y_replay is not None:
        k = min(len(x_replay), len(x_new))
        pick = np.random.default_rng(seed + 2).choice(len(x_replay), k, replace=False)
        x_stats = np.concatenate([x_new, x_replay[pick]])
        y_stats = np.concatenate([y_new, y_replay[pick]])
    manifest = make_manifest(
        model=chosen.model,
        version=version,
        parent=pm.version,
        site=site if site is not None else (pm.site or DEFAULT_PREFIX),
        quantization=chosen.quantization,
        arch=arch,
        converter=converter_version(),
        norm=norm,
        x_stats=x_stats,
        y_stats=y_stats,
        x_val=x_new[held] if len(held) else x_new[labeled],
        y_val=y_new[held] if len(held) else y_new[labeled],
        kind=kind,
        extra={
            "params": int(tuned.count_params()),
            "finetune": {k: v for k, v in summary.items() if k != "history"},
            "train_stats_source": f"{len(x_new)} new + {len(x_stats) - len(x_new)} replay windows",
        },
    )
    bundle_path = write_artifacts(out_dir, manifest, chosen.model, tuned, private_key)
    comparison: dict[str, dict[str, Any]] = {}
    splits = dict(eval_splits or {})
    for split, (xs, ys) in splits.items():
        comparison[split] = {
            "parent": evaluate_model_bytes(parent.model, norm, xs, ys, kind),
            "child": evaluate_model_bytes(chosen.model, norm, xs, ys, kind),
        }
        log.info(
            "%s: parent v%d accuracy %.4f → child v%d accuracy %.4f",
            split,
            pm.version,
            comparison[split]["parent"]["accuracy"],
            version,
            comparison[split]["child"]["accuracy"],
        )
    report: dict[str, Any] = {
        "command": "finetune",
        "arch": arch,
        "version": version,
        "parent": pm.version,
        "n_labeled": len(labeled),
        "n_replay": summary["n_replay"],
        "class_counts": _class_counts(y_new[labeled], kind.classes),
        "requested": pm.quantization,
        "finetune_seconds": round(summary["seconds"], 2),
        "shipped": chosen.quantization,
        "conversion": {q: v.summary() for q, v in variants.items()},
        "splits": {s: c["child"] for s, c in comparison.items()},
        "comparison": comparison,
        "history": summary["history"],
        "energy": meter.summary(),
    }
    if figures:
        report["figures"] = _figures(
            Path(out_dir),
            report["splits"],
            summary["history"],
            f"{arch} v{version} (fine-tuned from v{pm.version})",
            kind.classes,
        )
    _write_report(Path(out_dir), report)
    return Outcome(bundle_path, report, tuned)
