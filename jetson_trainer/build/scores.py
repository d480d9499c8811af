"""Classification metrics as plain JSON-able dicts, and their table for the terminal.

>>> import numpy as np
>>> m = classification_metrics(np.array([0, 1, 1]), np.eye(4)[[0, 1, 0]], ("a", "b", "c", "d"))
>>> m["accuracy"], m["n"], m["confusion_matrix"][1]
(0.6667, 3, [1, 1, 0, 0])
"""

from __future__ import annotations

from typing import Any

import numpy as np

from protocol.machine_type import DEFAULT_TYPE

__all__ = ["classification_metrics", "confidence_summary", "metrics_table"]

_CONF_QUANTILES = (0.01, 0.05, 0.25, 0.5)


def _r(v: Any) -> float:
    return round(float(v), 4)


MIN_PER_CLASS = 8  # windows a class needs for its own confidence reference (a plant model's
# validation split of ~900 windows predicts 10–20 of each fault)


def confidence_summary(
    probs: np.ndarray, classes: tuple[str, ...] = DEFAULT_TYPE.classes
) -> dict[str, Any]:
    """Mean and low quantiles of the top-class probability (the Pi's confidence baseline),
    and its mean per predicted class with at least MIN_PER_CLASS windows: on a plant a
    developing fault is predicted less surely than a normal window, and one overall reference
    made every developing fault a confidence drift alarm.

    >>> p = np.array([[0.99, 0.01, 0, 0]] * 30 + [[0.3, 0.7, 0, 0]] * 8 + [[0, 0, 0.9, 0.1]])
    >>> s = confidence_summary(p, ("a", "b", "c", "d"))
    >>> s["mean_confidence"], s["mean_confidence_per_class"]
    (0.9282, {'a': 0.99, 'b': 0.7})
    """
    probs = np.asarray(probs)
    conf = probs.max(axis=1)
    pred = probs.argmax(axis=1)
    out: dict[str, Any] = {"mean_confidence": _r(conf.mean())}
    out.update(
        {f"confidence_q{round(q * 100):02d}": _r(np.quantile(conf, q)) for q in _CONF_QUANTILES}
    )
    out["mean_confidence_per_class"] = {
        name: _r(conf[pred == c].mean())
        for c, name in enumerate(classes)
        if (pred == c).sum() >= MIN_PER_CLASS
    }
    return out


def classification_metrics(
    y: np.ndarray, probs: np.ndarray, classes: tuple[str, ...] = DEFAULT_TYPE.classes
) -> dict[str, Any]:
    """Accuracy, macro F1, per-class precision/recall/F1, one-vs-rest ROC-AUC, confusion matrix."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

    y = np.asarray(y)
    probs = np.asarray(probs, np.float64)
    labels = list(range(len(classes)))
    pred = probs.argmax(axis=1)
    p, r, f, support = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    present = [c for c in labels if (y == c).any()]
    per_class: dict[str, Any] = {}
    aucs = []
    for c in labels:
        auc: float | None = None
        if 0 < (y == c).sum() < len(y):
            auc = _r(roc_auc_score(y == c, probs[:, c]))
            aucs.append(auc)
        per_class[classes[c]] = {
            "precision": _r(p[c]),
            "recall": _r(r[c]),
            "f1": _r(f[c]),
            "support": int(support[c]),
            "roc_auc": auc,
        }
    out: dict[str, Any] = {
        "n": len(y),
        "accuracy": _r((pred == y).mean()),
        "macro_f1": _r(np.mean([f[c] for c in present])) if present else 0.0,
        "roc_auc_macro": _r(np.mean(aucs)) if aucs else None,
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(y, pred, labels=labels).tolist(),
    }
    out.update(confidence_summary(probs, classes))
    return out


def metrics_table(results: dict[str, dict[str, Any]], title: str = "metrics") -> Any:
    """A rich Table: one row per split (accuracy, macro F1, ROC-AUC, per-class recall, n)."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("split")
    for col in ("n", "accuracy", "macro F1", "ROC-AUC"):
        table.add_column(col, justify="right")
    classes = list(next(iter(results.values()))["per_class"]) if results else []
    for c in classes:
        table.add_column(f"recall {c}", justify="right")
    for split, m in results.items():
        auc = m.get("roc_auc_macro")
        table.add_row(
            split,
            str(m["n"]),
            f"{m['accuracy']:.4f}",
            f"{m['macro_f1']:.4f}",
            "-" if auc is None else f"{auc:.4f}",
            *(f"{m['per_class'][c]['recall']:.3f}" for c in classes),
        )
    return table
