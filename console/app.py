"""The console's screen: a Textual app over a `ConsoleLink` (MQTT) and a `SiteModel` (pure).

    ┌ machines (state, class, confidence, drift, node, latency) ┐┌ nodes (rate, inbox, CPU…) ┐
    │                                                           ││ throughput ▁▂▃▅▇          │
    │                                                           ││ p99 latency ▁▁▂▁          │
    │                                                           ││ labeled accuracy ▇▇▃▅▇    │
    │                                                           ││ timeline of the loop      │
    └───────────────────────────────────────────────────────────┘└───────────────────────────┘
    d drift  c clear drift  l label  b roll back  tab next table  q quit

Every `REFRESH_S` the app drains what the link decoded into the model and updates only the
table cells that changed (so 100 machines cost a few cell updates per tick); every
`TICK_EVERY` refreshes it adds one point to each sparkline. Each action asks for confirmation
in a modal Yes/No screen before anything is published.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.notifications import SeverityLevel
from textual.screen import ModalScreen
from textual.widgets import (
    Button,
    DataTable,
    Footer,
    Header,
    Input,
    Label,
    OptionList,
    RichLog,
    Sparkline,
    Static,
)
from textual.widgets.option_list import Option

from protocol import CLASSES, Command, PayloadError, Topics
from protocol.labels import LabelEvent
from protocol.machine_state import ANOMALY
from protocol.names import check_name
from protocol.node_command import NodeCommand

from .model import SiteModel, TimelineEntry
from .mqtt import ConsoleLink
from .safe import MAX_LINE, clean, show

__all__ = ["ConfirmScreen", "ConsoleApp", "LabelScreen"]

log = logging.getLogger(__name__)

T = TypeVar("T")
REFRESH_S = 0.5  # tables at 2 Hz
TICK_EVERY = 4  # a sparkline point every 2 s
MACHINE_COLUMNS = ("machine", "state", "class", "conf", "drift", "node", "latency ms", "seen")
NODE_COLUMNS = (
    "node",
    "role",
    "state",
    "win/s",
    "inbox",
    "drops",
    "CPU %",
    "RSS MB",
    "model",
    "est. acc",
    "drift / phase",
    "seen",
)
_KIND_STYLE = {
    "drift": "yellow",
    "batches": "cyan",
    "fine-tune": "magenta",
    "phase": "magenta",
    "gate": "bold magenta",
    "swap": "bold green",
    "rollback": "bold red",
    "node": "blue",
    "action": "bold white",
}


class ConfirmScreen(ModalScreen[bool]):
    """Yes/No before an action is sent: y or Enter on Yes confirms, n or Escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "yes"),
        Binding("n,escape", "answer(False)", "no"),
    ]
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical { width: 70; height: auto; border: thick $warning; padding: 1 2;
                               background: $surface; }
    ConfirmScreen Horizontal { height: auto; align: center middle; margin-top: 1; }
    ConfirmScreen Button { margin: 0 2; }
    """

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(show(self.question, MAX_LINE), id="question")
            with Horizontal():
                yield Button("Yes (y)", variant="warning", id="yes")
                yield Button("No (n)", variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()  # Enter alone does nothing harmful

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class LabelScreen(ModalScreen[str | None]):
    """Pick the class a technician confirms for a machine, from its type's classes, or type a
    class its model does not know yet (a cold start; the node refuses a name a closed type does
    not have, listing its classes); Escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "cancel")]
    DEFAULT_CSS = """
    LabelScreen { align: center middle; }
    LabelScreen > Vertical { width: 70; height: auto; border: thick $accent; padding: 1 2;
                             background: $surface; }
    LabelScreen OptionList { height: auto; max-height: 16; }
    LabelScreen #problem { color: $error; }
    """

    def __init__(self, machine: str, default: str | None, choices: Sequence[str] = CLASSES):
        super().__init__()
        self.machine = machine
        self.choices = tuple(choices)
        self.default = default if default in self.choices else None

    def compose(self) -> ComposeResult:
        with Vertical():
            ask = f"Label {self.machine}'s current state as (Enter picks, Esc cancels):"
            yield Label(show(ask, MAX_LINE))
            options = (Option(show(c), id=f"c{i}") for i, c in enumerate(self.choices))
            yield OptionList(*options, id="classes")
            yield Input(placeholder="or another class name, then Enter", id="other")
            yield Label("", id="problem")

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        if self.choices:
            options.highlighted = 0 if self.default is None else self.choices.index(self.default)
            options.focus()
        else:
            self.query_one(Input).focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.choices[int(str(event.option.id)[1:])])

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """A typed name: checked as the protocol checks a class name before it goes out."""
        name = event.value.strip()
        try:
            if name == ANOMALY:
                raise PayloadError(f"'{ANOMALY}' is a model's verdict, not a class", "bad_label")
            check_name(name)
        except PayloadError as exc:
            self.query_one("#problem", Label).update(show(exc, MAX_LINE))
            return
        self.dismiss(name)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ConsoleApp(App[None]):
    """One screen for the site. `link` None: a screen without MQTT (tests of the layout)."""

    TITLE = "edgeloop console"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("d", "drift", "drift on machine"),
        Binding("c", "clear_drift", "clear drift"),
        Binding("l", "label", "label machine"),
        Binding("b", "rollback", "roll node back"),
        Binding("tab", "focus_next", "next table", show=False),
        Binding("q", "quit", "quit"),
    ]
    CSS = """
    #main { height: 1fr; }
    #machines { width: 3fr; height: 1fr; }
    #right { width: 4fr; }
    #nodes { height: auto; max-height: 12; }
    .spark-label { height: 1; color: $text-muted; }
    Sparkline { height: 2; margin-bottom: 1; }
    #timeline { height: 1fr; border-top: solid $accent; }
    #bar { height: 1; background: $boost; }
    """

    def __init__(
        self,
        link: ConsoleLink | None,
        topics: Topics,
        *,
        model: SiteModel | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.link = link
        self.topics = topics
        self.site = model or SiteModel()
        self.clock = clock
        self.sent: list[tuple[str, bytes]] = []  # every action published (topic, payload)
        self._refreshes = 0
        self._shown_timeline = 0
        self._machine_cells: dict[str, tuple[str, ...]] = {}
        self._node_cells: dict[str, tuple[str, ...]] = {}
        self._last_action = ""
        self.faults: dict[str, int] = {}  # messages the model raised on, per feed
        self._fault_logged: dict[str, float] = {}

    # -- layout -----------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="main"):
            yield DataTable(id="machines", cursor_type="row", zebra_stripes=True)
            with Vertical(id="right"):
                yield DataTable(id="nodes", cursor_type="row")
                yield Static("throughput (windows/s)", classes="spark-label", id="l-throughput")
                yield Sparkline([], id="s-throughput", summary_function=max)
                yield Static("p99 latency (ms)", classes="spark-label", id="l-latency_p99")
                yield Sparkline([], id="s-latency_p99", summary_function=max)
                yield Static("labeled accuracy", classes="spark-label", id="l-accuracy")
                yield Sparkline([], id="s-accuracy", summary_function=min)
                yield RichLog(id="timeline", max_lines=500, wrap=True, markup=False)
        yield Static("", id="bar")
        yield Footer()

    def on_mount(self) -> None:
        machines = self.query_one("#machines", DataTable)
        for name in MACHINE_COLUMNS:
            machines.add_column(name, key=name)
        nodes = self.query_one("#nodes", DataTable)
        for name in NODE_COLUMNS:
            nodes.add_column(name, key=name)
        broker = self.link.broker if self.link is not None else "no broker"
        self.sub_title = clean(f"{broker} · {self.topics.prefix}", MAX_LINE)
        machines.focus()
        self.set_interval(REFRESH_S, self.refresh_site)
        self.refresh_site()

    # -- refresh ----------------------------------------------------------------------------
    def refresh_site(self) -> None:
        """Drain the link into the model, then show what changed (called at 2 Hz)."""
        now = self.clock()
        if self.link is not None:
            got = self.link.drain()
            self._feed(self.site.status, got.statuses)
            self._feed(self.site.machine_state, got.states)
            self._feed(self.site.prediction, got.predictions)
        self._refreshes += 1
        if self._refreshes % TICK_EVERY == 0:
            self.site.tick(now)
            self._sparklines()
        _update_table(
            self.query_one("#machines", DataTable),
            self.site.machine_rows(now),
            self._machine_cells,
            MACHINE_COLUMNS,
        )
        _update_table(
            self.query_one("#nodes", DataTable),
            self.site.node_rows(now),
            self._node_cells,
            NODE_COLUMNS,
        )
        self._timeline()
        self._bar()

    def _feed(self, feed: Callable[[T, float], None], items: list[tuple[T, float]]) -> None:
        for item, t in items:
            try:
                feed(item, t)
            except Exception:  # one message the model chokes on must not end the screen
                self._fault(feed.__name__)

    def _fault(self, where: str) -> None:
        """A message the model could not take: counted (the bar shows it), logged once per
        kind and minute with its traceback; the console goes on."""
        self.faults[where] = self.faults.get(where, 0) + 1
        now = time.monotonic()
        if now - self._fault_logged.get(where, float("-inf")) >= 60.0:
            self._fault_logged[where] = now
            log.exception("the console could not show a message (%s); it goes on", where)

    def _sparklines(self) -> None:
        labels = {
            "throughput": "throughput (windows/s)",
            "latency_p99": "p99 latency (ms)",
            "accuracy": "labeled accuracy",
        }
        for key, series in self.site.series.items():
            data = list(series)
            self.query_one(f"#s-{key}", Sparkline).data = data
            last = f"{data[-1]:.3g}" if data else "-"
            self.query_one(f"#l-{key}", Static).update(
                show(f"{labels[key]}: now {last}, last {len(data)} points", MAX_LINE)
            )

    def _timeline(self) -> None:
        new = self.site.timeline_added - self._shown_timeline
        if new <= 0:
            return
        entries = list(self.site.timeline)[-new:]
        self._shown_timeline = self.site.timeline_added
        view = self.query_one("#timeline", RichLog)
        for e in entries:
            view.write(_entry_text(e))

    def _bar(self) -> None:
        link = self.link
        state = "no broker" if link is None else link.state
        refused = {} if link is None else link.bad_counts()
        ignored = sum(self.site.refused.values())  # malformed status-detail parts
        bad = f" · bad payloads {sum(refused.values())}" if refused else ""
        bad += f" · ignored status details {ignored}" if ignored else ""
        faults = sum(self.faults.values())
        bad += f" · messages not shown (faults) {faults}" if faults else ""
        machines, nodes = len(self.site.machines), len(self.site.nodes)
        action = f" · {self._last_action}" if self._last_action else ""
        self.query_one("#bar", Static).update(
            show(f" {state} · {machines} machines · {nodes} nodes{bad}{action}", MAX_LINE)
        )

    # -- selection --------------------------------------------------------------------------
    def selected(self, table_id: str) -> str | None:
        """The row key under the cursor of table `machines` or `nodes`, None if empty."""
        table = self.query_one(f"#{table_id}", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return None if key is None else str(key)

    # -- actions ----------------------------------------------------------------------------
    def action_drift(self) -> None:
        self._drift("step")

    def action_clear_drift(self) -> None:
        self._drift("off")

    def _drift(self, mode: str) -> None:
        machine = self.selected("machines")
        if machine is None:
            self._say("no machine selected", "warning")
            return
        what = "inject a step drift on" if mode == "step" else "clear the drift of"
        command = Command("drift", machines=(machine,), mode=mode)
        self._confirm(
            f"Simulator: {what} machine {machine}?",
            self.topics.sim_control,
            command.to_json(),
            f"drift {mode} on {machine}",
        )

    def action_label(self) -> None:
        machine = self.selected("machines")
        if machine is None:
            self._say("no machine selected", "warning")
            return

        def picked(cls: str | None) -> None:
            if cls is None:
                return
            now = self.clock()
            event = LabelEvent(machine, cls, start=now, source="operator console", ts=now)
            self._confirm(
                f"Label machine {machine} as {cls} from now on (until further notice)?",
                self.topics.labels,
                event.to_json(),
                f"label {machine} = {cls}",
            )

        choices = self.site.label_choices(machine)
        self.push_screen(LabelScreen(machine, self.site.current_class(machine), choices), picked)

    def action_rollback(self) -> None:
        node = self.selected("nodes")
        if node is None:
            self._say("no node selected (tab to the nodes table)", "warning")
            return
        row = self.site.nodes.get(node)
        if row is None or row.role != "edge":
            self._say(f"{node} is not a pi_edge node; only those roll back", "warning")
            return
        if row.model_version is None:
            self.notify(f"{node} serves no model (its status says); nothing to roll back")
            return
        # addressed: the node rolls back only while it still serves this version, once per id
        # (a repeat, a QoS 1 duplicate or a press after it rolled back by itself does nothing)
        command = NodeCommand(
            "rollback", id=f"console@{self.clock():.3f}", from_version=row.model_version
        )
        self._confirm(
            f"Roll node {node} back from model v{row.model_version} to its previous model?",
            self.topics.node_command(node),
            command.to_json(),
            f"rollback {node}",
        )

    def _confirm(self, question: str, topic: str, payload: bytes, what: str) -> None:
        def answered(yes: bool | None) -> None:
            if not yes:
                self._last_action = f"cancelled: {what}"
                return
            ok = self.link.send(topic, payload) if self.link is not None else False
            self.sent.append((topic, payload))
            self._last_action = f"sent: {what}" if ok else f"NOT sent (no broker): {what}"
            self.site.action(self.clock(), self._last_action)
            self._say(self._last_action, "information" if ok else "error")

        self.push_screen(ConfirmScreen(question), answered)

    def _say(self, message: str, severity: SeverityLevel) -> None:
        """A notification; `message` may hold ids from the network: never parsed as markup."""
        self.notify(clean(message, MAX_LINE), severity=severity, markup=False)


def _entry_text(e: TimelineEntry) -> Text:
    """A timeline line: Text appended piece by piece, so nothing in it is parsed as markup."""
    stamp = time.strftime("%H:%M:%S", time.localtime(e.ts))
    text = Text(f"{stamp} ", style="dim")
    text.append(f"{e.kind:<9} ", style=_KIND_STYLE.get(e.kind, ""))
    text.append(clean(e.text, MAX_LINE))
    return text


def _update_table(
    table: DataTable[Any],
    rows: list[tuple[str, tuple[str, ...]]],
    shown: dict[str, tuple[str, ...]],
    columns: tuple[str, ...],
) -> None:
    """Bring `table` to `rows`, touching only changed cells; `shown` is what it shows now.

    Cells go in as `Text` (a `str` cell would be parsed as markup: `[/x]` from a node raised
    MarkupError, `[link=…]` made a link).
    """
    keys = {key for key, _ in rows}
    for gone in [k for k in shown if k not in keys]:
        table.remove_row(gone)
        del shown[gone]
    added = False
    for key, cells in rows:
        before = shown.get(key)
        if before is None:
            table.add_row(*(show(c) for c in cells), key=key)
            added = True
        elif before != cells:
            for column, old, new in zip(columns, before, cells, strict=True):
                if old != new:
                    table.update_cell(key, column, show(new), update_width=True)
        shown[key] = cells
    if added:
        table.sort(columns[0], key=str)  # Text cells: by their plain text
