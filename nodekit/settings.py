"""Settings declared once: a frozen dataclass whose fields carry their help, range and flag.

Every tool's configuration is one `@dataclass(frozen=True)` whose fields are made with
`setting(...)`. From those fields alone this module derives the command-line flags, the
environment variables (`EDGELOOP_<NAME>`), the config-file keys (TOML, unknown keys refused),
the type coercion and the range checks, so a setting is written exactly once. Precedence, last
wins: defaults < config file < environment < flags.

A role's settings are a tree: a field made with `section(Cls, help=...)` holds a section, a
settings class of its own declared beside its concern (pi_edge's intake, model, loop and
report sections). A section's settings are flags, variables and file keys of the role as if
they were its own (flat names, unique across the tree; a config file may also group them in a
table named after the section), and the role's code hands each part its section whole.

Why not pydantic-settings or ConfigArgParse: the Pi image carries numpy, LiteRT and paho only,
and the whole job is ~250 lines of stdlib on top of dataclasses and argparse.

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True, slots=True)
... class Demo:
...     broker: str = setting("127.0.0.1:1883", help="HOST:PORT of the broker")
...     rate: float = setting(10.0, help="windows/s", low=0.0, high=1000.0)
...     dashboard: bool = setting(True, help="live view")
...     def __post_init__(self) -> None:
...         check(self)
>>> resolve(Demo, env={"EDGELOOP_RATE": "2.5"}, flags={"dashboard": False})
Demo(broker='127.0.0.1:1883', rate=2.5, dashboard=False)
>>> resolve(Demo, env={"EDGELOOP_RATE": "2000"})
Traceback (most recent call last):
...
protocol.errors.ConfigError: rate 2000.0 must be a number in 0.0..1000.0 (windows/s); set ...
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protocol.errors import ConfigError, EdgeloopError
from protocol.topics import DEFAULT_PREFIX, Topics

if TYPE_CHECKING:
    from .mqtt import Credentials

__all__ = [
    "ENV_PREFIX",
    "MqttSettings",
    "add_arguments",
    "broker_setting",
    "build",
    "check",
    "env_credentials",
    "env_names",
    "flag_of",
    "flags_of",
    "from_mapping",
    "metrics_host_setting",
    "metrics_port_setting",
    "prefix_setting",
    "read_toml",
    "resolve",
    "section",
    "setting",
    "settings_of",
]

ENV_PREFIX = "EDGELOOP_"
ROLE_SECTIONS = frozenset({"edge", "sim", "trainer", "console"})  # tables of a shared file
_META = "edgeloop"
_SECTION = "edgeloop_section"
_MISSING: Any = dataclasses.MISSING
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclasses.dataclass(frozen=True, slots=True)
class _Meta:
    help: str
    low: float | None
    high: float | None
    choices: tuple[Any, ...] | None
    flag: str | None
    env: str | None
    cli: bool
    metavar: str | None
    check: Callable[[Any], Any] | None
    file: bool = True


def setting(
    default: Any = _MISSING,
    *,
    help: str,
    low: float | None = None,
    high: float | None = None,
    choices: tuple[Any, ...] | None = None,
    flag: str | None = None,
    env: str | None = None,
    cli: bool = True,
    metavar: str | None = None,
    check: Callable[[Any], Any] | None = None,
    factory: Callable[[], Any] | None = None,
    file: bool = True,
) -> Any:
    """A dataclass field with what the flag, env var, file key and range check need.

    `low`/`high`: inclusive range of a number (or of each item of a tuple); `choices`: allowed
    values; `flag`: the long option (default `--field-name`, `--no-field-name` for a bool that
    defaults to true); `env`: the variable (default EDGELOOP_FIELD_NAME, "" for none); `cli`:
    False for file/env-only settings; `check`: a callable that raises ValueError on a bad value;
    `file`: False for a setting a config file may not set (`resolve` refuses it there). With
    `env=""` and `file=False` the setting is flag-only, and `resolve` also refuses the variable
    EDGELOOP_<NAME> it would have had: something that weakens security (pi_edge's
    --insecure-dev) must be typed on the command line, not inherited from a file or an
    environment.
    """
    meta = {_META: _Meta(help, low, high, choices, flag, env, cli, metavar, check, file)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def section(cls: type, *, help: str) -> Any:
    """A field that holds one settings section: an instance of `cls` (a frozen settings
    dataclass whose every field has a default), built from the same flat flags, variables and
    file keys as the role's own settings. `help` titles the section in --help.
    """
    return dataclasses.field(default_factory=cls, metadata={_SECTION: (cls, help)})


def _broker_ok(value: str) -> None:
    from .mqtt import parse_address  # stdlib only; paho is imported when a client is made

    parse_address(value)


def broker_setting() -> Any:
    """The broker every role connects to (EDGELOOP_BROKER), declared here once for all."""
    return setting(
        "127.0.0.1:1883",
        help="HOST:PORT of the MQTT broker",
        metavar="HOST:PORT",
        check=_broker_ok,
        env=ENV_PREFIX + "BROKER",
    )


def prefix_setting() -> Any:
    """The topic prefix every role uses (EDGELOOP_PREFIX), declared here once for all."""
    return setting(
        DEFAULT_PREFIX,
        help="topic prefix",
        metavar="PREFIX",
        check=Topics,
        env=ENV_PREFIX + "PREFIX",
    )


def metrics_port_setting() -> Any:
    """The Prometheus `/metrics` port of a role (off by default), declared here once for all."""
    return setting(
        None,
        help="serve Prometheus metrics on this port at /metrics (0: any free port, logged; "
        "default: off)",
        low=0,
        high=65535,
        metavar="PORT",
    )


def metrics_host_setting() -> Any:
    """The address the metrics port listens on: loopback unless a plant opens it on purpose."""
    return setting(
        "127.0.0.1",
        help="address the metrics port listens on (0.0.0.0: every interface)",
        metavar="ADDR",
    )


def _readable_file(path: Path) -> None:
    if not path.is_file() or not os.access(path, os.R_OK):
        raise ValueError("is not a readable file")


def _secret(**kwargs: Any) -> Any:
    """A `setting` that never shows in a repr (the password)."""
    f = setting(**kwargs)
    f.repr = False
    return f


_PASSWORD_MAX = 65535  # MQTT's limit on a password


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MqttSettings:
    """How a role logs in to the broker: user, password and TLS, declared once for all roles.

    A role's settings class inherits these fields (keyword-only, so they never clash with its
    own), and `credentials()` turns them into the one `nodekit.mqtt.Credentials` that
    `nodekit.mqtt.connect` applies. Their environment names are shared by every role
    (EDGELOOP_MQTT_*), so a systemd EnvironmentFile per role carries them. The password comes
    from a file (`--mqtt-password-file`) or EDGELOOP_MQTT_PASSWORD (or a config file) and has
    no flag: a command line is visible to every user in `ps`.

    >>> @dataclasses.dataclass(frozen=True, slots=True)
    ... class Role(MqttSettings):
    ...     broker: str = broker_setting()
    >>> role = resolve(Role, env={"EDGELOOP_MQTT_USER": "edge", "EDGELOOP_MQTT_PASSWORD": "pw"})
    >>> role, role.credentials().describe()
    (Role(mqtt_user='edge', mqtt_password_file=None, mqtt_ca_file=None, mqtt_cert_file=None, \
mqtt_key_file=None, mqtt_tls=False, mqtt_login_per_connection=False, \
broker='127.0.0.1:1883'), "user 'edge' over plain TCP")
    """

    mqtt_user: str | None = setting(
        None,
        help="MQTT user name (secure profile: the identity, e.g. pi-07; it is the node id too)",
        env=ENV_PREFIX + "MQTT_USER",
        metavar="USER",
    )
    mqtt_password: str | None = _secret(
        default=None,
        help="MQTT password (environment or config file only: a flag would show in `ps`)",
        env=ENV_PREFIX + "MQTT_PASSWORD",
        cli=False,
    )
    mqtt_password_file: Path | None = setting(
        None,
        help="file whose first line is the MQTT password (chmod 600)",
        env=ENV_PREFIX + "MQTT_PASSWORD_FILE",
        check=_readable_file,
    )
    mqtt_ca_file: Path | None = setting(
        None,
        help="CA certificate (PEM) the broker's TLS certificate must chain to; turns TLS on",
        env=ENV_PREFIX + "MQTT_CA_FILE",
        check=_readable_file,
    )
    mqtt_cert_file: Path | None = setting(
        None,
        help="client certificate (PEM) for a broker that requires one (with --mqtt-key-file)",
        env=ENV_PREFIX + "MQTT_CERT_FILE",
        check=_readable_file,
    )
    mqtt_key_file: Path | None = setting(
        None,
        help="private key (PEM) of --mqtt-cert-file",
        env=ENV_PREFIX + "MQTT_KEY_FILE",
        check=_readable_file,
    )
    mqtt_tls: bool = setting(
        False,
        help="TLS checked against the system's CAs (on anyway with --mqtt-ca-file)",
        env=ENV_PREFIX + "MQTT_TLS",
    )
    mqtt_login_per_connection: bool = setting(
        False,
        help="the broker binds client ids to logins (secure profile): a second connection of "
        "this process logs in as <user>~<purpose> (e.g. pi-7~batches) with the same password",
        env=ENV_PREFIX + "MQTT_LOGIN_PER_CONNECTION",
    )

    def __post_init__(self) -> None:  # a role's own __post_init__ calls check() for all fields
        check(self)

    def credentials(self) -> Credentials:
        """The one credentials object for `nodekit.mqtt.connect`; reads the password file.

        ConfigError if the password is given twice, unreadable or empty, or a certificate
        comes without its key.
        """
        from .mqtt import Credentials, TLSParameters

        password = self.mqtt_password
        if self.mqtt_password_file is not None:
            if password is not None:
                raise ConfigError(
                    "the MQTT password is set twice, by EDGELOOP_MQTT_PASSWORD (or the config "
                    "file) and by --mqtt-password-file / EDGELOOP_MQTT_PASSWORD_FILE; keep one"
                )
            password = _read_password(self.mqtt_password_file)
        tls = None
        if self.mqtt_tls or self.mqtt_ca_file or self.mqtt_cert_file or self.mqtt_key_file:
            tls = TLSParameters(self.mqtt_ca_file, self.mqtt_cert_file, self.mqtt_key_file)
        return Credentials(self.mqtt_user, password, tls, self.mqtt_login_per_connection)


def env_credentials(env: Mapping[str, str]) -> Credentials:
    """The MQTT login from EDGELOOP_MQTT_* alone, for tools without a settings class (benches,
    scripts): the same names, checks and password rules as every role.

    >>> env_credentials({}).describe()
    'anonymous over plain TCP'
    """
    settings: MqttSettings = resolve(MqttSettings, env=env)
    return settings.credentials()


def _read_password(path: Path) -> str:
    """The first line of `path`; warns when others may read the file."""
    import logging

    try:
        mode = path.stat().st_mode
        with path.open("rb") as fh:
            raw = fh.read(_PASSWORD_MAX + 2)
    except OSError as exc:
        raise ConfigError(
            f"cannot read the MQTT password file {path}: {exc}; set --mqtt-password-file or "
            "EDGELOOP_MQTT_PASSWORD_FILE to a file this user can read"
        ) from exc
    try:
        password = raw.decode().splitlines()[0] if raw.strip() else ""
    except UnicodeDecodeError as exc:
        raise ConfigError(f"the MQTT password file {path} is not UTF-8 text") from exc
    if not password or len(password.encode()) > _PASSWORD_MAX:
        raise ConfigError(
            f"the MQTT password file {path} holds no password on its first line (or one over "
            f"{_PASSWORD_MAX} bytes); write the password there (scripts/secure_profile.py "
            "makes one per role)"
        )
    if mode & 0o077:
        logging.getLogger(__name__).warning(
            "MQTT password file %s can be read by other users (mode %o); chmod 600 it",
            path,
            mode & 0o777,
        )
    return password


def _meta(f: dataclasses.Field[Any]) -> _Meta:
    m = f.metadata.get(_META)
    if m is None:
        return _Meta(f.name, None, None, None, None, None, False, None, None)
    return typing.cast(_Meta, m)


@dataclasses.dataclass(frozen=True, slots=True)
class _Leaf:
    owner: type  # the class (the role's, or a section's) that declares the field
    field: dataclasses.Field[Any]
    hint: Any
    section: str | None  # the section field's name (None: the role's own)


def _is_section(f: dataclasses.Field[Any]) -> bool:
    return _SECTION in f.metadata


def _own_fields(cls: type) -> list[dataclasses.Field[Any]]:
    return list(dataclasses.fields(cls))


def _tree(cls: type) -> dict[str, _Leaf]:
    """{name: leaf} of every setting of `cls`, its sections' settings included (in order)."""
    cached = _TREES.get(cls)
    if cached is not None:
        return cached
    hints = _type_hints(cls)
    out: dict[str, _Leaf] = {}
    for f in _own_fields(cls):
        if _is_section(f):
            for name, leaf in _tree(f.metadata[_SECTION][0]).items():
                if name in out:
                    raise TypeError(f"{cls.__name__}: setting {name!r} is declared twice")
                out[name] = dataclasses.replace(leaf, section=leaf.section or f.name)
        else:
            if f.name in out:
                raise TypeError(f"{cls.__name__}: setting {f.name!r} is declared twice")
            out[f.name] = _Leaf(cls, f, hints[f.name], None)
    _TREES[cls] = out
    return out


