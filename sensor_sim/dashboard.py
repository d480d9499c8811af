"""The simulator's terminal dashboard: `render(snapshot)` plus a key reader.

`render` is pure (a `Snapshot` in, a rich renderable out) and is tested as text. `run_live`
drives it with rich `Live` at 4 Hz through `get_renderable` (no flicker, no redraw storms).
Keys never change the simulator directly: each one publishes a `protocol.Command` on
`…/sim/control`, exactly like `python -m sensor_sim drift` or any MQTT client would.

    d  toggle step drift on all machines     o  drift off on all machines
    f  force a random fault on one machine   r  repair all machines
    q  quit

>>> from rich.console import Console
>>> from sensor_sim.snapshot import MachineRow, Snapshot
>>> snap = Snapshot("127.0.0.1:1883", True, (MachineRow("m01", "bearing_fault", "step", 9.9, 3),),
...                 target_hz=10.0, control_ok=2, control_rejected=1)
>>> console = Console(width=100, color_system=None, force_terminal=False)
>>> with console.capture() as cap:
...     console.print(render(snap))
>>> text = cap.get()
>>> "connected" in text and "bearing_fault" in text and "ok 2 / rejected 1" in text
True
"""

from __future__ import annotations

import logging
import os
import select
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TextIO

import numpy as np
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from protocol import CLASSES, Command

from .snapshot import Snapshot

if TYPE_CHECKING:
    from .publisher import RunReport, Simulator

log = logging.getLogger(__name__)

REFRESH_PER_SECOND = 4
KEY_HELP = (
    "keys: d step drift on/off · o drift off · f random fault · r repair all · "
    "l technician labels on/off · q quit"
)
_STATE_STYLE = {"normal": "green"}


def render(snapshot: Snapshot) -> RenderableType:
    """The dashboard for one snapshot: two header lines and one row per machine."""
    link = (
        Text("connected", style="bold green")
        if snapshot.connected
        else Text("DISCONNECTED", style="bold red")
    )
    header = Text.assemble(
        "edgeloop simulator  broker ",
        (snapshot.broker, "bold"),
        " ",
        link,
        f"  prefix {snapshot.prefix}" if snapshot.prefix else "",
        f"\nrate {snapshot.total_rate:.1f} windows/s",
        f" (target {snapshot.target_hz * len(snapshot.machines):.0f})",
        f"  labels {snapshot.label_fraction:.0%}",
        f"  control ok {snapshot.control_ok} / rejected {snapshot.control_rejected}",
    )
    table = Table(expand=False)
    table.add_column("machine")
    table.add_column("true state")
    table.add_column("drift")
    table.add_column("windows/s", justify="right")
    table.add_column("labels", justify="right")
    for row in snapshot.machines:
        style = _STATE_STYLE.get(row.state, "bold yellow")
        drift_style = "" if row.drift == "off" else "magenta"
        table.add_row(
            row.machine,
            Text(row.state, style=style),
            Text(row.drift, drift_style),
            f"{row.rate:.1f}",
            str(row.labels),
        )
    parts: list[RenderableType] = [header, table]
    if snapshot.errors:
        errors = ", ".join(f"{k} {v}" for k, v in sorted(snapshot.errors.items()))
        parts.append(Text(f"errors: {errors}", style="red"))
    if snapshot.last_event:
        parts.append(Text(f"last: {snapshot.last_event}", overflow="ellipsis", no_wrap=True))
    parts.append(Text(KEY_HELP, style="dim"))
    return Group(*parts)


def command_for_key(key: str, snapshot: Snapshot, rng: np.random.Generator) -> Command | None:
    """The control command a dashboard key stands for (None for keys without one, and `q`).

    >>> from sensor_sim.snapshot import MachineRow, Snapshot
    >>> snap = Snapshot("b", True, (MachineRow("m01", "normal", "off", 0.0, 0),))
    >>> command_for_key("d", snap, np.random.default_rng(0)).to_json()
    b'{"v":1,"cmd":"drift","machines":["all"],"mode":"step"}'
    >>> command_for_key("r", snap, np.random.default_rng(0)).cmd
    'repair'
    """
    if key == "d":
        stepped = any(row.drift == "step" for row in snapshot.machines)
        return Command("drift", mode="off" if stepped else "step")
    if key == "o":
        return Command("drift", mode="off")
    if key == "r":
        return Command("repair")
    if key == "f" and snapshot.machines:
        row = snapshot.machines[int(rng.integers(len(snapshot.machines)))]
        faults = row.faults or CLASSES[1:]
        fault = faults[int(rng.integers(len(faults)))]
        return Command("fault", machines=(row.machine,), state=fault)
    return None


class KeyReader:
    """Single keys from a tty, non-blocking (termios cbreak); disabled when stdin is no tty."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdin
        try:
            self.enabled = self.stream.isatty()
        except (AttributeError, ValueError):
            self.enabled = False

    @contextmanager
    def active(self) -> Iterator[KeyReader]:
        if not self.enabled:
            yield self
            return
        import termios
        import tty

        fd = self.stream.fileno()
        saved = termios.tcgetattr(fd)
        try:
            tty.setcbreak(fd)
            yield self
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)

    def read(self) -> str | None:
        """One pending key, or None at once if there is none."""
        if not self.enabled:
            return None
        ready, _, _ = select.select([self.stream], [], [], 0)
        if not ready:
            return None
        return os.read(self.stream.fileno(), 1).decode(errors="ignore") or None


def run_live(
    sim: Simulator,
    console: Console,
    stop: threading.Event | None = None,
    keys: KeyReader | None = None,
) -> RunReport:
    """Run the simulator under a live dashboard until `q`, Ctrl-C, `stop` or the duration."""
    stop = stop or threading.Event()
    keys = keys or KeyReader()
    rng = np.random.default_rng()

    def on_idle() -> None:
        key = keys.read()
        while key is not None:
            if key in ("q", "Q"):
                stop.set()
                return
            if key.lower() == "l":  # label events, not a control command: they go to pi_edge
                sim.technician()
                key = keys.read()
                continue
            cmd = command_for_key(key.lower(), sim.snapshot(), rng)
            if cmd is not None:
                sim.send_command(cmd)
            key = keys.read()

    get: Callable[[], RenderableType] = lambda: render(sim.snapshot())  # noqa: E731
    with (
        keys.active(),
        Live(
            get_renderable=get,
            console=console,
            refresh_per_second=REFRESH_PER_SECOND,
            transient=False,
        ),
    ):
        return sim.run(stop, on_idle=on_idle)
