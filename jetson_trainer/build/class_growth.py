"""Class growth: a machine type learns the fault classes technicians name (issue 24, item 4).

A type with no fault history starts with an anomaly model (build/anomaly.py): it flags, it
cannot say what is wrong. When labeled windows name a class the serving model does not know
(a technician's label of a flagged window, shipped in a drift batch with its label as an index
into the type's declared classes), the trainer grows the model's class list:

- the new list is the serving model's classes and the newly named ones, in the type's declared
  order (`grown_classes`: a model that knows every class has the type's own list, so the
  daemon's ordinary fine-tunes take over from there); from an anomaly model the first labeled
  fault gives the classifier [healthy, that fault]. A name must be one the type declares (a
  site file lists the classes a type may ever have, at most 64, even before any model knows
  them: protocol/README.md, "Anomaly models and class growth");
- the challenger is a classifier trained on the normal history (replay; at most
  `normal_cap` windows) plus every labeled window of the grown classes, each class oversampled
  with a little jitter to at least `per_class_min` windows (a first label is a handful);
- it is gated on the OLD classes' holdout: from an anomaly model, the healthy holdout windows
  it calls healthy must be at least the anomaly model's share (1 − its false-alarm rate) less
  `margin`; from a classifier, its macro-F1 over the old classes on their holdout must be at
  least the old model's less `margin`. A new class has too few labels for a holdout of its own;
  its recall on its labeled windows is reported.

Every grown classifier carries an anomaly head (build/anomaly_head.py: a second output, fitted on
the normal history and the labeled windows), so that a fault of a class it does not know yet
is still `anomaly` on the node, as it was under the anomaly model; `growth.json` reports its
checks under `anomaly_head`.

The Pis learn the new names from the bundle: its manifest's `classes` are the grown list (the
built-in type's manifest stays without `machine_type`; the node's vetting accepts a model that
knows some of its type's classes, healthy first, pi_edge/model/vetting.py).

>>> grown_classes(("normal", "x", "y"), ("normal",), ["normal", "y", "normal"])
('normal', 'y')
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from protocol.machine_type import MAX_CLASSES, MachineType

from ..errors import TrainerError

__all__ = ["Growth", "GrowthGate", "grow", "grown_classes", "new_classes"]

log = logging.getLogger(__name__)


def grown_classes(
    declared: Sequence[str], current: Sequence[str], labeled: Iterable[str]
) -> tuple[str, ...]:
    """The classes of `current` and of `labeled`, in the type's `declared` order (healthy first):
    a model that knows every class has the type's own list. TrainerError for a name the type
    does not declare.

    >>> from protocol import CLASSES
    >>> grown_classes(CLASSES, ("normal",), ["pump_fault", "normal", "bearing_fault"])
    ('normal', 'bearing_fault', 'pump_fault')
    >>> grown_classes(CLASSES, ("normal", "pump_fault"), ["drive_wear"])
    ('normal', 'drive_wear', 'pump_fault')
    """
    want = set(current) | set(labeled)
    unknown = sorted(want - set(declared))
    if unknown:
        raise TrainerError(
            f"labels name {unknown}, which the machine type does not declare "
            f"({', '.join(declared)}); declare them in the site file first (at most "
            f"{MAX_CLASSES} classes)"
        )
    return tuple(c for c in declared if c in want)


def new_classes(
    declared: Sequence[str], current: Sequence[str], labeled: Iterable[str]
) -> tuple[str, ...]:
    """The names of `labeled` that `current` lacks (declared order): what triggers growth.

    >>> new_classes(("normal", "a", "b"), ("normal",), ["normal", "b"])
    ('b',)
    """
    return tuple(c for c in grown_classes(declared, current, labeled) if c not in current)


@dataclass(frozen=True, slots=True)
class GrowthGate:
    """The gate's figures: what the old model and the challenger give on the old classes'
    holdout (`old_score`, `new_score`: healthy share or macro-F1), and the verdict."""

    measure: str
    old_score: float
    new_score: float
    margin: float

    @property
    def accepted(self) -> bool:
        return self.new_score >= self.old_score - self.margin


@dataclass(frozen=True, slots=True)
class Growth:
    """A grown challenger: its bundle (written only when the gate accepted it), the classes and
    the gate."""

    classes: tuple[str, ...]
    gate: GrowthGate
    bundle_path: Path | None
    report: dict[str, Any]


def _oversample(
    x: np.ndarray, y: np.ndarray, per_class_min: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Each class repeated (with jitter of 2 % of each channel's spread) to ≥ per_class_min."""
    spread = x.std(axis=(0, 1), keepdims=True) + 1e-6
    xs, ys = [x], [y]
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        short = per_class_min - len(idx)
        if short > 0:
            pick = rng.choice(idx, size=short)
            jitter = rng.normal(0.0, 0.02, size=(short, *x.shape[1:])) * spread
            xs.append((x[pick] + jitter).astype(np.float32))
            ys.append(np.full(short, c, np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def grow(
    kind: MachineType,
    champion: Any,
    normal_x: np.ndarray,
    holdout: tuple[np.ndarray, Sequence[str]],
    labeled: tuple[np.ndarray, Sequence[str]],
    out_dir: Path,
    *,
    version: int,
    site: str,
    private_key: Path | None = None,
    epochs: int = 30,
    seed: int = 0,
    margin: float = 0.02,
    normal_cap: int = 1200,
    per_class_min: int = 96,
) -> Growth:
    """Grow `champion` (a protocol Bundle: anomaly model or classifier of `kind`) by the
    classes `labeled` names (windows, class names of the type); gate on `holdout` (windows and
    class NAMES of the champion's classes). Trains with TensorFlow (run_train)."""
    from protocol import decode_bundle
    from protocol.model_input import normalise

    from .anomaly_head import attach_head, fit_head
    from .interpreter import LiteModel
    from .pipeline import run_train

    manifest = champion.manifest
    x_lab, names = np.asarray(labeled[0], np.float32), list(labeled[1])
    if manifest.classes[0] != kind.normal:
        raise TrainerError(f"the champion's first class {manifest.classes[0]!r} is not healthy")
    classes = grown_classes(kind.classes, manifest.classes, names)
    grown = kind.with_classes(classes)
    rng = np.random.default_rng(seed)
    normal = np.asarray(normal_x, np.float32)
    if len(normal) > normal_cap:
        normal = normal[rng.choice(len(normal), normal_cap, replace=False)]
    index = {c: i for i, c in enumerate(classes)}
    x = np.concatenate([normal, x_lab])
    y = np.concatenate(
        [np.zeros(len(normal), np.int64), np.array([index[n] for n in names], np.int64)]
    )
    x, y = _oversample(x, y, per_class_min, rng)
    outcome = run_train(
        x,
        y,
        Path(out_dir),
        version=version,
        parent=manifest.version,
        site=site,
        epochs=epochs,
        seed=seed,
        private_key=private_key,
        figures=False,
        verbose=0,
        time_repeats=10,
        quantizations=("int8",),
        kind=grown,
    )
    hx, hnames = np.asarray(holdout[0], np.float32), list(holdout[1])
    norm = decode_bundle(Path(outcome.bundle_path).read_bytes(), None, allow_unsigned=True)
    head = fit_head(  # faults of classes it does not know stay `anomaly` (build/anomaly_head.py)
        classes,
        normalise(np.asarray(normal_x, np.float32), norm.manifest.normalisation),
        normalise(x_lab, norm.manifest.normalisation),
        names,
        seed=seed,
    )
    _, head_figures = attach_head(
        Path(outcome.bundle_path),
        outcome.keras_model,
        head,
        x,
        np.concatenate([hx, x_lab]),
        private_key=private_key,
        seed=seed,
    )
    new = decode_bundle(Path(outcome.bundle_path).read_bytes(), None, allow_unsigned=True)
    new_pred = LiteModel(new.model, new.manifest.normalisation).predict(hx).argmax(axis=1)
    old_out = LiteModel(champion.model, manifest.normalisation).predict(hx)
    if manifest.task == "anomaly":
        threshold = float(manifest.anomaly["threshold"])
        healthy = np.array([n == kind.normal for n in hnames])
        if not healthy.any():
            raise TrainerError("the holdout has no healthy window to gate on")
        gate = GrowthGate(
            "healthy holdout called healthy",
            float(np.mean(old_out[healthy, 0] <= threshold)),
            float(np.mean(new_pred[healthy] == 0)),
            margin,
        )
    else:
        from ..versions.gate import macro_f1

        old_idx = {c: i for i, c in enumerate(manifest.classes)}
        k = len(manifest.classes)
        keep = np.array([n in old_idx for n in hnames])
        truth = np.array([old_idx[n] for n in np.asarray(hnames)[keep]], np.int64)
        as_old = np.array([old_idx.get(c, k) for c in classes], np.int64)  # new: k (wrong)
        gate = GrowthGate(
            "macro-F1 on the old classes' holdout",
            float(macro_f1(truth, old_out[keep].argmax(axis=1), k)),
            float(macro_f1(truth, as_old[new_pred[keep]], k + 1)),
            margin,
        )
    lab_pred = LiteModel(new.model, new.manifest.normalisation).predict(x_lab).argmax(axis=1)
    recall = {
        c: round(float(np.mean(lab_pred[[n == c for n in names]] == index[c])), 4)
        for c in sorted(set(names))
    }
    report = {
        "command": "grow",
        "parent": manifest.version,
        "parent_task": manifest.task,
        "version": version,
        "classes": list(classes),
        "labels": {c: names.count(c) for c in sorted(set(names))},
        "gate": {
            "measure": gate.measure,
            "old": round(gate.old_score, 4),
            "new": round(gate.new_score, 4),
            "margin": margin,
            "accepted": gate.accepted,
        },
        "recall_on_labeled": recall,
        "anomaly_head": head_figures,
    }
    (Path(out_dir) / "growth.json").write_text(json.dumps(report, indent=1) + "\n")
    log.info(
        "class growth v%d → v%d: %s; gate %s %.4f → %.4f (%s)",
        manifest.version,
        version,
        list(classes),
        gate.measure,
        gate.old_score,
        gate.new_score,
        "accepted" if gate.accepted else "refused",
    )
    if not gate.accepted:
        Path(outcome.bundle_path).unlink()
        return Growth(classes, gate, None, report)
    return Growth(classes, gate, Path(outcome.bundle_path), report)