_TREES: dict[type, dict[str, _Leaf]] = {}


def _fields(cls: type) -> list[dataclasses.Field[Any]]:
    """Every setting's field of `cls`, its sections' settings included."""
    return [leaf.field for leaf in _tree(cls).values()]


def _hints(cls: type) -> dict[str, Any]:
    return {name: leaf.hint for name, leaf in _tree(cls).items()}


def _sections(cls: type) -> dict[str, tuple[type, str]]:
    """{section field name: (section class, help)} of `cls` (one level)."""
    return {f.name: f.metadata[_SECTION] for f in _own_fields(cls) if _is_section(f)}


def _type_hints(cls: type) -> dict[str, Any]:
    """The field types of `cls`; a section's class is known from its field, wherever it was
    declared (a class made in a function is not in its module's namespace)."""
    local = {sub.__name__: sub for sub, _ in _sections(cls).values()}
    return typing.get_type_hints(cls, localns=local)


def _sections_deep(cls: type) -> dict[str, tuple[type, str]]:
    """{section field name: (class, help)} of `cls` and of its sections' sections."""
    out: dict[str, tuple[type, str]] = {}
    for name, (sub, title) in _sections(cls).items():
        out[name] = (sub, title)
        out.update(_sections_deep(sub))
    return out


def settings_of(cls: type) -> dict[str, dataclasses.Field[Any]]:
    """{name: field} of every setting of `cls`, its sections' settings included."""
    return {name: leaf.field for name, leaf in _tree(cls).items()}


