"""The trainer's settings, each declared once; flags, env vars and config keys derive from them.

`ServeConfig` is the daemon's, `PublishConfig` the `publish` command's; both share the broker
and prefix declarations. Precedence (see `nodekit.settings`): defaults < `--config` TOML file
(top level or a `[trainer]` table) < `EDGELOOP_<FIELD>` env vars < flags.

>>> from nodekit.settings import resolve
>>> c = resolve(ServeConfig, env={"EDGELOOP_MARGIN": "0.02"},
...             flags={"store": "/tmp/s", "private_key": "/tmp/k.pem", "labels_needed": "32"})
>>> (c.policy.labels_needed, c.retrain.gate.margin, str(c.models_dir))
(32, 0.02, '/tmp/s/models')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from nodekit.settings import (
    MqttSettings,
    broker_setting,
    check,
    metrics_host_setting,
    metrics_port_setting,
    prefix_setting,
    setting,
)
from protocol import ConfigError, check_id
from protocol.machine_type import DEFAULT_TYPE, MachineType, Site

from .daemon.finetune_policy import PolicyConfig
from .versions.gate import GateConfig

if TYPE_CHECKING:
    from .daemon.retrain import RetrainConfig
    from .historian.windowing import Grid

__all__ = ["SECTION", "ImportConfig", "PublishConfig", "ServeConfig"]

SECTION = "trainer"  # the TOML table a shared config file keeps the trainer's keys in


def _positive(value: float) -> None:
    if value <= 0:
        raise ValueError("must be greater than 0")


def _groups(value: tuple[str, ...]) -> None:
    for group in value:
        check_id(group, "canary group")
    if len(set(value)) != len(value):
        raise ValueError("names a group twice")


@dataclass(frozen=True, slots=True)
class ServeConfig(MqttSettings):
    """The daemon's settings (`python -m jetson_trainer serve -h` lists their flags)."""

    store: Path = setting(help="DIR for the window store", metavar="DIR")
    private_key: Path = setting(help="signing key (PEM)", metavar="PEM")
    broker: str = broker_setting()
    prefix: str = prefix_setting()
    data: Path | None = setting(
        None, help="original data DIR: initial training and replay", metavar="DIR"
    )
    models: Path | None = setting(
        None, help="model versions DIR (default STORE/models)", metavar="DIR"
    )
    client_id: str = setting(
        "edgeloop-trainer",
        help="fixed MQTT client id of the persistent session",
        check=lambda v: check_id(v, "client id"),
    )
    labels_needed: int = setting(
        48, help="labels per fine-tune", low=4, flag="--labels", metavar="N"
    )
    labels_per_class: int = setting(
        2,
        help="fine-tune as soon as every class has this many new labels (2: 8 labels), "
        "--labels at most (0: always wait for --labels)",
        low=0,
        metavar="N",
    )
    check_labels: int = setting(
        24, help="newest labels the champion is checked on", low=1, metavar="N"
    )
    trigger_accuracy: float = setting(
        0.9,
        help="fine-tune when the champion's accuracy on the newest labels falls below",
        low=0.0,
        high=1.0,
        check=_positive,
        metavar="FRACTION",
    )
    finetune_epochs: int = setting(30, help="fine-tune epochs", low=1, flag="--epochs", metavar="N")
    replay_size: int = setting(1000, help="replay windows per fine-tune", low=0, metavar="N")
    self_training: bool = setting(
        True,
        help="fine-tune on the labels alone, without the second pass on the unlabeled drift "
        "windows' confident pseudo-labels (daemon/selftrain.py)",
    )
    margin: float = setting(
        0.01,
        help="accuracy the challenger may lose on the original holdout",
        low=0.0,
        high=0.99,
        metavar="FRACTION",
    )
    f1_margin: float = setting(
        0.02,
        help="macro-F1 the challenger may lose on the original holdout (rare faults make it "
        "move more than accuracy)",
        low=0.0,
        high=0.99,
        metavar="FRACTION",
    )
    initial_epochs: int = setting(40, help="epochs of the initial model", low=1, metavar="N")
    dashboard: bool = setting(True, help="plain logs instead of the live terminal dashboard")
    tick_s: float = setting(1.0, help="seconds between policy checks", check=_positive, metavar="S")
    canary_groups: tuple[str, ...] = setting(
        (),
        help="staged rollout: offer each new version first to these rollout groups' retained "
        "topics ({prefix}/model/groups/G) and put it on model/current only once their nodes "
        "served it without a rollback (empty: publish straight to model/current)",
        metavar="G1[,G2]",
        check=_groups,
    )
    canary_watch_s: float = setting(
        120.0,
        help="with --canary-groups: promote a version this long after the first canary began "
        "serving it, if no canary rolled back (sooner when every canary's health watch passed)",
        low=1.0,
        high=7 * 86400.0,
        metavar="S",
    )
    metrics_port: int | None = metrics_port_setting()
    metrics_host: str = metrics_host_setting()
    site_file: Path | None = setting(
        None,
        help="the site's machine types (TOML; protocol/README.md 'Machine types'); with "
        "--machine-type this daemon keeps that type's lineage (default: the built-in type)",
        metavar="FILE",
    )
    machine_type: str | None = setting(
        None,
        help="the machine type whose models this daemon trains, gates and publishes on "
        "{prefix}/types/TYPE/model/current (one daemon per type; default: the built-in type)",
        metavar="TYPE",
    )

    def __post_init__(self) -> None:
        check(self)

    def machine(self) -> MachineType:
        """The machine type of this daemon's lineage (ConfigError if the site file lacks it)."""
        return _machine(self.site_file, self.machine_type)

    @property
    def models_dir(self) -> Path:
        """Where model versions live: --models, else STORE/models."""
        return self.models or self.store / "models"

    @property
    def policy(self) -> PolicyConfig:
        """The fine-tune trigger's settings."""
        return PolicyConfig(
            self.labels_needed, self.check_labels, self.trigger_accuracy, self.labels_per_class
        )

    @property
    def retrain(self) -> RetrainConfig:
        """One fine-tune attempt's settings, the gate's included."""
        from .daemon.retrain import RetrainConfig  # numpy-heavy; not needed to parse flags

        return RetrainConfig(
            epochs=self.finetune_epochs,
            replay_size=self.replay_size,
            gate=GateConfig(margin=self.margin, f1_margin=self.f1_margin),
            self_training=self.self_training,
        )


