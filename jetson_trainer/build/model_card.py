"""`model_card.md` beside each bundle: what a version is, what it learned from, how it scored.

`model_card(manifest, report, record)` is pure (dicts in, markdown out); `write_model_card`
writes it into the bundle's directory and links the figures the trainer wrote there
(`confusion_matrix_<split>.png`, `training_curves.png`).

>>> card = model_card({"version": 2, "parent": 1, "quantization": "int8", "site": "edgeloop/v1",
...                    "metrics": {"n": 40, "accuracy": 0.975, "macro_f1": 0.97}},
...                   {"shipped": "int8", "figures": ["training_curves.png"],
...                    "conversion": {"int8": {"passed": True, "agreement": 1.0,
...                                   "size_bytes": 10600, "us_per_window": 5.6}}},
...                   {"status": "champion", "labels": {"total": 48,
...                    "per_class": {"normal": 12, "bearing_fault": 12}}})
>>> print(card.splitlines()[0])
# Model card: v2
>>> "| accuracy | 0.9750 |" in card and "![training_curves.png](training_curves.png)" in card
True
>>> "normal 12, bearing_fault 12" in card and "int8 (the requested variant" in card
True
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from protocol.machine_type import DEFAULT_TYPE

__all__ = ["CARD_NAME", "model_card", "write_model_card"]

log = logging.getLogger(__name__)
CARD_NAME = "model_card.md"

_USE = (
    "Classifies one window of {length} samples × {n} channels ({channels}) from one machine "
    "into {classes}, on a pi_edge node of the site named above. The input is the raw window; "
    "the node normalises it with the manifest's `normalisation`."
)
_LIMITS = (
    "- Trained on the data listed above only: other machines, sensors, sampling rates or "
    "fault kinds are out of its scope; the node's drift detector and out-of-distribution flag "
    "(against this manifest's `train_stats`) say when inputs leave that scope.\n"
    "- Scores come from the labeled windows named above; few labels per class give wide "
    "error bars, and label noise in them is not corrected.\n"
    "- It is a decision aid for maintenance, not a safety function: never the only guard "
    "against a hazardous failure."
)


def _f(v: Any) -> str:
    if isinstance(v, Mapping):  # e.g. metrics.mean_confidence_per_class
        return ", ".join(f"{k} {_f(x)}" for k, x in v.items()) or "—"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _kv_table(rows: list[tuple[str, Any]]) -> list[str]:
    out = ["| | |", "|---|---|"]
    out += [f"| {k} | {_f(v)} |" for k, v in rows if v is not None]
    return out


def _quantization(manifest: Mapping[str, Any], report: Mapping[str, Any]) -> list[str]:
    q = manifest.get("quantization") or report.get("shipped") or "?"
    conv = report.get("conversion") or {}
    if not conv:
        return [
            f"{q}. The daemon's fine-tunes convert to int8 only (smallest and fastest on the "
            "Pi) and ship it after its argmax agreement with Keras passed the check "
            "(≥ 99.5 % on held-out windows)."
        ]
    requested = report.get("requested", q)
    why = (
        "the requested variant, which passed the check"
        if q == requested
        else f"{requested} was requested but failed the check; {q} is the first that passed"
    )
    lines = [
        f"{q} ({why}: argmax agreement with Keras ≥ 99.5 % and a resizable batch).",
        "",
        "| variant | passed | agreement | bytes | µs/window |",
        "|---|---|---|---|---|",
    ]
    for name, v in conv.items():
        if isinstance(v, Mapping):
            lines.append(
                f"| {name} | {v.get('passed')} | {_f(v.get('agreement'))} | "
                f"{v.get('size_bytes')} | {_f(v.get('us_per_window'))} |"
            )
    return lines


def model_card(
    manifest: Mapping[str, Any],
    report: Mapping[str, Any] | None = None,
    record: Mapping[str, Any] | None = None,
) -> str:
    """The markdown card of one version from its manifest, report.json and registry record."""
    rep = report or {}
    rec = record or {}
    extra = manifest.get("extra") or {}
    version = manifest.get("version")
    created = manifest.get("created")
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(created)) if created else None
    lines = [f"# Model card: v{version}", ""]
    lines += _kv_table(
        [
            ("version", f"v{version}"),
            ("parent", f"v{manifest['parent']}" if manifest.get("parent") else "none (trained)"),
            ("re-issue of", f"v{extra['reissue_of']}" if "reissue_of" in extra else None),
            ("created", when),
            ("site", manifest.get("site")),
            ("architecture", manifest.get("arch")),
            ("parameters", extra.get("params")),
            ("converter", manifest.get("converter")),
            ("model sha256", manifest.get("model_sha256")),
        ]
    )
    if "reissue_of" in extra:
        n = extra["reissue_of"]
        lines.append(
            f"\nThe same `.tflite` as v{n}, re-signed under a new version (a node refuses a "
            f"version not above the newest it saw); its report and figures are in `../v{n:04d}/`."
        )
    for mark in rec.get("bad") or ():
        lines.append(
            f"\n**Rolled back** by node `{mark.get('node')}` "
            f"({'automatically' if mark.get('auto') else 'by an operator'}): {mark.get('reason')}"
        )
    data = dict(rec.get("data") or {})
    stats = manifest.get("train_stats") or {}
    for key in ("n_train", "n_validation", "n_labeled", "n_replay"):
        if key in rep:
            data.setdefault(key, rep[key])
    if isinstance(stats, Mapping) and "n_windows" in stats:
        data.setdefault("train_stats_windows", stats["n_windows"])
    if "train_stats_source" in extra:
        data.setdefault("train_stats_source", extra["train_stats_source"])
    lines += ["", "## Data", ""]
    lines += _kv_table(sorted(data.items())) if data else ["not recorded"]
    labels = dict(rec.get("labels") or {})
    if "class_counts" in rep:
        labels.setdefault("per_class", rep["class_counts"])
    lines += ["", "## Labels", ""]
    per = labels.get("per_class")
    if isinstance(per, Mapping) and per:
        lines.append(
            f"{labels.get('total', sum(int(v) for v in per.values()))} labeled windows: "
            + ", ".join(f"{k} {v}" for k, v in per.items())
        )
    elif labels.get("total") is not None:
        lines.append(f"{labels['total']} labeled windows")
    else:
        lines.append("not recorded")
    if labels.get("source"):
        lines.append(f"\nSource: {labels['source']}")
    lines += ["", "## Metrics", ""]
    metrics = manifest.get("metrics") or {}
    lines.append("On the validation windows, from the shipped `.tflite`:")
    lines.append("")
    lines += _kv_table(list(metrics.items()))
    for split, m in (rep.get("splits") or {}).items():
        if isinstance(m, Mapping) and "accuracy" in m:
            lines.append(
                f"\n{split}: accuracy {_f(m['accuracy'])}, macro-F1 {_f(m.get('macro_f1'))}"
                f" (n = {m.get('n')})"
            )
    gate = rec.get("gate")
    if gate:
        lines += ["", "## Gate", ""]
        lines.append(
            f"{'accepted' if gate.get('accepted') else 'refused'}: {gate.get('reason', '')}"
        )
        lines.append("")
        lines += _kv_table(
            [
                ("champion on drift", gate.get("champion_drift")),
                ("challenger on drift", gate.get("challenger_drift")),
                ("champion on original", gate.get("champion_original")),
                ("challenger on original", gate.get("challenger_original")),
                ("drift windows judged on", gate.get("holdout")),
            ]
        )
    elif "gate" in extra:
        lines += ["", "## Gate", "", f"accepted: {extra['gate']}"]
    lines += ["", "## Quantization", ""]
    lines += _quantization(manifest, rep)
    figures = rep.get("figures") or []
    if figures:
        lines += ["", "## Figures", ""]
        lines += [f"![{name}]({name})" for name in figures]
    channels = list(manifest.get("channels") or DEFAULT_TYPE.channel_names)
    use = _USE.format(
        length=manifest.get("window_length") or DEFAULT_TYPE.window_length,
        n=len(channels),
        channels=", ".join(channels),
        classes=", ".join(manifest.get("classes") or DEFAULT_TYPE.classes),
    )
    lines += ["", "## Intended use", "", use, "", "## Limits", "", _LIMITS, ""]
    return "\n".join(lines)


def write_model_card(bundle_dir: Path, record: Mapping[str, Any] | None = None) -> Path | None:
    """Write `model_card.md` in `bundle_dir` from its manifest.json and report.json (if any).

    Returns the path, or None (logged) when the manifest is missing or unreadable: a card is
    documentation and never stops the trainer.
    """
    bundle_dir = Path(bundle_dir)
    try:
        manifest = json.loads((bundle_dir / "manifest.json").read_text())
        report_path = bundle_dir / "report.json"
        report = json.loads(report_path.read_text()) if report_path.exists() else None
        figures = [p.name for p in sorted(bundle_dir.glob("*.png"))]
        if figures and (report is None or not report.get("figures")):
            report = {**(report or {}), "figures": figures}
        path = bundle_dir / CARD_NAME
        path.write_text(model_card(manifest, report, record))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        log.warning("no model card for %s: %s", bundle_dir, exc)
        return None
    return path
