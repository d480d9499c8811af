"""What `console --serve` checks, without the web server (so the terminal console does not
import aiohttp): the password file, origins, loopback addresses, browser-given sizes.
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from urllib.parse import urlsplit

from protocol import ConfigError

__all__ = [
    "DEFAULT_MAX_SESSIONS",
    "allowed_origins",
    "bounded",
    "is_loopback",
    "normal_origin",
    "read_password",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_SESSIONS = 2
MAX_PASSWORD_BYTES = 1024


def read_password(path: Path, what: str = "--serve password") -> str:
    """The first line of `path` (ConfigError if unreadable or empty); warns when other users
    may read the file."""
    try:
        mode = path.stat().st_mode
        with path.open("rb") as fh:
            raw = fh.read(MAX_PASSWORD_BYTES + 2)
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} file {path}: {exc}") from exc
    try:
        lines = raw.decode().splitlines()
    except UnicodeDecodeError as exc:
        raise ConfigError(f"the {what} file {path} is not UTF-8 text") from exc
    password = lines[0].strip() if lines else ""
    if not password or len(password.encode()) > MAX_PASSWORD_BYTES:
        raise ConfigError(
            f"the {what} file {path} holds no password on its first line (or one over "
            f"{MAX_PASSWORD_BYTES} bytes)"
        )
    if mode & 0o077:
        log.warning(
            "%s file %s can be read by other users (mode %o); chmod 600 it",
            what,
            path,
            mode & 0o777,
        )
    return password


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address or `localhost`.

    >>> [is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "10.0.0.5")]
    [True, True, True, False, False]
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normal_origin(value: str) -> str | None:
    """`scheme://host[:port]` of `value` (lower case, default ports left out), None if it is
    not an http(s) origin.

    >>> normal_origin("HTTP://Console.Example:80/"), normal_origin("https://h:8443")
    ('http://console.example', 'https://h:8443')
    >>> normal_origin("null"), normal_origin("file:///x")
    (None, None)
    """
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in ("http", "https") or not host:
        return None
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}[scheme]
    return f"{scheme}://{host}" if port in (None, default) else f"{scheme}://{host}:{port}"


def allowed_origins(host: str, port: int, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The origins a browser may open the console's WebSocket from: the loopback ones of
    `port` (and `host` itself when it is a loopback address), then `extra`.

    >>> allowed_origins("127.0.0.1", 8000, ("https://console.example",))
    ('http://127.0.0.1:8000', 'http://localhost:8000', 'http://[::1]:8000', \
'https://console.example')
    """
    out = [f"http://127.0.0.1:{port}", f"http://localhost:{port}", f"http://[::1]:{port}"]
    if is_loopback(host):
        own = normal_origin(
            f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"
        )
        if own is not None:
            out.append(own)
    for value in extra:
        origin = normal_origin(value)
        if origin is None:
            raise ValueError(f"{value!r} is not an origin; write it as http(s)://HOST[:PORT]")
        out.append(origin)
    return tuple(dict.fromkeys(out))


def bounded(value: object, default: int, high: int) -> int:
    """An int in 1..high from a browser's value (`default` when it is none).

    >>> bounded("120", 80, 500), bounded("99999", 80, 500), bounded("x", 80, 500)
    (120, 500, 80)
    """
    try:
        number = int(value) if isinstance(value, (int, str)) else default
    except ValueError:
        number = default
    return min(max(number, 1), high)