def _machine(site_file: Path | None, name: str | None) -> MachineType:
    """`name` of the site file (the built-in type without either)."""
    if site_file is None and name is None:
        return DEFAULT_TYPE
    site = Site.load(site_file)
    if name is None:
        if len(site.types) != 1:
            raise ConfigError(
                f"the site file {site_file} declares {len(site.types)} machine types "
                f"({', '.join(site.names)}): say which with --machine-type NAME"
            )
        return site.types[0]
    return site[name]


def _channel_map_ok(items: tuple[str, ...]) -> None:
    from .historian.layout import parse_channel_map  # numpy: only when the setting is checked

    parse_channel_map(items, None)  # the form; the channels once the machine type is known


@dataclass(frozen=True, slots=True)
class ImportConfig:
    """`import`: historian exports + a maintenance log → a data set `train` reads.

    Flags, or EDGELOOP_IMPORT_<NAME> env vars (own prefix: `--out` must not come from a
    variable meant for another command); no config file (a one-off command).
    """

    ENV_PREFIX: ClassVar[str] = "EDGELOOP_IMPORT_"

    out: Path = setting(help="DIR for the data set (train_/infer_data.npy …)", metavar="DIR")
    signals: tuple[Path, ...] = setting(
        (),
        help="historian export(s): CSV, long or wide, or Parquet (also as positional FILEs)",
        metavar="FILE[,FILE]",
    )
    maintenance: Path | None = setting(
        None, help="maintenance log CSV: machine, from, to, class (to empty: open)", metavar="FILE"
    )
    unlabeled_normal: bool = setting(
        False, help="label windows outside every maintenance interval normal (else unlabeled)"
    )
    sample_hz: float = setting(
        1.0, help="grid the samples are resampled to, Hz", low=0.001, high=10000.0, metavar="HZ"
    )
    max_gap_s: float = setting(
        5.0, help="longest hole forward-filled, s; a longer one is a gap", low=0.0, metavar="S"
    )
    stride: int | None = setting(
        None, help="samples from one window's start to the next (default: window length)", low=1
    )
    holdout: float = setting(
        0.2,
        help="last fraction in time of each machine's labeled windows, written to infer",
        low=0.0,
        high=0.9,
        metavar="FRACTION",
    )
    signal_format: str = setting(
        "auto",
        help="table layout: auto (from the header), long or wide",
        choices=("auto", "long", "wide"),
        flag="--format",
    )
    channel_map: tuple[str, ...] = setting(
        (),
        help="historian channel names onto the model's, e.g. TT101=temperature,VIB=vibration",
        metavar="OLD=NEW[,OLD=NEW]",
        check=_channel_map_ok,
    )
    report: Path | None = setting(
        None, help="also write the report here (.json: JSON, else Markdown)", metavar="FILE"
    )
    site_file: Path | None = setting(
        None,
        help="the site's machine types (TOML; protocol/README.md 'Machine types'); default: "
        "the built-in type",
        metavar="FILE",
    )
    machine_type: str | None = setting(
        None, help="the machine type of the data in --site-file", metavar="NAME"
    )
    window_length: int | None = setting(
        None, help="samples per window (default: the machine type's)", low=1, high=65536
    )

    def __post_init__(self) -> None:
        check(self)

    def machine(self) -> MachineType:
        """The machine type the data is imported as (ConfigError if the site file lacks it)."""
        return _machine(self.site_file, self.machine_type)

    @property
    def grid(self) -> Grid:
        """The resampling grid and window cut of the built-in type."""
        return self.grid_for(DEFAULT_TYPE)

    def grid_for(self, kind: MachineType) -> Grid:
        """The resampling grid and window cut these settings describe for `kind`."""
        from .historian.windowing import Grid

        length = self.window_length or kind.window_length
        return Grid(self.sample_hz, self.max_gap_s, window_length=length, stride=self.stride)


