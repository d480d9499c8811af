"""What the node reports and how: status, logs, dashboard, debounced machine states, Home
Assistant, Sparkplug B and Prometheus. A section of `pi_edge.config.EdgeConfig`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nodekit.guard import Faults
from nodekit.settings import check, metrics_host_setting, metrics_port_setting, setting
from protocol.sparkplug import check_group

from .debounce import DEFAULT_STATE_WINDOWS, Debouncer
from .home_assistant import DEFAULT_HA_PREFIX, HaDiscovery, check_ha_prefix
from .sparkplug import DEFAULT_SILENCE_S, SparkplugNode

if TYPE_CHECKING:
    from ..config import NodeBasics

__all__ = ["ReportConfig"]


def _state_confidence(value: float) -> None:
    Debouncer(min_confidence=value)  # the debouncer's own rule


@dataclass(frozen=True, slots=True)
class ReportConfig:
    """The node's outputs besides predictions; checked on construction."""

    status_interval_s: float = setting(
        2.0,
        help="seconds between status messages",
        low=0.05,
        high=3600.0,
        flag="--status-interval",
    )
    log_interval_s: float = setting(
        10.0, help="seconds between repeated log lines of one error kind", low=0.0, high=86400.0
    )
    dashboard: bool = setting(True, help="live view (off: service mode, plain logs)")
    state_windows: int = setting(
        DEFAULT_STATE_WINDOWS,
        help="consecutive windows of a new class before a machine's state changes (retained "
        "…/machines/{m}/state and an …/event)",
        low=1,
        high=100_000,
    )
    state_min_confidence: float = setting(
        0.0,
        help="windows less confident than this neither start nor break a machine's state change",
        check=_state_confidence,
    )
    ha_discovery: bool = setting(
        False,
        help="publish Home Assistant MQTT discovery configs (retained): a device per machine "
        "with state, class, confidence and drift sensors",
    )
    ha_prefix: str = setting(
        DEFAULT_HA_PREFIX,
        help="Home Assistant's discovery prefix (its birth topic is <ha_prefix>/status)",
        check=check_ha_prefix,
    )
    sparkplug: str | None = setting(
        None,
        help="also publish as an Eclipse Sparkplug B edge node in this group (spBv1.0/GROUP/…; "
        "the node id is the edge node id, each machine a device)",
        metavar="GROUP",
        check=check_group,
    )
    sparkplug_silence_s: float = setting(
        DEFAULT_SILENCE_S,
        help="a machine without windows for this long gets a Sparkplug DDEATH (DBIRTH when back)",
        low=0.5,
        high=86400.0,
        flag="--sparkplug-silence",
    )
    metrics_port: int | None = metrics_port_setting()
    metrics_host: str = metrics_host_setting()

    def __post_init__(self) -> None:
        check(self)

    def debouncer(self, normal: str) -> Debouncer:
        """Each machine's debounced state (`normal`: the healthy class)."""
        return Debouncer(self.state_windows, self.state_min_confidence, normal=normal)

    def home_assistant(self, basics: NodeBasics, prefix: str, version: str) -> HaDiscovery | None:
        """With --ha-discovery: Home Assistant discovery configs (None without)."""
        if not self.ha_discovery:
            return None
        return HaDiscovery(basics.node, prefix, self.ha_prefix, version)

    def sparkplug_node(
        self,
        basics: NodeBasics,
        *,
        normal: str,
        version: str,
        model_version: Callable[[], int | None],
        faults: Faults,
        count_error: Callable[[str], tuple[bool, int]],
    ) -> SparkplugNode | None:
        """With --sparkplug GROUP: a Sparkplug B edge node on its own connection (None without)."""
        if not self.sparkplug:
            return None
        return SparkplugNode(
            group=self.sparkplug,
            node=basics.node,
            broker=basics.broker,
            state_dir=basics.state_dir,
            normal=normal,
            sw_version=version,
            model_version=model_version,
            faults=faults,
            count_error=count_error,
            credentials=basics.credentials,
            silence_s=self.sparkplug_silence_s,
        )
