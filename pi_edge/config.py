"""EdgeConfig: every setting of `pi_edge run`, with defaults, from a TOML file, env vars and flags.

Precedence (last wins): defaults < `--config FILE` (TOML, unknown keys refused) < environment
(`EDGELOOP_*`, see ENV) < command-line flags.

>>> cfg = EdgeConfig.from_dict({"broker": "pi-hub:1884", "batch_max": 16})
>>> cfg.broker, cfg.batch_max, cfg.node.startswith("edge-")
('pi-hub:1884', 16, True)
>>> EdgeConfig.from_dict({"brokr": "x"})
Traceback (most recent call last):
...
pi_edge.errors.ConfigError: unknown setting(s) ['brokr']; known: ...
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from protocol import (
    CHANNELS,
    CLASSES,
    DEFAULT_PREFIX,
    WINDOW_LENGTH,
    PayloadError,
    Topics,
    check_id,
)
from protocol.mqtt import parse_address

from .errors import ConfigError


def default_node() -> str:
    """'edge-<hostname>' with characters outside the id alphabet replaced by '-'."""
    host = re.sub(r"[^A-Za-z0-9_.\-]", "-", socket.gethostname())[:58] or "pi"
    return f"edge-{host}"


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "edgeloop" / "pi_edge"


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    """Settings of one pi_edge node; checked on construction."""

    broker: str = "127.0.0.1:1883"
    prefix: str = DEFAULT_PREFIX
    node: str = field(default_factory=default_node)
    machines: tuple[str, ...] = ("+",)
    shared_group: str | None = None
    public_key: Path | None = None
    insecure_dev: bool = False
    model: Path | None = None
    state_dir: Path = field(default_factory=default_state_dir)
    threads: int = 1
    batch_max: int = 32
    batch_wait_ms: float = 1.0
    batch_wait_above_per_s: float = 2000.0
    queue_size: int = 2048
    status_interval_s: float = 2.0
    log_interval_s: float = 10.0
    dashboard: bool = True
    low_confidence: float = 0.6
    buffer_max_rows: int = 50_000
    keep_flagged_per_s: float = 1.0
    classes: tuple[str, ...] = CLASSES
    channels: tuple[str, ...] = CHANNELS
    window_length: int = WINDOW_LENGTH

    def __post_init__(self) -> None:
        try:
            parse_address(self.broker)
        except ValueError as exc:
            raise ConfigError(f"broker: {exc}") from exc
        try:
            Topics(self.prefix)
            check_id(self.node, "node id")
            if self.shared_group is not None:
                check_id(self.shared_group, "shared group")
            for m in self.machines:
                if m != "+":
                    check_id(m)
        except (ValueError, PayloadError) as exc:
            raise ConfigError(str(exc)) from exc
        if not self.machines:
            raise ConfigError("machines is empty; use '+' for all machines")
        for name, lo, hi in (
            ("threads", 1, 64),
            ("batch_max", 1, 4096),
            ("queue_size", 1, 1_000_000),
            ("window_length", 1, 4096),
            ("buffer_max_rows", 1, 10_000_000),
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ConfigError(f"{name} {v!r} must be an integer in {lo}..{hi}")
        for name, flo, fhi in (
            ("batch_wait_ms", 0.0, 1000.0),
            ("batch_wait_above_per_s", 0.0, 1e7),
            ("status_interval_s", 0.05, 3600.0),
            ("log_interval_s", 0.0, 86400.0),
            ("low_confidence", 0.0, 1.0),
            ("keep_flagged_per_s", 0.0, 1000.0),
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not flo <= v <= fhi:
                raise ConfigError(f"{name} {v!r} must be a number in {flo}..{fhi}")
        if self.queue_size < self.batch_max:
            raise ConfigError(f"queue_size {self.queue_size} must be ≥ batch_max {self.batch_max}")

    @property
    def topics(self) -> Topics:
        return Topics(self.prefix)

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any], base: EdgeConfig | None = None) -> EdgeConfig:
        """`base` (or defaults) with the keys in `obj` replaced; unknown keys are an error."""
        unknown = sorted(set(obj) - set(cls.keys()))
        if unknown:
            raise ConfigError(f"unknown setting(s) {unknown}; known: {', '.join(cls.keys())}")
        values = {k: _coerce(k, v) for k, v in obj.items()}
        try:
            if base is None:
                return cls(**values)
            return dataclasses.replace(base, **values)
        except TypeError as exc:
            raise ConfigError(f"bad setting: {exc}") from exc

    @classmethod
    def from_toml(cls, path: Path, base: EdgeConfig | None = None) -> EdgeConfig:
        """Settings from a TOML file (top level or an `[edge]` table)."""
        try:
            obj = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        if set(obj) == {"edge"} and isinstance(obj["edge"], dict):
            obj = obj["edge"]
        return cls.from_dict(obj, base)

    @classmethod
    def from_env(cls, env: Mapping[str, str], base: EdgeConfig | None = None) -> EdgeConfig:
        """Settings from EDGELOOP_* variables (see ENV).

        >>> EdgeConfig.from_env({"EDGELOOP_BROKER": "b:1", "EDGELOOP_BATCH_MAX": "8"}).batch_max
        8
        """
        obj: dict[str, Any] = {}
        for var, key in ENV.items():
            if var in env and env[var] != "":
                obj[key] = env[var]
        return cls.from_dict(obj, base)


ENV: dict[str, str] = {
    f"EDGELOOP_{k.upper()}": k
    for k in (
        "broker",
        "prefix",
        "node",
        "machines",
        "shared_group",
        "public_key",
        "insecure_dev",
        "model",
        "state_dir",
        "threads",
        "batch_max",
        "batch_wait_ms",
        "batch_wait_above_per_s",
        "queue_size",
        "status_interval_s",
        "dashboard",
    )
}


_PATHS = {"public_key", "model", "state_dir"}
_INTS = {"threads", "batch_max", "queue_size", "window_length", "buffer_max_rows"}
_FLOATS = {
    "batch_wait_ms",
    "batch_wait_above_per_s",
    "status_interval_s",
    "log_interval_s",
    "low_confidence",
    "keep_flagged_per_s",
}
_BOOLS = {"insecure_dev", "dashboard"}
_TUPLES = {"machines", "classes", "channels"}


def _coerce(key: str, value: Any) -> Any:
    """Turn a string (env) or TOML value into the field's type; ConfigError if impossible."""
    try:
        if value is None:
            return None
        if key in _PATHS:
            return Path(str(value)).expanduser()
        if key in _INTS:
            return int(value) if isinstance(value, str) else value
        if key in _FLOATS:
            return float(value) if isinstance(value, str) else value
        if key in _BOOLS:
            if isinstance(value, str):
                low = value.strip().lower()
                if low not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
                    raise ValueError(f"{value!r} is not a boolean")
                return low in {"1", "true", "yes", "on"}
            return value
        if key in _TUPLES:
            if isinstance(value, str):
                return tuple(p.strip() for p in value.split(",") if p.strip())
            return tuple(value)
        return value
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {key}={value!r}: {exc}") from exc