@dataclass(frozen=True, slots=True)
class PublishConfig(MqttSettings):
    """`publish`: send one bundle retained to `<prefix>/model/current`."""

    model: Path = setting(help="model.bundle to publish", metavar="BUNDLE")
    broker: str = broker_setting()
    prefix: str = prefix_setting()
    timeout: float = setting(
        10.0, help="seconds to wait for the broker", check=_positive, metavar="S"
    )

    def __post_init__(self) -> None:
        check(self)


def _label_time(value: str) -> None:
    import time

    from protocol.labels import parse_when

    parse_when(value, time.time())


@dataclass(frozen=True, slots=True)
class LabelConfig(MqttSettings):
    """`label`: send a maintenance label event to `<prefix>/labels` (protocol.labels)."""

    machine: str = setting(help="the machine the label is about", check=check_id, env="")
    label_class: str = setting(
        help="what was found: one of the model's classes", flag="--class", env="", file=False
    )
    start: str = setting(
        "now",
        help="when it began: 'now', 'now-15m' (s/m/h/d ago), epoch seconds or RFC 3339 with a zone",
        flag="--from",
        env="",
        file=False,
        check=_label_time,
    )
    end: str | None = setting(
        None,
        help="when it ended (same forms); omit for 'until further notice'",
        flag="--to",
        env="",
        file=False,
        check=_label_time,
    )
    label_id: str | None = setting(
        None,
        help="the label's id (re-use it to close or correct a label; default machine@from)",
        flag="--id",
        env="",
        file=False,
    )
    cancel: bool = setting(
        False, help="withdraw the label --id for windows still to come", env="", file=False
    )
    source: str | None = setting(
        None, help="who labeled (a name, a work order)", env="EDGELOOP_LABEL_SOURCE"
    )
    broker: str = broker_setting()
    prefix: str = prefix_setting()
    timeout: float = setting(
        10.0, help="seconds to wait for the broker", check=_positive, metavar="S"
    )

    def __post_init__(self) -> None:
        check(self)
