"""`console --serve`: the console in a browser (textual-serve), behind a login.

Each browser session runs its own console process with the operator's MQTT login, and the
console sends commands (drift, labels, rollbacks), so the web server in front of it is guarded:

    login       every page, download and the WebSocket need a session cookie, got by posting
                the password (a token works as well) from `--serve-password-file` to `/login`;
                a script may send `Authorization: Bearer <password>` instead. A wrong password
                waits 1 s; at most MAX_COOKIES sessions are remembered (the oldest go first), each
                for COOKIE_TTL_S. The cookie is HttpOnly and SameSite=Strict (Secure over https).
    origin      the WebSocket is opened only when its `Origin` header is one of the allowed
                origins (the loopback ones of the port, and `--serve-origin`): another site's page
                cannot drive the console with the operator's cookie; no Origin, no WebSocket.
                A login form posted from another origin is refused too.
    sessions    at most `--serve-max-sessions` consoles at once (default 2): one more is refused
                with 503 before any process starts.
    bounds      a terminal is at most MAX_COLUMNS × MAX_ROWS, whatever the browser asks for.
    headers     no framing by another site (X-Frame-Options, CSP frame-ancestors), no referrer,
                no caching of pages; wrong passwords are tried one a second, all told.
    address     loopback unless `--serve-host` says otherwise; another address needs
                `--serve-origin` (how browsers reach it, e.g. https://console.site.example).

Everything refused is logged (once per reason and minute) and counted in `refused`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web
from textual_serve.server import Server

from .origins import DEFAULT_MAX_SESSIONS, allowed_origins, bounded, is_loopback, normal_origin

__all__ = ["COOKIE", "DEFAULT_MAX_SESSIONS", "GuardedServer"]

log = logging.getLogger(__name__)

COOKIE = "edgeloop_console"
COOKIE_TTL_S = 12 * 3600.0
MAX_COOKIES = 64
MAX_COLUMNS, MAX_ROWS = 500, 200
WRONG_PASSWORD_WAIT_S = 1.0
MAX_FORM_BYTES = 4096
_LOG_EVERY_S = 60.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_LOGIN_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>edgeloop console: log in</title></head>
<body style="font-family: sans-serif; margin: 4em;">
<h1>edgeloop console</h1>{note}
<form method="post" action="/login">
<label>Password or token <input type="password" name="password" autofocus
 autocomplete="current-password"></label>
<button type="submit">Log in</button>
</form></body></html>
"""


