"""The model's settings: trust (public key), the startup bundle, the runtime, the health watch,
staged rollout, and the vocabulary a model must have. A section of `pi_edge.config.EdgeConfig`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nodekit.guard import Faults
from nodekit.settings import check, setting
from protocol import CHANNELS, CLASSES, WINDOW_LENGTH, ConfigError, Manifest, check_id
from protocol.machine_type import DEFAULT_TYPE, Channel, MachineType

from ..intake.inbox import BatchPolicy
from .lifecycle import ModelManager
from .vetting import Expected

if TYPE_CHECKING:
    from ..config import NodeBasics

__all__ = ["ModelConfig"]


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Which models this node takes and how it runs and watches them; checked on construction."""

    public_key: Path | None = setting(
        None,
        help="trainer's Ed25519 public key (PEM/hex/raw) that bundles must verify with, or a "
        "trust file of up to 4 PEM public keys; the trainer's key records (retained on "
        "{prefix}/keys/log) change the trust set, kept in the state dir's models/trust.json",
    )
    insecure_dev: bool = setting(
        False,
        help="no public key: accept unsigned, unverified bundles (development only; flag only, "
        "never from a config file or the environment; refused together with --public-key)",
        env="",
        file=False,
    )
    model: Path | None = setting(None, help="bundle to start from if the state dir has none")
    threads: int = setting(1, help="interpreter threads", low=1, high=64)
    watch_s: float = setting(
        120.0,
        help="after a swap to a newer model, watch its health (labeled accuracy, confidence, "
        "out-of-distribution rate against the previous model's) this long and roll back by "
        "itself if it is clearly worse (0: no watch)",
        low=0.0,
        high=7 * 86400.0,
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
    classes: tuple[str, ...] = setting(CLASSES, help="class names a model must have", cli=False)
    channels: tuple[str, ...] = setting(CHANNELS, help="channel names a model must have", cli=False)
    window_length: int = setting(
        WINDOW_LENGTH, help="samples per window a model must take", low=1, high=4096, cli=False
    )

    def __post_init__(self) -> None:
        check(self)
        if self.insecure_dev and self.public_key is not None:
            raise ConfigError(
                f"--insecure-dev together with a public key ({self.public_key}): a node with a "
                "key verifies every bundle and never accepts an unsigned one; drop "
                "--insecure-dev (or, for development, the key)"
            )

    def manager(
        self,
        basics: NodeBasics,
        *,
        public_key: bytes | tuple[bytes, ...] | None,
        site: str,
        policy: BatchPolicy,
        disk_poll_s: float,
        on_pending: Callable[[], None],
        on_refused: Callable[[str], object],
        on_install: Callable[[Manifest], None],
        faults: Faults,
    ) -> ModelManager:
        """The model's life on this node: vet, store, hand over, watch, roll back."""
        return ModelManager(
            basics.state_dir,
            public_key=public_key,
            allow_unsigned=self.insecure_dev,
            site=site,
            expected=self.expected,
            threads=self.threads,
            policy=policy,
            on_pending=on_pending,
            on_refused=on_refused,
            on_install=on_install,
            disk_poll_s=disk_poll_s,
            faults=faults,
            watch_s=self.watch_s,  # health watch after a swap: automatic rollback
        )

    @property
    def machine_type(self) -> MachineType:
        """The vocabulary this node's config declares (the built-in type unless it says other
        classes, channels or window length); window labels are resolved against it."""
        expected = (self.classes, self.channels, self.window_length)
        if expected == (
            DEFAULT_TYPE.classes,
            DEFAULT_TYPE.channel_names,
            DEFAULT_TYPE.window_length,
        ):
            return DEFAULT_TYPE
        return MachineType(
            DEFAULT_TYPE.name,
            tuple(Channel(c) for c in self.channels),
            window_length=self.window_length,
            classes=self.classes,
            machines=DEFAULT_TYPE.machines,
        )

    @property
    def expected(self) -> Expected:
        """What the running config can feed a model."""
        return Expected(self.classes, self.channels, self.window_length)
