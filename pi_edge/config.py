"""EdgeConfig: every setting of `pi_edge run`, declared once (flags, env vars and file keys
are derived from these fields by `nodekit.settings`).

Precedence (last wins): defaults < `--config FILE` (TOML, top level or an `[edge]` table,
unknown keys refused) < environment (`EDGELOOP_<NAME>`) < command-line flags.

>>> from nodekit.settings import resolve
>>> cfg = resolve(EdgeConfig, env={"EDGELOOP_BROKER": "pi-hub:1884"}, flags={"batch_max": "16"})
>>> cfg.broker, cfg.batch_max, cfg.node.startswith("edge-")
('pi-hub:1884', 16, True)
>>> resolve(EdgeConfig, flags={"low_confidence": "1"})
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

from nodekit.settings import (
    MqttSettings,
    broker_setting,
    check,
    metrics_host_setting,
    metrics_port_setting,
    prefix_setting,
    setting,
)
from protocol import (
    CHANNELS,
    CLASSES,
    WINDOW_LENGTH,
    ConfigError,
    Topics,
    check_id,
)
from protocol.signals import SignalMap
from protocol.sparkplug import check_group

from .intake.machine_cap import DEFAULT_MAX_MACHINES
from .intake.ownership import DEFAULT_FLEET_TIMEOUT_S
from .loop.drift import DriftConfig
from .report.debounce import DEFAULT_STATE_WINDOWS, Debouncer
from .report.home_assistant import DEFAULT_HA_PREFIX, check_ha_prefix
from .report.sparkplug import DEFAULT_SILENCE_S

SECTION = "edge"  # the TOML table a shared config file keeps pi_edge's settings in


def default_node() -> str:
    """'edge-<hostname>' with characters outside the id alphabet replaced by '-'."""
    host = re.sub(r"[^A-Za-z0-9_.\-]", "-", socket.gethostname())[:58] or "pi"
    return f"edge-{host}"


def default_state_dir() -> Path:
    """$XDG_STATE_HOME/edgeloop/pi_edge (~/.local/state/edgeloop/pi_edge)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "edgeloop" / "pi_edge"


def _ids(value: tuple[str, ...]) -> None:
    if not value:
        raise ValueError("is empty; use '+' for all machines")
    for m in value:
        if m != "+":
            check_id(m)


def _floor(value: float) -> None:
    DriftConfig(confidence_floor=value)  # the detector's own rule, not a copy of it


