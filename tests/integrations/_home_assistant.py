"""Home Assistant core as a test runs it: headless, its MQTT integration on the test's broker,
read back through its own REST API.

Nobody clicks through onboarding: the config dir is seeded before the first start with what
HA's own onboarding would leave behind — `.storage/core.config_entries` holding an MQTT entry
(broker, port, discovery prefix, birth and will topics) and `.storage/auth` holding an owner
with a long-lived refresh token — and the access token is the JWT HA would issue for it (HS256
with the token's `jwt_key`, issuer its id). `--skip-pip`: everything HA needs was installed by
scripts/tools.py. HA answers `/api/` after ~5-7 s; a SIGTERM stops it in ~2 s.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeVar

from scripts.broker import _die_with_parent, free_port

T = TypeVar("T")

_CONFIGURATION = """\
homeassistant:
  name: edgeloop-test
  latitude: 0
  longitude: 0
  elevation: 0
  unit_system: metric
  time_zone: UTC
  currency: EUR
  country: DE
http:
  server_host: 127.0.0.1
  server_port: {port}
api:
logger:
  default: warning
"""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(issuer: str, key: str, lifetime_s: int = 86400) -> str:
    """The access token HA issues for a refresh token: HS256 over {iss, iat, exp}."""
    now = int(time.time())
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps({"iss": issuer, "iat": now, "exp": now + lifetime_s}).encode())
    sig = hmac.new(key.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(sig)}"


def _store(config: Path, key: str, data: dict[str, Any], version: int, minor: int = 1) -> None:
    path = config / ".storage" / key
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"version": version, "minor_version": minor, "key": key, "data": data}
    path.write_text(json.dumps(doc, indent=1))


def seed(config: Path, broker_host: str, broker_port: int, discovery_prefix: str) -> str:
    """Write HA's stores so that it starts onboarded, with MQTT set up; return a token."""
    now = datetime.now(UTC).isoformat()
    user, refresh, jwt_key = uuid.uuid4().hex, uuid.uuid4().hex, secrets.token_hex(64)
    _store(
        config,
        "auth",
        {
            "users": [
                {
                    "id": user,
                    "group_ids": ["system-admin"],
                    "is_owner": True,
                    "is_active": True,
                    "name": "pytest",
                    "system_generated": False,
                    "local_only": False,
                }
            ],
            "groups": [],  # HA adds its system groups itself
            "credentials": [],
            "refresh_tokens": [
                {
                    "id": refresh,
                    "user_id": user,
                    "client_id": None,
                    "client_name": "pytest",
                    "client_icon": None,
                    "token_type": "long_lived_access_token",
                    "created_at": now,
                    "access_token_expiration": 86400.0,
                    "token": secrets.token_hex(64),
                    "jwt_key": jwt_key,
                    "last_used_at": None,
                    "last_used_ip": None,
                    "expire_at": None,
                    "credential_id": None,
                    "version": "2025.4.4",
                }
            ],
        },
        version=1,
    )
    done = ["user", "core_config", "analytics", "integration"]
    _store(config, "onboarding", {"done": done}, version=4)
    status = f"{discovery_prefix}/status"  # birth and will, where pi_edge --ha-prefix listens
    _store(
        config,
        "core.config_entries",
        {
            "entries": [
                {
                    "created_at": now,
                    "modified_at": now,
                    "data": {"broker": broker_host, "port": broker_port},
                    "options": {
                        "discovery": True,
                        "discovery_prefix": discovery_prefix,
                        "birth_message": {
                            "topic": status,
                            "payload": "online",
                            "qos": 0,
                            "retain": False,
                        },
                        "will_message": {
                            "topic": status,
                            "payload": "offline",
                            "qos": 0,
                            "retain": False,
                        },
                    },
                    "discovery_keys": {},
                    "disabled_by": None,
                    "domain": "mqtt",
                    "entry_id": uuid.uuid4().hex.upper()[:26],
                    "minor_version": 2,
                    "version": 1,
                    "pref_disable_new_entities": False,
                    "pref_disable_polling": False,
                    "source": "user",
                    "subentries": [],
                    "title": broker_host,
                    "unique_id": None,
                }
            ]
        },
        version=1,
        minor=5,
    )
    return _jwt(refresh, jwt_key)


class HomeAssistant:
    """One Home Assistant process and a REST client for it."""

    def __init__(
        self, hass: Path, config: Path, broker_host: str, broker_port: int, discovery_prefix: str
    ) -> None:
        self.hass = hass
        self.config = config
        self.discovery_prefix = discovery_prefix
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        config.mkdir(parents=True, exist_ok=True)
        (config / "configuration.yaml").write_text(_CONFIGURATION.format(port=self.port))
        self.token = seed(config, broker_host, broker_port, discovery_prefix)
        self.log = config / "hass.out"
        self.proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None
        self.started_s = 0.0

    def start(self, timeout: float = 90.0) -> HomeAssistant:
        """Start HA and wait until its core is RUNNING with the MQTT integration loaded."""
        t0 = time.monotonic()
        self._out = self.log.open("wb")
        self.proc = subprocess.Popen(
            [str(self.hass), "-c", str(self.config), "--skip-pip", "--log-no-color"],
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, safe before exec
        )

        def running() -> bool:
            config = self.get("/api/config")
            return config.get("state") == "RUNNING" and "mqtt" in config.get("components", [])

        self.wait(running, timeout, "Home Assistant running with MQTT", errors=(OSError,))
        self.started_s = time.monotonic() - t0
        return self

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._out is not None:
            self._out.close()
            self._out = None

    def tail(self, lines: int = 40) -> str:
        """The end of HA's log, for a failure's message."""
        text = (self.config / "home-assistant.log").read_text(errors="replace")
        if not text and self.log.exists():
            text = self.log.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    # ------------------------------------------------------------------ REST
    def _request(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(
            self.base + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
        if response.headers.get_content_type() == "application/json":
            return json.loads(raw or b"null")
        return raw.decode()

    def get(self, path: str) -> Any:
        return self._request("GET", path)

    def state(self, entity_id: str) -> dict[str, Any] | None:
        """GET /api/states/<entity_id>: the state object, None when HA has no such entity."""
        try:
            found: dict[str, Any] = self.get(f"/api/states/{entity_id}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
        return found

    def states(self) -> dict[str, dict[str, Any]]:
        """Every entity's state, by entity id."""
        return {s["entity_id"]: s for s in self.get("/api/states")}

    def template(self, text: str) -> str:
        """Render a template in HA (POST /api/template), e.g. to read the device registry."""
        rendered: str = self._request("POST", "/api/template", {"template": text})
        return rendered

    def wait(
        self,
        check: Callable[[], T],
        timeout: float,
        what: str,
        errors: tuple[type[BaseException], ...] = (),
    ) -> T:
        """Poll `check` until it returns something true; else fail, with HA's log tail."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                last = check()
                if last:
                    return last
            except errors as exc:
                last = exc
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"Home Assistant exited ({self.proc.returncode}):\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                log = self.tail()
                raise AssertionError(f"waited {timeout:g} s for {what}; last: {last!r}\n{log}")
            time.sleep(0.2)
