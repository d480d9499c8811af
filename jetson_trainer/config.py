"""The trainer's settings, each declared once; flags, env vars and config keys derive from them.

`ServeConfig` is the daemon's, `PublishConfig` the `publish` command's; both share the broker
and prefix declarations. Precedence (see `protocol.settings`): defaults < `--config` TOML file
(top level or a `[trainer]` table) < `EDGELOOP_<FIELD>` env vars < flags.

>>> from protocol.settings import resolve
>>> c = resolve(ServeConfig, env={"EDGELOOP_MARGIN": "0.02"},
...             flags={"store": "/tmp/s", "private_key": "/tmp/k.pem", "labels_needed": "32"})
>>> (c.policy.labels_needed, c.retrain.gate.margin, str(c.models_dir))
(32, 0.02, '/tmp/s/models')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from protocol import check_id
from protocol.settings import (
    MqttSettings,
    broker_setting,
    check,
    metrics_host_setting,
    metrics_port_setting,
    prefix_setting,
    setting,
)

from .gate import GateConfig
from .policy import PolicyConfig

if TYPE_CHECKING:
    from .retrain import RetrainConfig

__all__ = ["SECTION", "PublishConfig", "ServeConfig"]

SECTION = "trainer"  # the TOML table a shared config file keeps the trainer's keys in


def _positive(value: float) -> None:
    if value <= 0:
        raise ValueError("must be greater than 0")


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
    margin: float = setting(
        0.01,
        help="accuracy the challenger may lose on the original holdout",
        low=0.0,
        high=0.99,
        metavar="FRACTION",
    )
    initial_epochs: int = setting(40, help="epochs of the initial model", low=1, metavar="N")
    dashboard: bool = setting(True, help="plain logs instead of the live terminal dashboard")
    tick_s: float = setting(1.0, help="seconds between policy checks", check=_positive, metavar="S")
    metrics_port: int | None = metrics_port_setting()
    metrics_host: str = metrics_host_setting()

    def __post_init__(self) -> None:
        check(self)

    @property
    def models_dir(self) -> Path:
        """Where model versions live: --models, else STORE/models."""
        return self.models or self.store / "models"

    @property
    def policy(self) -> PolicyConfig:
        """The fine-tune trigger's settings."""
        return PolicyConfig(self.labels_needed, self.check_labels, self.trigger_accuracy)

    @property
    def retrain(self) -> RetrainConfig:
        """One fine-tune attempt's settings, the gate's included."""
        from .retrain import RetrainConfig  # numpy-heavy; not needed to parse flags

        return RetrainConfig(
            epochs=self.finetune_epochs,
            replay_size=self.replay_size,
            gate=GateConfig(margin=self.margin),
        )


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
