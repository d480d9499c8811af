"""The small, stable Python API other packages' tests and a trainer daemon use.

build_bundle(x, y, out_dir, ...) -> Path      train + convert + (sign) + write a bundle
generate_keypair(out_dir) -> (private, public)
finetune_model(keras_model, x_new, y_new, x_replay, y_replay, *, norm, ...) -> fine-tuned model
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from protocol import DEFAULT_PREFIX

from .build.keys import generate_keypair
from .build.train import finetune_model  # imports Keras only when called

__all__ = ["build_bundle", "finetune_model", "generate_keypair"]


def build_bundle(
    x: np.ndarray,
    y: np.ndarray,
    out_dir: Path,
    *,
    arch: str = "compact",
    epochs: int = 3,
    seed: int = 0,
    version: int = 1,
    parent: int | None = None,
    private_key: Path | None = None,
    quantization: str = "int8",
    site: str = DEFAULT_PREFIX,
) -> Path:
    """Train on raw windows, convert, sign if `private_key`, write the bundle and `model.keras`.

    `site`: the topic prefix of the nodes the bundle is for; they refuse another site's bundle.

    Returns the path of `out_dir/model.bundle`. No figures; `report.json` is written.
    """
    from .build.pipeline import run_train

    outcome = run_train(
        x,
        y,
        Path(out_dir),
        arch=arch,
        epochs=epochs,
        seed=seed,
        quantization=quantization,
        private_key=private_key,
        version=version,
        parent=parent,
        site=site,
        figures=False,
        verbose=0,
        time_repeats=30,
        quantizations=(quantization,),
    )
    return outcome.bundle_path
