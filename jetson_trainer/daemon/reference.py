"""The detector's reference: what "no drift" means for a model the Pis run.

A Pi's drift detector compares every window with its model's manifest — class-conditional
window-feature statistics (`train_stats["features"]`) and the mean top-class confidence. After
a drift is healed, those statistics must describe the regime the Pis now see, or the detector
keeps alarming on a model that classifies well (issue 14: a permanent alarm teaches operators
to ignore it). Two ways here:

* an accepted challenger's statistics come from the original regime and from *every* recent
  window the Pis shipped of the machines in drift, labeled or not (an unlabeled one counts for
  the class the model gives it, which is the class the Pi's detector compares it with),
  weighted equally — not from the labeled windows it was tuned on (a class with two labels
  gave a spread far too narrow, and its machines stayed in drift; with one machine drifting,
  the other machines' labels hid its regime);
* when the gate refuses a challenger because the champion already handles the drift (a slow
  ramp: still exact, only the inputs moved), the champion's network is re-issued as a new
  version with renewed statistics (`renew_reference`): same weights, new reference.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from protocol import DEFAULT_PREFIX

from ..build.anomaly_head import carried_head
from ..build.artifacts import make_manifest, write_artifacts
from ..build.interpreter import LiteModel
from ..versions.gate import GateDecision

log = logging.getLogger(__name__)

REFERENCE_SIZE = 500  # windows per regime in the statistics
HANDLES_MARGIN = 0.03  # the champion "handles" a drift within 3 points of its original accuracy


def pseudo_label(
    model: bytes, norm: dict[str, list[float]], x: np.ndarray, y: np.ndarray
) -> np.ndarray:
    """`y` with every -1 (unlabeled) replaced by the model's class for that window."""
    y = np.asarray(y, np.int64).copy()
    unknown = y < 0
    if unknown.any():
        probs = LiteModel(model, norm).predict(x[unknown])
        y[unknown] = probs.argmax(axis=1)
    return y


def balanced(
    x_old: np.ndarray,
    y_old: np.ndarray,
    x_now: np.ndarray,
    y_now: np.ndarray,
    rng: np.random.Generator,
    size: int = REFERENCE_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """Up to `size` windows of each regime, the smaller one repeated to weigh as much: a random
    draw of the old regime and the newest of "now" (oldest first), so that after a ramp the
    reference holds where the inputs ended, not the path they took (a renewal covering the
    whole path left the end of a ramp at the edge of the spread, and machines crept back into
    drift for another renewal or two).

    >>> rng = np.random.default_rng(0)
    >>> x, y = balanced(np.zeros((900, 2, 1)), np.zeros(900), np.ones((3, 2, 1)), np.ones(3), rng)
    >>> len(y), int(y.sum())
    (998, 498)
    >>> _, y = balanced(np.zeros((9, 2, 1)), np.zeros(9), np.zeros((9, 2, 1)), np.arange(9), rng, 3)
    >>> y[3:].astype(int).tolist()  # the newest three of "now"
    [6, 7, 8]
    """
    parts_x, parts_y = [], []
    for xs, ys, newest in ((x_old, y_old, False), (x_now, y_now, True)):
        if not len(ys):
            continue
        if len(ys) <= size:
            pick = np.arange(len(ys))
        else:
            pick = (
                np.arange(len(ys) - size, len(ys)) if newest else rng.choice(len(ys), size, False)
            )
        reps = max(1, size // len(pick))
        parts_x.append(np.repeat(xs[pick], reps, axis=0))
        parts_y.append(np.repeat(ys[pick], reps, axis=0))
    return np.concatenate(parts_x), np.concatenate(parts_y)


def champion_handles(decision: GateDecision, margin: float = HANDLES_MARGIN) -> bool:
    """The gate refused, and the champion is about as good on the recent drift data as on the
    original holdout (within `margin`; a few dozen labels do not resolve finer): the drift
    moved the inputs, not the answers — a new reference, not a new network.

    >>> from jetson_trainer.versions.gate import Scores, decide
    >>> champion_handles(decide(Scores(1.0, 1.0, 0.05), Scores(1.0, 1.0, 0.05)))
    True
    >>> champion_handles(decide(Scores(0.984, 1.0, 0.05), Scores(0.984, 1.0, 0.05)))
    True
    >>> champion_handles(decide(Scores(0.7, 1.0, 0.9), Scores(0.98, 0.9, 0.1)))
    False
    """
    c = decision.champion
    return (
        not decision.accepted
        and c.drift == c.drift  # measured (not NaN)
        and c.drift >= c.original - margin
        and c.drift >= decision.challenger.drift
    )


def renew_reference(
    champion: Any,
    x_now: np.ndarray,
    y_now: np.ndarray,
    *,
    replay: tuple[np.ndarray, np.ndarray],
    original_holdout: tuple[np.ndarray, np.ndarray],
    out_dir: Path,
    private_key: Path | None,
    version: int,
    reason: str,
    labels_used: int,
    site: str | None = None,
    seed: int = 0,
) -> tuple[Path, Any]:
    """Write the champion's network as `version` with statistics of both regimes.

    `x_now`/`y_now`: recent windows (y = -1 where unlabeled). `labels_used`: the labels of the
    attempt whose gate found the champion handles the drift (the labeled windows among `x_now`
    only feed the validation metrics). Returns (bundle path, manifest).
    """
    norm = dict(champion.manifest.normalisation)
    rng = np.random.default_rng(seed)
    y_full = pseudo_label(champion.model, norm, x_now, y_now)
    x_rep, y_rep = replay
    x_stats, y_stats = balanced(x_rep, y_rep, x_now, y_full, rng)
    labeled = np.asarray(y_now) >= 0
    x_orig, y_orig = original_holdout
    x_val = np.concatenate([x_now[labeled], x_orig[:REFERENCE_SIZE]])
    y_val = np.concatenate([np.asarray(y_now)[labeled], y_orig[:REFERENCE_SIZE]])
    manifest = make_manifest(
        model=champion.model,
        version=version,
        parent=champion.version,
        site=site if site is not None else (champion.manifest.site or DEFAULT_PREFIX),
        quantization=champion.manifest.quantization,
        arch=str(champion.manifest.arch),
        converter=champion.manifest.converter,
        norm=norm,
        x_stats=x_stats,
        y_stats=y_stats,
        x_val=x_val,
        y_val=y_val,
        x_confidence=x_stats,
        kind=champion.manifest.machine(),
        extra={
            "reference_update": True,
            "labels_used": labels_used,
            "gate": reason,
            "train_stats_source": f"{len(x_now)} recent windows ({int(labeled.sum())} labeled) "
            f"+ {min(len(x_rep), REFERENCE_SIZE)} replay windows",
        },
    )
    manifest = carried_head(manifest, champion.manifest, champion.model)  # a grown model's
    path = write_artifacts(
        out_dir / f"v{version:04d}", manifest, champion.model, champion.keras, private_key
    )
    log.info(
        "v%d: v%d's network with a renewed detector reference (%d recent windows, %d labeled)",
        version,
        champion.version,
        len(x_now),
        int(labeled.sum()),
    )
    return path, manifest
