"""The model's settings: trust (public key), the startup bundle, the runtime, the health watch,
staged rollout, the machine types the node serves (`--site`, `--types`) and the vocabulary a
model must have. A section of `pi_edge.config.EdgeConfig`.

>>> ModelConfig().served()[0].name, ModelConfig(types=("default", "press")).served()[1].declared
('default', None)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nodekit.guard import Faults
from nodekit.settings import check, setting
from protocol import CHANNELS, CLASSES, WINDOW_LENGTH, ConfigError, Manifest, check_id
from protocol.machine_type import DEFAULT_TYPE, DEFAULT_TYPE_NAME, Channel, MachineType, Site

from ..intake.inbox import BatchPolicy
from .lifecycle import ModelManager
from .vetting import Expected

if TYPE_CHECKING:
    from ..config import NodeBasics

__all__ = ["ModelConfig", "ServedType"]


def _type_names(value: tuple[str, ...]) -> None:
    for name in value:
        check_id(name, "machine type")
    if len(set(value)) != len(value):
        raise ValueError(f"names a machine type twice: {list(value)}")


@dataclass(frozen=True, slots=True)
class ServedType:
    """A machine type this node serves: its name, what the site file declares of it (None: the
    node learns it from the type's first verified model) and what a model of it must have."""

    name: str
    declared: MachineType | None
    expected: Expected


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Which models this node takes and how it runs and watches them; checked on construction."""

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
    site: Path | None = setting(
        None,
        help="site file (TOML, protocol/README.md 'Machine types'): the machine types of the "
        "site, their channels, window shape and machines; this node serves them all unless "
        "--types names some, routes each machine to its type and checks each type's models "
        "against it",
        metavar="FILE",
    )
    types: tuple[str, ...] = setting(
        (),
        help="machine types this node serves, comma-separated (default: every type of --site, "
        "else 'default', the built-in one); each has its own model topic, model and state dir; "
        "a type the site file does not declare is learned from its first verified model",
        check=_type_names,
    )
    classes: tuple[str, ...] = setting(CLASSES, help="class names a model must have", cli=False)
    channels: tuple[str, ...] = setting(CHANNELS, help="channel names a model must have", cli=False)
    window_length: int = setting(
        WINDOW_LENGTH, help="samples per window a model must take", low=1, high=4096, cli=False
    )

    def __post_init__(self) -> None:
        check(self)
        self.served()  # a wrong site file or type list fails at start (ConfigError), not later
        if self.insecure_dev and self.public_key is not None:
            raise ConfigError(
                f"--insecure-dev together with a public key ({self.public_key}): a node with a "
                "key verifies every bundle and never accepts an unsigned one; drop "
                "--insecure-dev (or, for development, the key)"
            )

    def site_types(self) -> Site | None:
        """The checked site file (None without --site); ConfigError if it is wrong."""
        return None if self.site is None else Site.from_toml(self.site)

    def served(self) -> tuple[ServedType, ...]:
        """The machine types this node serves, in order (the first is the node's primary: its
        status's model version, rollbacks and health watch, and a node command's rollback).

        The built-in type keeps this config's vocabulary (classes, channels, window length, as
        before machine types); another type declared in the site file must have the channels
        and window length declared there, and takes its classes from its verified model.
        """
        site = self.site_types()
        names = self.types or (site.names if site is not None else (DEFAULT_TYPE_NAME,))
        out = []
        for name in names:
            declared: MachineType | None = None
            if site is not None:
                if name not in site:
                    raise ConfigError(
                        f"--types names {name!r}, which the site file {self.site} does not "
                        f"declare; it declares: {', '.join(site.names)}"
                    )
                declared = site[name]
            if name == DEFAULT_TYPE_NAME:
                kind = self.machine_type
                if declared is not None:
                    kind = MachineType(
                        kind.name,
                        kind.channels,
                        window_length=kind.window_length,
                        classes=kind.classes,
                        machines=declared.machines,
                    )
                out.append(ServedType(name, kind, self.expected))
                continue
            expected = Expected(
                None,
                None if declared is None else declared.channel_names,
                None if declared is None else declared.window_length,
                name,
            )
            out.append(ServedType(name, declared, expected))
        return tuple(out)

    def manager(
        self,
        basics: NodeBasics,
        *,
        public_key: bytes | None,
        site: str,
        policy: BatchPolicy,
        disk_poll_s: float,
        on_pending: Callable[[], None],
        on_refused: Callable[[str], object],
        on_install: Callable[[Manifest], None],
        faults: Faults,
        served: ServedType | None = None,
    ) -> ModelManager:
        """The model's life on this node for one machine type (`served`, default: the built-in
        one): vet, store, hand over, watch, roll back. The built-in type's state dir is
        STATE_DIR/models, as before machine types; another type's STATE_DIR/types/TYPE/models."""
        name = DEFAULT_TYPE_NAME if served is None else served.name
        return ModelManager(
            basics.state_dir if name == DEFAULT_TYPE_NAME else basics.state_dir / "types" / name,
            public_key=public_key,
            allow_unsigned=self.insecure_dev,
            site=site,
            expected=self.expected if served is None else served.expected,
            threads=self.threads,
            policy=policy,
            on_pending=on_pending,
            on_refused=on_refused,
            on_install=on_install,
            disk_poll_s=disk_poll_s,
            faults=faults,
            watch_s=self.watch_s,  # health watch after a swap: automatic rollback
            name="edge-models" if name == DEFAULT_TYPE_NAME else f"edge-models-{name}",
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
        """What the running config can feed a model of the built-in type."""
        return Expected(self.classes, self.channels, self.window_length)