def _build(cls: type, values: Mapping[str, Any]) -> Any:
    """`cls` from flat `values`: each section from its own settings, then the role's."""
    kwargs: dict[str, Any] = {}
    for f in _own_fields(cls):
        if _is_section(f):
            kwargs[f.name] = _build(f.metadata[_SECTION][0], values)
        elif f.name in values:
            kwargs[f.name] = values[f.name]
    return cls(**kwargs)


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(the type without `| None`, whether None is allowed)."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else tp), True
    return tp, False


def env_names(cls: type) -> dict[str, str]:
    """{environment variable: field name} for every setting of `cls` that has one.

    The name is the class's `ENV_PREFIX` (a ClassVar; default EDGELOOP_) + the field's name in
    capitals, unless the field names its own (`env=`).
    """
    prefix = getattr(cls, "ENV_PREFIX", ENV_PREFIX)
    out = {}
    for f in _fields(cls):
        m = _meta(f)
        name = (prefix + f.name.upper()) if m.env is None else m.env
        if name and _META in f.metadata:
            out[name] = f.name
    return out


def flag_of(cls: type, name: str) -> str:
    """The long option that sets field `name` (for messages and docs)."""
    for f in _fields(cls):
        if f.name == name:
            m = _meta(f)
            if m.flag:
                return m.flag
            if _base_type(_hints(cls)[name])[0] is bool and f.default is True:
                return "--no-" + name.replace("_", "-")
            return "--" + name.replace("_", "-")
    raise KeyError(name)


