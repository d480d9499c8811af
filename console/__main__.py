"""`python -m console` (console script `edgeloop-console`): the operator's console.

    python -m console --broker HOST:PORT [--prefix P] [MQTT login settings]
    python -m console --broker HOST:PORT --serve 8000     # the same screen in a browser

Settings: defaults < `--config FILE` (TOML, top level or a `[console]` table) < EDGELOOP_*
environment < flags; the MQTT login (user, password file, CA) is the one every role shares
(nodekit.settings.MqttSettings): in the secure profile the console logs in as `operator`.
Exit codes are edgeloop's shared table (nodekit.cli).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from nodekit.cli import EXIT_OK, report
from nodekit.settings import (
    MqttSettings,
    add_arguments,
    broker_setting,
    flags_of,
    prefix_setting,
    resolve,
    setting,
)
from protocol import ConfigError, EdgeloopError, Topics

from . import __version__
from .origins import DEFAULT_MAX_SESSIONS, read_password

log = logging.getLogger("console")

SECTION = "console"


def _default_client_id() -> str:
    host = "".join(c if c.isalnum() or c in "_.-" else "-" for c in socket.gethostname())[:40]
    return f"console-{host or 'host'}-{os.getpid()}"


@dataclass(frozen=True, slots=True)
class ConsoleConfig(MqttSettings):
    """Every setting of the console, declared once (flags, env and file keys derive from it)."""

    broker: str = broker_setting()
    prefix: str = prefix_setting()
    client_id: str = setting(
        None,
        help="MQTT client id (default console-<host>-<pid>; two consoles need two ids)",
        factory=_default_client_id,
        metavar="ID",
    )
    serve: int | None = setting(
        None,
        help="serve the console in a browser on this port (textual-serve) instead of the "
        "terminal; each browser tab runs its own console",
        low=1,
        high=65535,
        metavar="PORT",
        env="",
        file=False,  # the per-session consoles read the same --config: they must not serve
    )
    serve_host: str = setting(
        "127.0.0.1",
        help="address --serve listens on (loopback by default; another one needs --serve-origin)",
        metavar="ADDR",
    )
    serve_password_file: Path | None = setting(
        None,
        help="file whose first line is the password (or token) a browser must give to use "
        "--serve (required with it; chmod 600)",
        metavar="FILE",
    )
    serve_origin: tuple[str, ...] = setting(
        (),
        help="origin(s) browsers reach --serve at, e.g. https://console.site.example "
        "(comma-separated); the WebSocket is refused from any other (loopback ones always "
        "allowed)",
        metavar="ORIGIN",
    )
    serve_max_sessions: int = setting(
        DEFAULT_MAX_SESSIONS,
        help="consoles --serve runs at most at once (each is a process with the operator's "
        "login); one more is refused",
        low=1,
        high=64,
        metavar="N",
    )
    log_file: Path | None = setting(
        None,
        help="write the console's log here (the screen has no room for it)",
        metavar="FILE",
    )

    @property
    def topics(self) -> Topics:
        return Topics(self.prefix)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edgeloop-console",
        description="edgeloop's operator console: machines, nodes, sparklines and the loop's "
        "timeline; keys d/c drift, l label, b roll back (each confirmed), q quit",
    )
    p.add_argument("--version", action="version", version=f"console {__version__}")
    p.add_argument("--config", type=Path, help="TOML settings file (top level or [console])")
    add_arguments(p, ConsoleConfig)
    return p


def build_config(args: argparse.Namespace) -> ConsoleConfig:
    config: ConsoleConfig = resolve(
        ConsoleConfig,
        file=args.config,
        section=SECTION,
        env=os.environ,
        flags=flags_of(args, ConsoleConfig),
    )
    return config


def _setup_logging(log_file: Path | None) -> None:
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    if log_file is not None:
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)


def serve_command(argv: list[str], python: str = sys.executable) -> str:
    """The shell command textual-serve starts per browser tab: this one without any --serve…
    flag (each takes a value).

    >>> serve_command(["--broker", "h:1", "--serve", "8000", "--serve-host=0.0.0.0",
    ...                "--serve-password-file", "pw", "--serve-max-sessions", "3"], "py")
    'py -m console --broker h:1'
    """
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg.startswith("--serve"):
            skip = "=" not in arg
            continue
        out.append(arg)
    return shlex.join([python, "-m", "console", *out])


def serve(config: ConsoleConfig, argv: list[str]) -> int:
    """`--serve`: the console in browsers, behind a login (console/serve.py)."""
    from .serve import GuardedServer  # aiohttp and textual-serve: only when serving

    if config.serve_password_file is None:
        raise ConfigError(
            "--serve needs a login: --serve-password-file FILE (or "
            "EDGELOOP_SERVE_PASSWORD_FILE) with the password or token browsers must give; "
            "make one with: python -c 'import secrets; print(secrets.token_urlsafe(24))' "
            "> console.password && chmod 600 console.password"
        )
    password = read_password(config.serve_password_file, "--serve password")
    assert config.serve is not None
    try:
        server = GuardedServer(
            serve_command(argv),
            password=password,
            host=config.serve_host,
            port=config.serve,
            origins=config.serve_origin,
            max_sessions=config.serve_max_sessions,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    log.info(
        "serving the console on http://%s:%d/ (login required; WebSocket origins %s; at most "
        "%d sessions)",
        config.serve_host,
        config.serve,
        ", ".join(server.origins),
        config.serve_max_sessions,
    )
    server.serve()
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    try:
        config = build_config(args)
        credentials = config.credentials()
    except EdgeloopError as exc:
        return report(exc, log)
    _setup_logging(config.log_file)
    if config.serve is not None:
        try:
            return serve(config, argv)
        except EdgeloopError as exc:
            return report(exc, log)

    from .app import ConsoleApp
    from .mqtt import ConsoleLink

    link = ConsoleLink(
        config.broker, config.topics, client_id=config.client_id, credentials=credentials
    ).start()
    try:
        ConsoleApp(link, config.topics).run()
    finally:
        link.stop()
    failure = link.link.failure() if link.link is not None else None
    if failure is not None:
        return report(failure, log)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
