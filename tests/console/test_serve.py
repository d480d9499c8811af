"""`console --serve` with real HTTP and WebSocket clients (issue 23, item 6).

A real `python -m console --serve` process (textual-serve, a real broker behind it) is attacked
as a browser on another site or a stranger on the network would: no login, a wrong password,
a WebSocket from `Origin: http://evil.example` or with no Origin, one session more than the
cap. Each is refused; the operator with the password gets the page and a running console.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from console.__main__ import main
from nodekit.cli import EXIT_USAGE

pytestmark = pytest.mark.broker

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "correct-horse-battery-staple-42"
EVIL = "http://evil.example"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def served(broker: Any, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`python -m console --serve` on a free loopback port, 2 sessions at most."""
    password = tmp_path / "console.password"
    password.write_text(PASSWORD + "\n")
    password.chmod(0o600)
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "console",
            "--broker",
            broker.address,
            "--serve",
            str(port),
            "--serve-password-file",
            str(password),
            "--serve-max-sessions",
            "2",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "console --serve did not listen in 30 s"
            time.sleep(0.2)
    try:
        yield base, proc
    finally:
        proc.terminate()
        proc.wait(10)


async def _login(http: aiohttp.ClientSession, base: str, password: str) -> tuple[int, str]:
    """POST the login form; (status, the session cookie's value or '')."""
    async with http.post(
        f"{base}/login", data={"password": password}, allow_redirects=False
    ) as resp:
        cookie = resp.cookies.get("edgeloop_console")
        return resp.status, "" if cookie is None else cookie.value


async def _ws_status(
    http: aiohttp.ClientSession, base: str, headers: dict[str, str]
) -> aiohttp.ClientWebSocketResponse | int:
    """Open the console's WebSocket: the socket, or the HTTP status it was refused with."""
    url = base.replace("http:", "ws:") + "/ws?width=100&height=30"
    try:
        return await http.ws_connect(url, headers=headers)
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status


def test_serve_needs_a_login_checks_the_origin_and_caps_sessions(
    served: tuple[str, subprocess.Popen[bytes]],
) -> None:
    base, proc = served
    origin = base  # what a browser on the console's own page sends

    async def attack() -> None:
        async with aiohttp.ClientSession() as http:
            # no login: no page, no WebSocket (not even from the right origin)
            async with http.get(f"{base}/", allow_redirects=False) as resp:
                assert resp.status == 303 and resp.headers["Location"] == "/login"
                assert "edgeloop console" not in await resp.text()
            assert await _ws_status(http, base, {"Origin": origin}) == 401
            # a wrong password: refused, no cookie; a login posted from another site: refused
            assert await _login(http, base, "guess") == (401, "")
            async with http.post(
                f"{base}/login",
                data={"password": PASSWORD},
                headers={"Origin": EVIL},
                allow_redirects=False,
            ) as resp:
                assert resp.status == 403 and "edgeloop_console" not in resp.cookies
            # a wrong Bearer password, a made-up cookie: no login
            wrong = {"Authorization": "Bearer guess", "Origin": origin}
            assert await _ws_status(http, base, wrong) == 401
            fake = {"Cookie": "edgeloop_console=forged", "Origin": origin}
            assert await _ws_status(http, base, fake) == 401

            status, cookie = await _login(http, base, PASSWORD)
            assert status == 303 and len(cookie) >= 32
            auth = {"Cookie": f"edgeloop_console={cookie}"}
            async with http.get(f"{base}/", headers=auth) as resp:
                assert resp.status == 200
                assert resp.headers["X-Frame-Options"] == "DENY"  # no clickjacking frame
                page = await resp.text()
                assert "edgeloop console" in page and f"{base.replace('http:', 'ws:')}/ws" in page
            port = base.rsplit(":", 1)[1]
            at_localhost = {**auth, "Host": f"localhost:{port}"}  # the cookie's host
            async with http.get(f"{base}/", headers=at_localhost) as resp:
                assert f"ws://localhost:{port}/ws" in await resp.text()
            at_evil = {**auth, "Host": "evil.example"}  # a rebound name: not an origin we serve
            async with http.get(f"{base}/", headers=at_evil) as resp:
                assert "evil.example" not in await resp.text()

            # logged in, but from another site's page, or with no Origin at all: refused
            assert await _ws_status(http, base, {**auth, "Origin": EVIL}) == 403
            assert await _ws_status(http, base, auth) == 403
            assert await _ws_status(http, base, {**auth, "Origin": "null"}) == 403

            # the cap: two consoles run, a third is refused, and one closing frees a place
            first = await _ws_status(http, base, {**auth, "Origin": origin})
            bearer = {"Authorization": f"Bearer {PASSWORD}", "Origin": origin}
            second = await _ws_status(http, base, bearer)  # a script's login
            assert isinstance(first, aiohttp.ClientWebSocketResponse)
            assert isinstance(second, aiohttp.ClientWebSocketResponse)
            got = await asyncio.wait_for(first.receive(), 30)  # the console process draws
            assert got.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT), got
            assert await _ws_status(http, base, {**auth, "Origin": origin}) == 503
            await second.close()
            deadline = time.monotonic() + 15
            while True:
                third = await _ws_status(http, base, {**auth, "Origin": origin})
                if isinstance(third, aiohttp.ClientWebSocketResponse):
                    break
                assert third == 503 and time.monotonic() < deadline
                await asyncio.sleep(0.2)
            assert await _ws_status(http, base, {**auth, "Origin": origin}) == 503
            await third.close()
            await first.close()

    asyncio.run(attack())
    assert proc.poll() is None, "the server died"


def test_serve_refuses_to_start_without_a_login_or_open_without_an_origin(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    assert main(["--serve", "8000"]) == EXIT_USAGE
    assert "--serve needs a login" in caplog.text
    password = tmp_path / "pw"
    password.write_text("s3cret-token\n")
    password.chmod(0o600)
    caplog.clear()
    code = main(["--serve", "8000", "--serve-password-file", str(password), "--serve-host", "::"])
    assert code == EXIT_USAGE
    assert "--serve-origin" in caplog.text
    empty = tmp_path / "empty"
    empty.write_text("\n")
    caplog.clear()
    assert main(["--serve", "8000", "--serve-password-file", str(empty)]) == EXIT_USAGE
    assert "holds no password" in caplog.text


def test_serve_is_a_flag_only_so_the_per_session_consoles_never_serve(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "console.toml"
    config.write_text("[console]\nserve = 8000\n")
    assert main(["--config", str(config)]) == EXIT_USAGE
    assert "may only be given on the command line (--serve)" in caplog.text
