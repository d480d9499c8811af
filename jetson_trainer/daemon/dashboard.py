"""The trainer daemon's terminal dashboard: a pure function from a snapshot to a rich renderable.

>>> from rich.console import Console
>>> snap = TrainerSnapshot(phase="idle", policy="watching", champion=2, connected=True,
...     stored=10, labeled=4, by_machine={"m01": 10}, by_class={1: 4},
...     by_reason={"labeled": 4}, batches=3, duplicates=0, bad_batches=0, pis={},
...     last_gate=None, history=[])
>>> console = Console(width=100, color_system=None, force_terminal=False)
>>> with console.capture() as cap:
...     console.print(render(snap))
>>> "champion v2" in cap.get()
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from protocol.machine_type import DEFAULT_TYPE


@dataclass(frozen=True, slots=True)
class TrainerSnapshot:
    phase: str
    policy: str
    champion: int | None
    connected: bool
    stored: int
    labeled: int
    by_machine: dict[str, int]
    by_class: dict[int, int]
    by_reason: dict[str, int]
    batches: int
    duplicates: int
    bad_batches: int
    pis: dict[str, dict[str, Any]]
    last_gate: dict[str, Any] | None
    history: list[dict[str, Any]]
    classes: tuple[str, ...] = DEFAULT_TYPE.classes  # what the stored labels index


def render(s: TrainerSnapshot) -> Group:
    broker = "[green]connected[/]" if s.connected else "[red]disconnected[/]"
    champion = f"v{s.champion}" if s.champion is not None else "none"
    head = Text.from_markup(
        f"[b]edgeloop trainer[/]  champion {champion}  broker {broker}  phase [b]{s.phase}[/]\n"
        f"policy: {s.policy}\n"
        f"batches {s.batches}  duplicates dropped {s.duplicates}  malformed {s.bad_batches}"
    )
    store = Table(title=f"stored windows: {s.stored} ({s.labeled} labeled)", expand=True)
    store.add_column("by class")
    store.add_column("by reason")
    store.add_column("by machine")
    classes = (
        "\n".join(
            f"{s.classes[k] if 0 <= k < len(s.classes) else k}: {v}"
            for k, v in sorted(s.by_class.items())
        )
        or "-"
    )
    reasons = "\n".join(f"{k}: {v}" for k, v in sorted(s.by_reason.items())) or "-"
    machines = ", ".join(f"{k} {v}" for k, v in sorted(s.by_machine.items())[:24]) or "-"
    store.add_row(classes, reasons, machines)
    gate = Text("no fine-tune yet")
    if s.last_gate:
        g = s.last_gate
        verdict = "[green]ACCEPTED[/]" if g["accepted"] else "[red]REJECTED[/]"
        gate = Text.from_markup(
            f"{verdict} {g['reason']}\n"
            f"drift holdout: champion {_f(g['champion_drift'])} → challenger "
            f"{_f(g['challenger_drift'])}   original holdout: {_f(g['champion_original'])} → "
            f"{_f(g['challenger_original'])}   labels {g['labels_used']}, judged on "
            f"{g['holdout']}  {g['seconds']:.1f} s"
        )
    history = Table(title="model history", expand=True)
    for col in ("version", "parent", "accepted", "labels", "drift acc", "original acc"):
        history.add_column(col)
    for h in s.history:
        history.add_row(
            str(h["version"]),
            str(h["parent"]),
            "yes" if h["accepted"] else "no",
            str(h["labels_used"]),
            _f(h.get("challenger_drift")),
            _f(h.get("challenger_original")),
        )
    pis = Table(title="Pis", expand=True)
    for col in ("node", "state", "drift", "model"):
        pis.add_column(col)
    for node, p in sorted(s.pis.items()):
        pis.add_row(node, str(p.get("state")), str(p.get("drift")), str(p.get("model")))
    return Group(Panel(head), store, Panel(gate, title="last gate decision"), history, pis)


def _f(v: object) -> str:
    return f"{v:.3f}" if isinstance(v, float) else "-"
