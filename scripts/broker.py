"""Run a private Mosquitto from the repo's mosquitto.conf on a free loopback port.

Used by `make demo`, the test fixture and the benches, so none of them touches a broker that
already listens on 1883. Usage as a script: `python -m scripts.broker --port-file F`.
With a profile (`Broker(profile=SecureProfile(dir))`, `--secure DIR`) it runs the secure
profile instead: deploy/mosquitto/edgeloop-secure.conf with that directory's password file,
ACL and certificates, TLS only, on the same kind of free loopback port. `extra_conf` appends
more options to either, e.g. a bridge to another broker (tests/test_bridge.py).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import getpass
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scripts.secure_profile import SECURE_CONF, ProfileError, SecureProfile, render_conf

REPO_CONF = Path(__file__).resolve().parent.parent / "mosquitto.conf"
INSTALL_HINT = "install it with: sudo apt-get install -y mosquitto  (or run `make setup`)"


def _die_with_parent() -> None:
    """In the child before exec: Linux sends it SIGTERM when its parent dies (no orphans)."""
    # Not Linux/glibc: OSError, and the atexit hook still stops it on a normal exit.
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class BrokerError(RuntimeError):
    """Mosquitto could not be found or started."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mosquitto_binary() -> str:
    """Path of the mosquitto executable, or a BrokerError that says how to install it."""
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and Path(candidate).exists():
            return candidate
    raise BrokerError(f"mosquitto not found on PATH or in /usr/sbin; {INSTALL_HINT}")


class Broker:
    """A Mosquitto process on 127.0.0.1:<port> with its own config and persistence dir."""

    def __init__(
        self,
        run_dir: Path | None = None,
        port: int | None = None,
        *,
        profile: SecureProfile | None = None,
        require_certificate: bool = False,
        extra_conf: str = "",
    ) -> None:
        self.profile = profile
        self.require_certificate = require_certificate
        # appended after everything else, e.g. a bridge section (deploy/mosquitto/bridge-site.conf)
        self.extra_conf = extra_conf
        self.run_dir = Path(run_dir or tempfile.mkdtemp(prefix="edgeloop-broker-"))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.conf_path = self.run_dir / "mosquitto.conf"
        self.log_path = self.run_dir / "mosquitto.log"
        # written at start: `python -m scripts.secure_profile add … --pid-file` SIGHUPs it
        self.pid_file = self.run_dir / "mosquitto.pid"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _write_conf(self) -> None:
        # Run as whoever launched it: as root, mosquitto would otherwise switch to the
        # `mosquitto` user, which can neither write this run dir nor keep the death signal.
        run = (
            f"\nuser {getpass.getuser()}\n"
            f"persistence_location {self.run_dir}/\n"
            f"log_dest file {self.log_path}\n"
        )
        if self.profile is None:
            base = REPO_CONF.read_text() + f"\nlistener {self.port} {self.host}\n"
        else:
            p = self.profile.check()
            base = render_conf(
                SECURE_CONF.read_text(),
                {
                    "password_file": str(p.passwd_file),
                    "acl_file": str(p.acl_file),
                    "listener": f"{self.port} {self.host}",
                    "cafile": str(p.ca_file),
                    "certfile": str(p.server_cert),
                    "keyfile": str(p.server_key),
                    "require_certificate": "true" if self.require_certificate else "false",
                    # client id = login; a template without it fails here, not in production
                    "use_username_as_clientid": "true",
                },
            )
            run += "persistence true\n"
        extra = f"\n{self.extra_conf}\n" if self.extra_conf else ""
        self.conf_path.write_text(base + run + extra)

    def start(self, timeout: float = 10.0) -> Broker:
        """Start mosquitto and wait until it accepts TCP connections."""
        binary = mosquitto_binary()
        try:
            self._write_conf()
        except ProfileError as exc:
            raise BrokerError(str(exc)) from exc
        self._proc = subprocess.Popen(
            [binary, "-c", str(self.conf_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, safe before exec
        )
        atexit.register(self.stop)
        self.pid_file.write_text(f"{self._proc.pid}\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                log = self.log_path.read_text() if self.log_path.exists() else ""
                raise BrokerError(
                    f"mosquitto exited with {self._proc.returncode} on port {self.port}: "
                    f"{err.strip()} {log.strip()[-500:]}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"mosquitto did not listen on {self.address} within {timeout:.0f} s")

    def stop(self) -> None:
        """Stop mosquitto (SIGTERM, then SIGKILL); saves its persistence file on the way."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGCONT)  # a paused broker would not see SIGTERM
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def restart(self) -> None:
        """Stop and start again on the same port with the same persistence (a broker restart)."""
        self.stop()
        self.start()

    def kill9(self) -> None:
        """Crash mosquitto (SIGKILL): no final save, so only its last autosave survives.

        `start()` then brings it back on the same port with the same persistence dir, as a
        service manager would after a crash.
        """
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.kill()
        proc.wait(timeout=5)

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): it stops reading sockets — a hung broker, for tests."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    @property
    def pid(self) -> int | None:
        """The running broker's pid (SIGHUP makes it re-read its password file and ACL)."""
        return None if self._proc is None else self._proc.pid

    def reload(self) -> None:
        """SIGHUP: Mosquitto re-reads the password file and the ACL, without a restart."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGHUP)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """Start a broker, write its port to --port-file, and run until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument("--port-file", type=Path, help="write the chosen port here")
    parser.add_argument("--run-dir", type=Path, help="config, log and persistence dir")
    parser.add_argument(
        "--secure",
        type=Path,
        metavar="DIR",
        help="run the secure profile made by `python -m scripts.secure_profile --out DIR`",
    )
    args = parser.parse_args(argv)
    profile = SecureProfile(args.secure.resolve()) if args.secure else None
    try:
        broker = Broker(run_dir=args.run_dir, port=args.port or None, profile=profile).start()
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.port_file:
        args.port_file.write_text(f"{broker.port}\n")
    print(f"mosquitto listening on {broker.address} (run dir {broker.run_dir})", flush=True)
    stop = False

    def _handle(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _handle)
    signal.signal(signal.SIGINT, _handle)
    while not stop and broker.running:
        time.sleep(0.2)
    broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