def _ways(cls: type, name: str) -> str:
    """'--flag or EDGELOOP_VAR or the config key' for field `name`."""
    f = next(f for f in _fields(cls) if f.name == name)
    env = {v: k for k, v in env_names(cls).items()}.get(name)
    ways = ([flag_of(cls, name)] if _meta(f).cli else []) + ([env] if env else [])
    return " or ".join([*ways] + ([f"config key {name!r}"] if _meta(f).file else []))


def _where(cls: type, name: str) -> str:
    return f"; set {_ways(cls, name)}"


def _show(value: Any, limit: int = 60) -> str:
    """repr(value), cut to `limit` characters: a hostile value must not flood the log."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}…({len(text)} chars)"


def _coerce(tp: Any, value: Any, name: str) -> Any:
    """Turn a string (env, flag) or a TOML value into the field's type."""
    base, optional = _base_type(tp)
    if value is None or (optional and isinstance(value, str) and value.strip() == ""):
        if optional:
            return None
        raise ValueError("may not be empty")
    if base is bool:
        if isinstance(value, bool):
            return value
        low = str(value).strip().lower()
        if low in _TRUE | _FALSE:
            return low in _TRUE
        raise ValueError(f"{_show(value)} is not a boolean (true/false, 1/0, yes/no, on/off)")
    if base is int:
        if isinstance(value, bool | float):
            raise ValueError(f"{_show(value)} is not an integer")
        return int(value)
    if base is float:
        if isinstance(value, bool):
            raise ValueError(f"{_show(value)} is not a number")
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"{_show(value)} is not a finite number")
        return number
    if base is Path:
        return Path(str(value)).expanduser()
    if base is str:
        if not isinstance(value, str):
            raise ValueError(f"{_show(value)} is not a string")
        return value
    if typing.get_origin(base) is tuple:
        item = typing.get_args(base)[0]
        if isinstance(value, Path) and item is Path:  # one path: a list of one
            value = [value]
        if not isinstance(value, str | list | tuple):
            raise ValueError(f"{_show(value)} is not a list or a comma-separated string")
        parts = value.split(",") if isinstance(value, str) else list(value)
        if isinstance(value, str):
            parts = [p.strip() for p in parts if p.strip()]
        return tuple(_coerce(item, p, name) for p in parts)
    return value