def _state_confidence(value: float) -> None:
    Debouncer(min_confidence=value)  # the debouncer's own rule


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
    machines: tuple[str, ...] = setting(
        ("+",), help="'+' (all) or a comma-separated list of machine ids", check=_ids
    )
    shared_group: str | None = setting(
        None,
        help="MQTT 5 shared subscription group (round-robin on Mosquitto: one machine's "
        "windows alternate between nodes, splitting its drift state; prefer --fleet)",
        check=lambda v: check_id(v, "shared group"),
    )
    fleet: str | None = setting(
        None,
        help="fleet group: the live nodes of GROUP split the machines among themselves by "
        "rendezvous hashing over their statuses; each classifies only its own (README 'Fleet')",
        metavar="GROUP",
        check=lambda v: check_id(v, "fleet group"),
    )
    fleet_timeout_s: float = setting(
        DEFAULT_FLEET_TIMEOUT_S,
        help="with --fleet: a member silent for this long is gone and its machines move (its "
        "status comes every min(--status-interval, this/3) s)",
        low=0.5,
        high=3600.0,
        flag="--fleet-timeout",
    )
    rollout_group: str | None = setting(
        None,
        help="staged rollout: this node is in rollout group NAME (e.g. canary) and also takes "
        "models from {prefix}/model/groups/NAME, where the trainer offers a new version first; "
        "it serves the highest version offered there or on model/current (README 'Staged "
        "rollout')",
        metavar="NAME",
        check=lambda v: check_id(v, "rollout group"),
    )
    public_key: Path | None = setting(
        None, help="trainer's Ed25519 public key (PEM/hex/raw) that bundles must verify with"
    )
    insecure_dev: bool = setting(
        False,
        help="no public key: accept unsigned, unverified bundles (development only; flag only, "
        "never from a config file or the environment; refused together with --public-key)",
        env="",
        file=False,
    )
    model: Path | None = setting(None, help="bundle to start from if the state dir has none")
    state_dir: Path = setting(
        factory=default_state_dir, help="where models, kept windows and history live"
    )
    threads: int = setting(1, help="interpreter threads", low=1, high=64)
    batch_max: int = setting(32, help="windows per invoke", low=1, high=4096)
    batch_wait_ms: float = setting(
        1.0,
        help="under load, wait up to this for a batch to fill (0: take what is queued)",
        low=0.0,
        high=1000.0,
    )
    batch_wait_above_per_s: float = setting(
        2000.0,
        help="windows/s above which the worker waits for batches to fill (0: always)",
        low=0.0,
        high=1e7,
        flag="--batch-wait-above",
    )
    batch_wait_low_ms: float = setting(
        100.0,
        help="below --batch-wait-below windows/s, gather windows this long per invoke (less CPU "
        "per window, this much more latency; 0: classify each window at once)",
        low=0.0,
        high=1000.0,
    )
    batch_wait_below_per_s: float = setting(
        400.0,
        help="windows/s below which the worker gathers for --batch-wait-low-ms",
        low=0.0,
        high=1e7,
        flag="--batch-wait-below",
    )
    queue_size: int = setting(
        2048, help="inbox capacity; when full the oldest window is dropped", low=1, high=1_000_000
    )
    queue_full_wait_ms: float = setting(
        50.0,
        help="when the inbox is full, paho's thread waits up to this long for the worker to "
        "take a batch before dropping the oldest window: backpressure to the broker instead of "
        "receiving windows only to drop them (0: drop at once)",
        low=0.0,
        high=1000.0,
        metavar="MS",
    )
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
    low_confidence: float = setting(
        0.6, help="confidence below which a window is flagged and kept", check=_floor
    )
    watch_s: float = setting(
        120.0,
        help="after a swap to a newer model, watch its health (labeled accuracy, confidence, "
        "out-of-distribution rate against the previous model's) this long and roll back by "
        "itself if it is clearly worse (0: no watch)",
        low=0.0,
        high=7 * 86400.0,
    )
    buffer_max_rows: int = setting(
        50_000, help="kept windows on disk before the oldest unlabeled go", low=1, high=10_000_000
    )
    keep_flagged_per_s: float = setting(
        1.0,
        help="flagged (unlabeled) windows kept per machine per second; labeled: all",
        low=0.0,
        high=1000.0,
    )
    max_machines: int = setting(
        DEFAULT_MAX_MACHINES,
        help="machines tracked at once; beyond, the least recently seen is forgotten (counted "
        "as machines_evicted in status)",
        low=1,
        high=1_000_000,
    )
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
    label_hold_windows: int = setting(
        1024,
        help="recent windows held (in memory, ~1.5 KB each) so that a late maintenance label on "
        "{prefix}/labels can still reach them (0: labels reach new windows only)",
        low=0,
        high=1_000_000,
    )
    label_hold_s: float = setting(
        3600.0,
        help="the oldest held window a late label can still reach, in seconds",
        low=0.0,
        high=30 * 86400.0,
    )
    label_requests_per_min: int = setting(
        8,
        help="at most this many held windows per minute asked to be labeled on "
        "{prefix}/labels/requests (the least sure, spread over classes and machines), only while "
        "drift is suspect/drift or the accuracy estimate is below --label-requests-below "
        "(0: never ask)",
        low=0,
        high=10_000,
    )
    label_requests_per_machine: int = setting(
        2, help="windows of one machine in one label request", low=1, high=64
    )
    label_requests_below: float = setting(
        0.9,
        help="ask for labels while the label-free accuracy estimate is below this (0: only "
        "on drift)",
        low=0.0,
        high=1.0,
    )
    estimate_windows: int = setting(
        512,
        help="recent windows the label-free accuracy estimate (detail.estimate) is taken over",
        low=1,
        high=1_000_000,
    )
    signals: Path | None = setting(
        None,
        help="also take per-signal readings: a TOML file mapping MQTT topics to machines and "
        "channels (pi_edge/README.md, 'Signals'); windows are assembled from them",
        metavar="FILE",
    )
    republish_windows: bool = setting(
        False,
        help="with --signals: publish each assembled window as a binary protocol window on "
        "…/machines/{m}/window (QoS 0; the node then does not subscribe to window topics)",
    )
    classes: tuple[str, ...] = setting(CLASSES, help="class names a model must have", cli=False)
    channels: tuple[str, ...] = setting(CHANNELS, help="channel names a model must have", cli=False)
    window_length: int = setting(
        WINDOW_LENGTH, help="samples per window a model must take", low=1, high=4096, cli=False
    )
    metrics_port: int | None = metrics_port_setting()
    metrics_host: str = metrics_host_setting()

    def __post_init__(self) -> None:
        check(self)
        if self.fleet is not None and self.shared_group is not None:
            raise ConfigError(
                f"--fleet {self.fleet} with --shared-group {self.shared_group}: a fleet node "
                "hears every window and keeps its own machines, a shared subscription would "
                "hand it only some of them; drop --shared-group"
            )
        if self.queue_size < self.batch_max:
            raise ConfigError(
                f"queue_size {self.queue_size} must be ≥ batch_max {self.batch_max}; "
                "raise --queue-size or lower --batch-max"
            )
        if self.insecure_dev and self.public_key is not None:
            raise ConfigError(
                f"--insecure-dev together with a public key ({self.public_key}): a node with a "
                "key verifies every bundle and never accepts an unsigned one; drop "
                "--insecure-dev (or, for development, the key)"
            )
        if self.signals is not None:
            self.signal_map()  # a wrong signals file fails at start (ConfigError), not later
            if self.shared_group is not None:
                raise ConfigError(
                    f"--signals with --shared-group {self.shared_group}: a shared subscription "
                    "hands each reading to one node of the group, so no node sees a whole "
                    "window; drop --shared-group (split machines with --machines instead)"
                )
        elif self.republish_windows:
            raise ConfigError(
                "--republish-windows needs --signals FILE: only assembled windows are "
                "republished (windows that came as windows are on the broker already)"
            )

    def signal_map(self) -> SignalMap | None:
        """The checked signals file (None without --signals); ConfigError if it is wrong."""
        if self.signals is None:
            return None
        return SignalMap.from_toml(self.signals, self.channels)

    @property
    def topics(self) -> Topics:
        return Topics(self.prefix)
