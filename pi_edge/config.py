"""EdgeConfig: every setting of `pi_edge run`, declared once, in sections beside their concern.

The node's own settings (broker, prefix, node id, state dir, MQTT login) are here; the rest are
sections — `intake` (pi_edge/intake/config.py), `models` (pi_edge/model/config.py), `loop`
(pi_edge/loop/config.py) and `report` (pi_edge/report/config.py) — whose flags, environment
variables (`EDGELOOP_<NAME>`) and file keys are the node's, as before (`nodekit.settings`).
Each part of the node is handed its section whole.

Precedence (last wins): defaults < `--config FILE` (TOML, top level or an `[edge]` table, a
section's settings also in an `[edge.<section>]` table, unknown keys refused) < environment <
command-line flags.

>>> from nodekit.settings import build, resolve
>>> cfg = resolve(EdgeConfig, env={"EDGELOOP_BROKER": "pi-hub:1884"}, flags={"batch_max": "16"})
>>> cfg.broker, cfg.intake.batch_max, cfg.node.startswith("edge-")
('pi-hub:1884', 16, True)
>>> build(EdgeConfig, low_confidence=1.0)
Traceback (most recent call last):
...
protocol.errors.ConfigError: low_confidence 1.0: drift config confidence_floor must be ...
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from nodekit.mqtt import Credentials
from nodekit.settings import (
    MqttSettings,
    broker_setting,
    check,
    prefix_setting,
    section,
    setting,
)
from protocol import Topics, check_id
from protocol.machine_type import DEFAULT_TYPE_NAME

from .intake.config import IntakeConfig
from .intake.signal_types import TypeSignals, plan_signals
from .loop.config import LoopConfig
from .model.config import ModelConfig
from .report.config import ReportConfig

SECTION = "edge"  # the TOML table a shared config file keeps pi_edge's settings in


def default_node() -> str:
    """'edge-<hostname>' with characters outside the id alphabet replaced by '-'."""
    host = re.sub(r"[^A-Za-z0-9_.\-]", "-", socket.gethostname())[:58] or "pi"
    return f"edge-{host}"


def default_state_dir() -> Path:
    """$XDG_STATE_HOME/edgeloop/pi_edge (~/.local/state/edgeloop/pi_edge)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "edgeloop" / "pi_edge"


@dataclass(frozen=True, slots=True)
class NodeBasics:
    """What every part of a node knows of the node itself: its id, broker and login, topics
    and state dir (the sections say the rest)."""

    node: str
    broker: str
    topics: Topics
    state_dir: Path
    credentials: Credentials


@dataclass(frozen=True, slots=True)
class EdgeConfig(MqttSettings):
    """Settings of one pi_edge node; checked on construction."""

    broker: str = broker_setting()
    prefix: str = prefix_setting()
    node: str = setting(
        factory=default_node,
        help="node id: status topic and MQTT client id",
        check=lambda v: check_id(v, "node id"),
    )
    state_dir: Path = setting(
        factory=default_state_dir, help="where models, kept windows and history live"
    )
    intake: IntakeConfig = section(IntakeConfig, help="intake: machines, batching, signals")
    models: ModelConfig = section(ModelConfig, help="models: trust, runtime, health watch")
    loop: LoopConfig = section(LoopConfig, help="the closed loop: kept windows, labels")
    report: ReportConfig = section(
        ReportConfig, help="reports: status, states, Home Assistant, Sparkplug, Prometheus"
    )

    def __post_init__(self) -> None:
        check(self)
        if self.intake.signals:
            self.signal_plans()  # a wrong signals file fails at start (ConfigError), not later

    def signal_plans(self) -> tuple[TypeSignals, ...]:
        """The checked signals files, one per machine type (none without --signals);
        ConfigError if one is wrong (intake/signal_types.py)."""
        if not self.intake.signals:
            return ()
        served = self.models.served()
        alone = (  # the built-in type alone, no site file: every machine is its
            len(served) == 1 and served[0].name == DEFAULT_TYPE_NAME and self.models.site is None
        )
        types = {kind.name: kind.declared for kind in served}
        return plan_signals(self.intake.signals, types, route_all=alone)

    @property
    def topics(self) -> Topics:
        return Topics(self.prefix)

    def basics(self) -> NodeBasics:
        """The node's own settings for its parts; reads the password file (ConfigError now)."""
        return NodeBasics(self.node, self.broker, self.topics, self.state_dir, self.credentials())
