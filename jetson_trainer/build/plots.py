"""PNG figures for the report: confusion matrices and training curves (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot_confusion", "plot_training_curves"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(cm: list[list[int]], classes: tuple[str, ...], path: Path, title: str) -> Path:
    """Write a labelled confusion-matrix heat map to `path`."""
    import numpy as np

    plt = _pyplot()
    arr = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(5.5, 4.8), dpi=100)
    im = ax.imshow(arr, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    top = arr.max() if arr.size else 0
    for i in range(arr.shape[0]):
        for j in range(arr.shape[1]):
            ax.text(
                j,
                i,
                str(arr[i, j]),
                ha="center",
                va="center",
                color="white" if arr[i, j] > top / 2 else "black",
            )
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_training_curves(history: dict[str, list[float]], path: Path, title: str) -> Path:
    """Write loss and accuracy per epoch (train and validation) to `path`."""
    plt = _pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for key, ax in (("loss", ax_loss), ("accuracy", ax_acc)):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = history.get(prefix + key)
            if values:
                ax.plot(range(1, len(values) + 1), values, style, label=(prefix or "train_") + key)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
