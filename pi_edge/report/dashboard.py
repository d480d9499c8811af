"""The live terminal view: a pure function from a `Snapshot` to a rich renderable.

`pi_edge run` wraps `render` in `rich.live.Live(get_renderable=..., refresh_per_second=1)`;
tests render it to a fixed-width colourless console and compare text. rich is imported only
when something is rendered: a `--no-dashboard` service saves its ~2.4 MB.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from protocol.machine_state import ANOMALY

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.text import Text

OK, FAULT, LOW_CONF, STALE = "OK", "FAULT", "LOW-CONF", "STALE"
ANOMALY_BADGE = "ANOMALY"  # an anomaly model's verdict: unusual, not a known fault
_BADGE_STYLE = {
    OK: "bold green",
    FAULT: "bold red",
    ANOMALY_BADGE: "bold magenta",
    LOW_CONF: "bold yellow",
    STALE: "dim",
}
_DRIFT_STYLE = {"ok": "green", "suspect": "bold yellow", "drift": "bold red"}


@dataclass(frozen=True, slots=True)
class MachineRow:
    """One machine's latest view."""

    machine: str
    last_class: str
    confidence: float
    windows_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    idle_s: float = 0.0
    windows: int = 0
    drift: str = "ok"
    normal: str | None = None  # its machine type's healthy class (None: the node's)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the dashboard shows, copied out of the service at one instant."""

    node: str
    model_version: int | None
    model_age_s: float | None
    broker_state: str
    queue_depth: int
    queue_capacity: int
    drops: int
    windows_per_s: float
    bad_payloads: dict[str, int] = field(default_factory=dict)
    machines: tuple[MachineRow, ...] = ()
    last_model_error: str | None = None
    normal_class: str = "normal"
    low_confidence: float = 0.6
    stale_after_s: float = 10.0
    drift: str = "ok"
    evidence: dict[str, Any] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)  # nodekit.guard.Faults.counts()
    machines_tracked: int = 0
    machines_evicted: int = 0


def badge(row: MachineRow, snap: Snapshot) -> str:
    """State badge of one machine: STALE, FAULT (ANOMALY for an anomaly model's verdict),
    LOW-CONF or OK (in that priority).

    >>> s = Snapshot("n", 1, 0.0, "connected", 0, 8, 0, 0.0)
    >>> [badge(MachineRow("m", c, p, 1, 1, 1), s)
    ...  for c, p in (("normal", 0.9), ("pump_fault", 0.9), ("normal", 0.4))]
    ['OK', 'FAULT', 'LOW-CONF']
    >>> badge(MachineRow("m", "anomaly", 0.9, 1, 1, 1), s)
    'ANOMALY'
    >>> badge(MachineRow("fan-1", "ok", 0.9, 1, 1, 1, normal="ok"), s)  # a fan's healthy class
    'OK'

    """
    if row.idle_s > snap.stale_after_s:
        return STALE
    if row.last_class != (row.normal or snap.normal_class):
        return ANOMALY_BADGE if row.last_class == ANOMALY else FAULT
    if row.confidence < snap.low_confidence:
        return LOW_CONF
    return OK


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h"


def render(snap: Snapshot) -> RenderableType:
    """Header lines + one table row per machine."""
    from rich.console import Group
    from rich.text import Text

    model = (
        "none (waiting for a bundle)" if snap.model_version is None else f"v{snap.model_version}"
    )
    header = Text()
    header.append(f"pi_edge {snap.node}", style="bold")
    header.append(f"  model {model} age {_age(snap.model_age_s)}")
    broker_style = "green" if snap.broker_state == "connected" else "bold red"
    header.append("  broker ")
    header.append(snap.broker_state, style=broker_style)
    header.append(
        f"\nqueue {snap.queue_depth}/{snap.queue_capacity}  drops {snap.drops}  "
        f"{snap.windows_per_s:.1f} windows/s  bad payloads "
    )
    bad = ", ".join(f"{k} {v}" for k, v in sorted(snap.bad_payloads.items())) or "0"
    header.append(bad, style="yellow" if snap.bad_payloads else "")
    header.append("\ndrift ")
    header.append(snap.drift.upper(), style=_DRIFT_STYLE.get(snap.drift, ""))
    ev = snap.evidence
    if ev:
        d, b = ev.get("drift", {}), ev.get("buffer", {})
        seen, wrong = d.get("labeled_seen", 0), d.get("labeled_wrong", 0)
        acc = f"{1 - wrong / seen:.3f}" if seen else "-"
        header.append(
            f"  labeled accuracy {acc} ({seen} labels)  kept: {b.get('pending', 0)} pending, "
            f"{b.get('inflight', 0)} in flight, {b.get('acknowledged', 0)} shipped"
        )
        est = ev.get("estimate") or {}
        if est.get("accuracy_est") is not None:  # label-free (loop/accuracy_estimate.py)
            header.append(
                f"\naccuracy estimate {est['accuracy_est']:.3f} ({est.get('method')}, "
                f"last {est.get('windows')} windows, no labels needed)",
                style="bold yellow" if est["accuracy_est"] < 0.9 else "",
            )
    if snap.machines_evicted:
        header.append(
            f"\nmachines {snap.machines_tracked} tracked, {snap.machines_evicted} evicted "
            "(least recently seen; raise --max-machines if this fleet is larger)",
            style="yellow",
        )
    if snap.faults:
        faults = ", ".join(f"{k} {v}" for k, v in sorted(snap.faults.items()))
        header.append(f"\nunexpected faults (threads carried on): {faults}", style="bold red")
    parts: list[RenderableType] = [header]
    if snap.last_model_error:
        parts.append(Text(f"last refused bundle: {snap.last_model_error}", style="red"))
    if not snap.machines:
        parts.append(Text("no windows yet", style="dim"))
    else:
        parts.append(_table(snap))
    return Group(*parts)


_COLUMNS = (  # name, right-aligned
    ("machine", False),
    ("class", False),
    ("conf", True),
    ("state", False),
    ("drift", False),
    ("win/s", True),
    ("p50 ms", True),
    ("p99 ms", True),
)


def _table(snap: Snapshot) -> Text:
    """The machine table as one styled Text of fixed-width columns.

    Not a rich Table: laying one out measures every cell, and at 1 Hz that alone cost pi_edge
    more CPU than classifying the demo's 160 windows/s (bench/demo_load.py); padded strings
    cost a fraction of it and look the same.
    """
    from rich.text import Text

    rows = []
    for row in snap.machines:
        b = badge(row, snap)
        rows.append(
            (
                (row.machine, ""),
                (row.last_class, ""),
                (f"{row.confidence:.2f}", ""),
                (b, _BADGE_STYLE[b]),
                (row.drift, _DRIFT_STYLE.get(row.drift, "")),
                (f"{row.windows_per_s:.1f}", ""),
                (f"{row.latency_p50_ms:.1f}", ""),
                (f"{row.latency_p99_ms:.1f}", ""),
            )
        )
    widths = [max(len(name), *(len(r[i][0]) for r in rows)) for i, (name, _) in enumerate(_COLUMNS)]
    out = Text()
    for i, (name, right) in enumerate(_COLUMNS):
        out.append(("  " if i else "") + (name.rjust if right else name.ljust)(widths[i]), "bold")
    for r in rows:
        out.append("\n")
        for i, (cell, style) in enumerate(r):
            padded = cell.rjust(widths[i]) if _COLUMNS[i][1] else cell.ljust(widths[i])
            out.append(("  " if i else "") + padded, style)
    return out
