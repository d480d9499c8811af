"""The intake's settings: which machines, how windows are taken in and batched, fleet sharing,
per-signal readings. A section of `pi_edge.config.EdgeConfig` (flags and variables as before)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from nodekit.settings import check, setting
from protocol import ConfigError, check_id

from .inbox import BatchPolicy, Inbox
from .machine_cap import DEFAULT_MAX_MACHINES
from .ownership import DEFAULT_FLEET_TIMEOUT_S, Change, Membership, Ownership
from .signal_types import SignalIntake, TypeSignals

T = TypeVar("T")

__all__ = ["IntakeConfig"]


def _ids(value: tuple[str, ...]) -> None:
    if not value:
        raise ValueError("is empty; use '+' for all machines")
    for m in value:
        if m != "+":
            check_id(m)


LABEL_SOURCES = ("auto", "all", "none")  # --window-labels words (else machine ids)


def _label_sources(value: tuple[str, ...]) -> None:
    if not value:
        raise ValueError("is empty; use 'none' to take no in-band label")
    words = [v for v in value if v in LABEL_SOURCES]
    if words and len(value) > 1:
        raise ValueError(f"{words[0]!r} stands alone; or list machine ids")
    for m in value:
        if m not in LABEL_SOURCES:
            check_id(m, "machine id")


@dataclass(frozen=True, slots=True)
class IntakeConfig:
    """What comes in and how it is batched for the worker; checked on construction."""

    machines: tuple[str, ...] = setting(
        ("+",), help="'+' (all) or a comma-separated list of machine ids", check=_ids
    )
    window_labels: tuple[str, ...] = setting(
        ("auto",),
        help="whose in-band window labels (ground truth a window carries) the node takes: "
        "'all', 'none', or a comma-separated list of the machine ids whose window topics only "
        "trusted senders may write; 'auto': all on a broker without a login, none when the node "
        "logs in (the secure profile). An untrusted label is dropped (the window is classified; "
        "counted as detail.labels.inband_untrusted); a maintenance label wins over any",
        metavar="SOURCES",
        check=_label_sources,
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
    fleet_members: tuple[str, ...] | None = setting(
        None,
        help="with --fleet: the node ids that may be members (comma-separated; default: any "
        "edge node whose own status names the group); a status of any other id never takes "
        "machines away, whatever it says",
        metavar="NODES",
        check=lambda v: [check_id(n, "fleet member") for n in v],
    )
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
        "per window, this much more latency; 0: classify each window at once); a node serving "
        "several machine types gathers this long per type with traffic, at most 1 s",
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
    max_machines: int = setting(
        DEFAULT_MAX_MACHINES,
        help="machines tracked at once; beyond, the least recently seen is forgotten (counted "
        "as machines_evicted in status)",
        low=1,
        high=1_000_000,
    )
    signals: tuple[Path, ...] = setting(
        (),
        help="also take per-signal readings: TOML files mapping MQTT topics, OPC UA node ids "
        "and Modbus registers to machines and channels (pi_edge/README.md, 'Signals', 'Plant "
        "sources'), comma-separated, one per machine type (each names its machine_type; one "
        "that does not is the node's first type's); windows are assembled from them",
        metavar="FILE[,FILE…]",
    )
    republish_windows: bool = setting(
        False,
        help="with --signals: publish each assembled window as a binary protocol window on "
        "…/machines/{m}/window (QoS 0; the node then does not subscribe to window topics)",
    )

    def __post_init__(self) -> None:
        if isinstance(self.signals, str | Path):  # one file, as before (code and tests)
            object.__setattr__(self, "signals", (Path(self.signals),))
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
        if self.signals and self.shared_group is not None:
            raise ConfigError(
                f"--signals with --shared-group {self.shared_group}: a shared subscription "
                "hands each reading to one node of the group, so no node sees a whole "
                "window; drop --shared-group (split machines with --machines instead)"
            )
        if not self.signals and self.republish_windows:
            raise ConfigError(
                "--republish-windows needs --signals FILE: only assembled windows are "
                "republished (windows that came as windows are on the broker already)"
            )

    def batch_policy(self) -> BatchPolicy:
        """The worker's micro-batching policy."""
        return BatchPolicy(
            self.batch_max,
            self.batch_wait_ms / 1000.0,
            self.batch_wait_above_per_s,
            self.batch_wait_low_ms / 1000.0,
            self.batch_wait_below_per_s,
        )

    def inbox(self) -> Inbox[Any]:
        """The bounded inbox between paho's thread and the worker."""
        return Inbox(self.queue_size, self.queue_full_wait_ms / 1000)

    def ownership(self, node: str, on_change: Callable[[Change], None]) -> Ownership | None:
        """With --fleet: this node's share of the machines (None without)."""
        if self.fleet is None:
            return None
        allowed = None if self.fleet_members is None else frozenset((*self.fleet_members, node))
        return Ownership(
            Membership(self.fleet, node, self.fleet_timeout_s, allowed),
            max_cached=4 * self.max_machines,
            on_change=on_change,
        )

    def signal_intake(
        self,
        plans: tuple[TypeSignals, ...],
        on_problem: Callable[[str, int], object],
    ) -> SignalIntake | None:
        """With --signals: windows from single readings, an assembler per machine type's file
        (None without)."""
        if not plans:
            return None
        return SignalIntake(plans, max_machines=self.max_machines, on_problem=on_problem)

    def label_trust(self, logged_in: bool) -> bool | frozenset[str]:
        """Whose in-band labels count: True (every machine's), False (none) or these machines'.

        >>> IntakeConfig().label_trust(logged_in=False), IntakeConfig().label_trust(True)
        (True, False)
        >>> IntakeConfig(window_labels=("m01", "m02")).label_trust(False) == {"m01", "m02"}
        True
        """
        value = self.window_labels
        if value == ("auto",):
            return not logged_in
        if value in (("all",), ("none",)):
            return value == ("all",)
        return frozenset(value)

    @property
    def allowed(self) -> frozenset[str] | None:
        """The machine ids this node takes (None: every one, '+')."""
        return None if "+" in self.machines else frozenset(self.machines)

    @property
    def all_machines(self) -> bool:
        """True for '+': every machine id is this node's (else only `machines`)."""
        return "+" in self.machines