class GuardedServer(Server):
    """textual-serve's Server with a login, an Origin check and a cap on sessions."""

    def __init__(
        self,
        command: str,
        *,
        password: str,
        host: str = "127.0.0.1",
        port: int = 8000,
        origins: tuple[str, ...] = (),
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        title: str = "edgeloop console",
    ) -> None:
        if not password:
            raise ValueError("--serve needs a password (--serve-password-file)")
        if max_sessions < 1:
            raise ValueError(f"--serve-max-sessions {max_sessions} must be ≥ 1")
        if not is_loopback(host) and not origins:
            raise ValueError(
                f"--serve-host {host} is not a loopback address: say how browsers reach the "
                "console with --serve-origin (e.g. https://console.site.example), whose "
                "WebSocket Origin alone is then allowed"
            )
        self.origins = allowed_origins(host, port, origins)
        # the page's own URLs (static files, WebSocket) use the first origin browsers use
        public = normal_origin(origins[0]) if origins else f"http://127.0.0.1:{port}"
        super().__init__(command, host=host, port=port, title=title, public_url=public)
        self._password = password.encode()
        self.max_sessions = max_sessions
        self.sessions = 0  # consoles running now
        self.started = 0  # consoles started, all told
        self.refused: dict[str, int] = {}  # reason -> count
        self._cookies: OrderedDict[str, float] = OrderedDict()  # value -> expiry (monotonic)
        self._logged: dict[str, float] = {}
        self._secure = bool(public and public.startswith("https://"))
        self._wrong = asyncio.Lock()

    # -- checks -----------------------------------------------------------------------------
    def _refuse(self, reason: str, request: web.Request) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        now = time.monotonic()
        if now - self._logged.get(reason, -_LOG_EVERY_S) >= _LOG_EVERY_S:
            self._logged[reason] = now
            log.warning(
                "console web: refused %s %s from %s: %s",
                request.method,
                request.path[:100],
                request.remote,
                reason,
            )

    def _password_ok(self, given: str) -> bool:
        return hmac.compare_digest(given.encode(errors="replace"), self._password)

    def logged_in(self, request: web.Request) -> bool:
        """A live session cookie, or `Authorization: Bearer <password>`."""
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and self._password_ok(auth[len("Bearer ") :]):
            return True
        value = request.cookies.get(COOKIE)
        if not value:
            return False
        expiry = self._cookies.get(value)
        if expiry is None:
            return False
        if expiry < time.monotonic():
            del self._cookies[value]
            return False
        return True

    def origin_ok(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        return origin is not None and normal_origin(origin) in self.origins

    def _new_cookie(self) -> str:
        value = secrets.token_urlsafe(32)
        self._cookies[value] = time.monotonic() + COOKIE_TTL_S
        while len(self._cookies) > MAX_COOKIES:
            self._cookies.popitem(last=False)
        return value

    # -- the web app ------------------------------------------------------------------------
    async def _make_app(self) -> web.Application:
        app = await super()._make_app()
        app.router.add_get("/login", self.handle_login_page)
        app.router.add_post("/login", self.handle_login)
        app.middlewares.append(self._guard)
        app.on_response_prepare.append(_headers)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path == "/login" or path.startswith("/static/"):
            return await handler(request)  # the form, and textual's own JS/CSS/fonts
        if not self.logged_in(request):
            if "Authorization" in request.headers:  # a wrong guess: as slow as the form's
                self._refuse("wrong password (Authorization)", request)
                async with self._wrong:
                    await asyncio.sleep(WRONG_PASSWORD_WAIT_S)
                raise web.HTTPUnauthorized(text="wrong password\n")
            self._refuse("no login", request)
            if path == "/" and request.method == "GET":
                raise web.HTTPSeeOther("/login")
            raise web.HTTPUnauthorized(text="log in at /login first\n")
        return await handler(request)

    async def handle_index(self, request: web.Request) -> web.StreamResponse:
        """textual-serve's page, its own URLs (WebSocket, static files) on the origin the
        browser used when that origin is allowed (the session cookie belongs to that host: a
        page from http://localhost:8000 must open ws://localhost:8000/ws, not 127.0.0.1)."""
        origin = normal_origin(f"{request.scheme}://{request.host}")
        default = self.public_url
        if origin is not None and origin in self.origins:
            self.public_url = origin  # read synchronously by the page's handler below
        try:
            response: web.StreamResponse = await super().handle_index(request)
        finally:
            self.public_url = default
        return response

    async def handle_login_page(self, request: web.Request) -> web.Response:
        return web.Response(text=_LOGIN_PAGE.format(note=""), content_type="text/html")

    async def handle_login(self, request: web.Request) -> web.Response:
        origin = request.headers.get("Origin")
        if origin is not None and normal_origin(origin) not in self.origins:
            self._refuse("login posted from another origin", request)
            raise web.HTTPForbidden(text="login from another origin\n")
        if (request.content_length or 0) > MAX_FORM_BYTES:
            self._refuse("login form too big", request)
            raise web.HTTPRequestEntityTooLarge(MAX_FORM_BYTES, request.content_length or 0)
        form = await request.post()
        given = form.get("password")
        if not isinstance(given, str) or not self._password_ok(given):
            self._refuse("wrong password", request)
            async with self._wrong:  # one guess a second, however many come at once
                await asyncio.sleep(WRONG_PASSWORD_WAIT_S)
            note = "<p><b>Wrong password.</b></p>"
            return web.Response(
                text=_LOGIN_PAGE.format(note=note), content_type="text/html", status=401
            )
        response = web.Response(status=303, headers={"Location": "/"})
        response.set_cookie(
            COOKIE,
            self._new_cookie(),
            max_age=int(COOKIE_TTL_S),
            httponly=True,
            samesite="Strict",
            secure=self._secure,
            path="/",
        )
        log.info("console web: %s logged in", request.remote)
        return response

    async def handle_websocket(self, request: web.Request) -> web.WebSocketResponse:
        """The WebSocket that runs one console: logged in (the middleware), from an allowed
        origin, within the session cap; the terminal size bounded."""
        if not self.origin_ok(request):
            self._refuse("WebSocket from an origin not allowed", request)
            raise web.HTTPForbidden(text="origin not allowed\n")
        if self.sessions >= self.max_sessions:
            self._refuse(f"session cap ({self.max_sessions}) reached", request)
            raise web.HTTPServiceUnavailable(
                text=f"{self.sessions} console(s) running, the most allowed; close one first\n"
            )
        width = bounded(request.query.get("width", "80"), 80, MAX_COLUMNS)
        height = bounded(request.query.get("height", "24"), 24, MAX_ROWS)
        request = request.clone(
            rel_url=request.rel_url.update_query(width=str(width), height=str(height))
        )
        self.sessions += 1
        self.started += 1
        log.info("console web: session %d opened (%d running)", self.started, self.sessions)
        try:
            return await super().handle_websocket(request)
        finally:
            self.sessions -= 1
            log.info("console web: a session closed (%d running)", self.sessions)

    async def _process_messages(self, websocket: web.WebSocketResponse, app_service: Any) -> None:
        """textual-serve's loop over the browser's messages, with the terminal size bounded
        and a malformed message ignored (not an assertion that ends the session)."""
        async for message in websocket:
            if message.type != WSMsgType.TEXT:
                continue
            try:
                envelope = message.json()
                kind, data = envelope[0], envelope[1]
            except (ValueError, TypeError, IndexError, KeyError):
                continue
            if kind == "stdin" and isinstance(data, str):
                await app_service.send_bytes(data.encode("utf-8"))
            elif kind == "resize" and isinstance(data, dict):
                await app_service.set_terminal_size(
                    bounded(data.get("width"), 80, MAX_COLUMNS),
                    bounded(data.get("height"), 24, MAX_ROWS),
                )
            elif kind == "ping":
                await websocket.send_json(["pong", str(data)[:64]])
            elif kind == "blur":
                await app_service.blur()
            elif kind == "focus":
                await app_service.focus()


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    """No page of the console in another site's frame, no referrer, nothing cached."""
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Content-Security-Policy", "frame-ancestors 'none'")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if not request.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-store")