def from_mapping(cls: type, obj: Mapping[str, Any], *, source: str = "settings") -> dict[str, Any]:
    """{field: typed value} from `obj` (file, env or flags); ConfigError on unknown keys/types."""
    hints = _hints(cls)
    known = [f.name for f in _fields(cls)]
    unknown = sorted(set(obj) - set(known))
    if unknown:
        raise ConfigError(f"unknown setting(s) {unknown} in {source}; known: {', '.join(known)}")
    out = {}
    for key, value in obj.items():
        try:
            out[key] = _coerce(hints[key], value, key)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"setting {key}={_show(value)} from {source}: {exc}") from exc
    return out


def read_toml(path: Path, section: str | None = None) -> dict[str, Any]:
    r"""The settings in a TOML file for the role whose table is `section`.

    A file without role tables holds one role's settings at its top level. A file with role
    tables (`[edge]`, `[sim]`, `[trainer]`, `[console]`) is shared: each role takes its own
    table plus the top-level keys, which then hold what all roles share (broker, prefix).

    >>> import tempfile, os
    >>> with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as fh:
    ...     _ = fh.write('broker = "hub:1883"\n[edge]\nbatch_max = 8\n[sim]\nhz = 2\n')
    >>> read_toml(Path(fh.name), "edge")
    {'broker': 'hub:1883', 'batch_max': 8}
    >>> os.unlink(fh.name)
    """
    try:
        obj = tomllib.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    except RecursionError as exc:
        raise ConfigError(f"cannot read config file {path}: nested too deeply") from exc
    tables = {k for k, v in obj.items() if k in ROLE_SECTIONS and isinstance(v, dict)}
    if not tables:
        return obj
    shared = {k: v for k, v in obj.items() if k not in tables}
    own = obj.get(section) if section in tables else {}
    return {**shared, **(own or {})}


def resolve(
    cls: type,
    *,
    file: Path | None = None,
    section: str | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
    base: Mapping[str, Any] | None = None,
) -> Any:
    """An instance of `cls` from defaults < `base` < TOML `file` < `env` < `flags`."""
    values: dict[str, Any] = dict(base or {})
    if file is not None:
        from_file = _flatten_sections(cls, read_toml(file, section), file)
        _refuse_flag_only(
            cls, [k for k in from_file if k in _flag_only(cls)], f"config file {file}"
        )
        values.update(from_mapping(cls, from_file, source=str(file)))
    if env is not None:
        prefix = getattr(cls, "ENV_PREFIX", ENV_PREFIX)
        named = [n for n in _flag_only(cls, env=True) if env.get(prefix + n.upper(), "") != ""]
        _refuse_flag_only(
            cls, named, "the environment (" + ", ".join(prefix + n.upper() for n in named) + ")"
        )
        by_env = {key: env[var] for var, key in env_names(cls).items() if env.get(var, "") != ""}
        values.update(from_mapping(cls, by_env, source="the environment"))
    if flags:
        values.update(from_mapping(cls, flags, source="the command line"))
    missing = [
        f.name
        for f in _fields(cls)
        if f.name not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(
            "missing setting(s): " + "; ".join(f"{n} (set {_ways(cls, n)})" for n in missing)
        )
    try:
        return _build(cls, values)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"bad settings for {cls.__name__}: {exc}") from exc


def build(cls: type, **values: Any) -> Any:
    """An instance of `cls` from its settings by their flat names (as flags, variables and
    file keys name them), each checked; the rest keep their defaults. For code and tests.

    >>> @dataclasses.dataclass(frozen=True, slots=True)
    ... class Batching:
    ...     batch_max: int = setting(32, help="windows per invoke", low=1)
    ...     def __post_init__(self) -> None:
    ...         check(self)
    >>> @dataclasses.dataclass(frozen=True, slots=True)
    ... class Node:
    ...     broker: str = broker_setting()
    ...     batching: Batching = section(Batching, help="batching")
    ...     def __post_init__(self) -> None:
    ...         check(self)
    >>> node = build(Node, batch_max=8)
    >>> node.batching.batch_max, flag_of(Node, "batch_max"), env_names(Node)["EDGELOOP_BATCH_MAX"]
    (8, '--batch-max', 'batch_max')
    """
    return resolve(cls, base=values)


def _flatten_sections(cls: type, obj: dict[str, Any], source: Path) -> dict[str, Any]:
    """A config file's keys with tables named after a section (`[edge.intake]`) merged in."""
    sections = _sections(cls)
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if key in sections and isinstance(value, dict):
            names = set(_tree(sections[key][0]))
            stray = sorted(set(value) - names)
            if stray:
                raise ConfigError(
                    f"unknown setting(s) {stray} in table {key!r} of {source}; that section "
                    f"holds: {', '.join(sorted(names))}"
                )
            out.update(value)
        else:
            out[key] = value
    return out


def _flag_only(cls: type, *, env: bool = False) -> set[str]:
    """Fields a config file may not set (`setting(file=False)`); with `env`, those that also
    have no environment variable (`env=""`): flag-only settings."""
    return {
        f.name
        for f in _fields(cls)
        if _META in f.metadata and not _meta(f).file and (not env or _meta(f).env == "")
    }


def _refuse_flag_only(cls: type, names: list[str], source: str) -> None:
    if names:
        flags = ", ".join(flag_of(cls, n) for n in sorted(names))
        raise ConfigError(
            f"setting(s) {sorted(names)} in {source} may only be given on the command line "
            f"({flags}); remove them there and pass the flag where you mean it"
        )


def _in_range(v: Any, m: _Meta) -> bool:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return False
    return (m.low is None or v >= m.low) and (m.high is None or v <= m.high)


def check(obj: Any) -> None:
    """Check every field of a settings instance against its declared type, range and choices.

    Call it from `__post_init__`, so a config built in code is held to the same rules as one
    built from flags.
    """
    cls = type(obj)
    hints = _type_hints(cls)
    for f in _own_fields(cls):
        if _is_section(f):
            value, sub = getattr(obj, f.name), f.metadata[_SECTION][0]
            if not isinstance(value, sub):
                kind = sub.__name__
                raise ConfigError(f"{f.name} must be a {kind}, got {_show(value)}")
            continue  # a section checked its own settings when it was made
        m = _meta(f)
        v = getattr(obj, f.name)
        base, optional = _base_type(hints[f.name])
        if v is None:
            if optional:
                continue
            raise ConfigError(f"{f.name} may not be empty{_where(cls, f.name)}")
        numbers = v if typing.get_origin(base) is tuple else (v,)
        if base is int and (isinstance(v, bool) or not isinstance(v, int)):
            raise ConfigError(f"{f.name} {_show(v)} must be an integer{_where(cls, f.name)}")
        if base is float and (isinstance(v, bool) or not isinstance(v, int | float)):
            raise ConfigError(f"{f.name} {_show(v)} must be a number{_where(cls, f.name)}")
        if base is bool and not isinstance(v, bool):
            raise ConfigError(f"{f.name} {_show(v)} must be true or false{_where(cls, f.name)}")
        if (m.low is not None or m.high is not None) and not all(_in_range(n, m) for n in numbers):
            kind = "an integer" if base is int else "a number"
            lo = "" if m.low is None else m.low
            hi = "" if m.high is None else m.high
            raise ConfigError(
                f"{f.name} {_show(v)} must be {kind} in {lo}..{hi} ({m.help}){_where(cls, f.name)}"
            )
        if m.choices is not None and v not in m.choices:
            raise ConfigError(
                f"{f.name} {_show(v)} must be one of {list(m.choices)}{_where(cls, f.name)}"
            )
        if m.check is not None:
            try:
                m.check(v)
            except (ValueError, EdgeloopError) as exc:
                raise ConfigError(f"{f.name} {_show(v)}: {exc}{_where(cls, f.name)}") from exc


def _default_text(f: dataclasses.Field[Any]) -> str:
    if f.default is not dataclasses.MISSING:
        d = f.default
        if d is None or d == ():
            return ""
        if isinstance(d, tuple):
            d = ",".join(str(x) for x in d)
        if isinstance(d, bool):
            return ""
        return f" (default {d})"
    return "" if f.default_factory is not dataclasses.MISSING else " (required)"


def _metavar(base: Any, flag: str) -> str:
    """N, NUM, PATH, A,B,... or the flag's name: what the value looks like in --help."""
    if base is int:
        return "N"
    if base is float:
        return "NUM"
    if base is Path:
        return "PATH"
    if typing.get_origin(base) is tuple:
        return "A,B,..."
    return flag.removeprefix("--").replace("-", "_").upper()


def add_arguments(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    exclude: tuple[str, ...] = (),
    only: tuple[str, ...] | None = None,
) -> None:
    """One flag per CLI setting of `cls` (or of `only` those); unset flags stay unset (SUPPRESS).

    A section's flags are listed under its own heading in --help.
    """
    hints = _hints(cls)
    envs = {v: k for k, v in env_names(cls).items()}
    titles = {name: title for name, (_, title) in _sections_deep(cls).items()}
    groups: dict[str, argparse._ArgumentGroup] = {}
    for leaf in _tree(cls).values():
        f, m = leaf.field, _meta(leaf.field)
        target: Any = parser
        if leaf.section is not None:
            if leaf.section not in groups:
                groups[leaf.section] = parser.add_argument_group(titles[leaf.section])
            target = groups[leaf.section]
        if not m.cli or f.name in exclude or (only is not None and f.name not in only):
            continue
        base, _ = _base_type(hints[f.name])
        flag = flag_of(cls, f.name)
        env = f" [{envs[f.name]}]" if f.name in envs else ""
        text = (m.help + _default_text(f) + env).replace("%", "%%")
        common: dict[str, Any] = {"dest": f.name, "help": text, "default": argparse.SUPPRESS}
        if base is bool:
            action = "store_false" if flag.startswith("--no-") else "store_true"
            target.add_argument(flag, action=action, **common)
            continue
        common["metavar"] = m.metavar or _metavar(base, flag)
        if m.choices is not None and all(isinstance(c, str) for c in m.choices):
            common["choices"] = m.choices
        target.add_argument(flag, **common)


def flags_of(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The settings of `cls` given on the command line (raw strings, typed by `resolve`)."""
    names = {f.name for f in _fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names}
