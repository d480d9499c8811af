"""`make demo`: broker, trainer, pi_edge and simulator in one tmux session, torn down on exit.

Starts a private Mosquitto on a free loopback port, makes a signing key and seed-style data if
missing, then opens tmux with one pane per role (each pane shows that role's dashboard). The
trainer pane trains an initial model if none exists and publishes it retained; pi_edge picks it
up. A fourth pane, full width at the bottom, runs the operator's console (`python -m console`)
over all of them. Detach or quit tmux (Ctrl-b d), or Ctrl-C here, and everything started is stopped.

`--signals` (`make demo-signals`) runs it with per-signal readings: the simulator publishes one
message per sample and channel on the topics of deploy/signals.example.toml (the seed machines)
and deploy/signals.fan.example.toml (2 fans), and pi_edge assembles each type's windows (4 seed
machines at 1 window/s unless --machines/--hz say otherwise; not with --secure, whose ACL
grants sensors the window topics only).

`--secure` (`make demo-secure`) runs the same in the secure profile: the broker takes only TLS
and one identity per device (a development CA and certificates are made once in RUN_DIR/secure
by scripts/secure_profile.py, which enrolls the demo's four devices: DEMO_IDENTITIES), and each
pane logs in as its device from that identity's env file — the simulator as `sim-1`, pi_edge as
node `pi-demo`, the trainer as `trainer-demo`, the console as `ops-demo`. While it runs,
`python -m scripts.secure_profile add pi-2 --role edge --out RUN_DIR/secure` enrolls one more
device and `revoke pi-2` removes it: the running broker reloads without a restart.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from protocol import DEFAULT_PREFIX
from scripts.broker import Broker, BrokerError
from scripts.secure_profile import ProfileError, SecureProfile, enroll, make_profile, set_reload

REPO = Path(__file__).resolve().parent.parent
PY = str(REPO / ".venv" / "bin" / "python")
SESSION = "edgeloop"
PRIVATE_KEY, PUBLIC_KEY = "trainer_ed25519.pem", "trainer_ed25519.pub.pem"
# pane → (identity, role) of the secure demo; an identity's name is its node id
DEMO_IDENTITIES = {
    "simulator": ("sim-1", "sensor"),
    "pi_edge": ("pi-demo", "edge"),
    "trainer": ("trainer-demo", "trainer"),
    "trainer_fan": ("trainer-fan", "trainer"),  # the fans' lineage: a device of its own
    "console": ("ops-demo", "operator"),
}
SIGNALS_FILE = REPO / "deploy" / "signals.example.toml"
FAN_SIGNALS_FILE = REPO / "deploy" / "signals.fan.example.toml"  # the fans' readings
SIGNAL_FANS = 2  # fans in the signals demo: a window's 384 readings per tick each
SITE_FILE = REPO / "deploy" / "site.example.toml"  # the mixed site: seed machines and fans
FANS = 4


def _tmux(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["tmux", *args], check=check, capture_output=True, text=True)


def pane_commands(
    run: Path,
    port: int,
    machines: int,
    hz: float,
    profile: SecureProfile | None = None,
    signals: Path | None = None,
) -> dict[str, str]:
    """Shell command for each pane; every one ends in a shell so a crash stays readable.

    With a secure profile each pane first loads its identity's env file (login, password file,
    CA, node id).
    With a signals file the simulator publishes per-signal readings and pi_edge assembles them.
    """
    broker = f"127.0.0.1:{port}"
    keys, model, data = run / "keys", run / "model", run / "data"
    q = shlex.quote
    trainer = (
        f"{PY} -m jetson_trainer serve --broker {broker} --store {q(str(run / 'trainer'))} "
        f"--models {q(str(model))} --data {q(str(data))} --private-key "
        f"{q(str(keys / PRIVATE_KEY))}"
    )
    # the fans' lineage: a second daemon for machine type "fan" (deploy/site.example.toml)
    trainer_fan = (
        f"{PY} -m jetson_trainer serve --broker {broker} --store {q(str(run / 'trainer-fan'))} "
        f"--models {q(str(run / 'model-fan'))} --data {q(str(run / 'data-fan'))} --private-key "
        f"{q(str(keys / PRIVATE_KEY))} --site-file {q(str(SITE_FILE))} --machine-type fan "
        "--client-id trainer-fan --no-dashboard"
    )
    # --window-labels all: the demo's simulator is the site's trusted source of ground truth,
    # said explicitly (a node that logs in, as in --secure, trusts no in-band label by default)
    edge = (
        f"{PY} -m pi_edge run --broker {broker} --public-key {q(str(keys / PUBLIC_KEY))} "
        f"--state-dir {q(str(run / 'edge'))} --node pi-demo --window-labels all"
    )
    # faults come and go every ~30 s so that the few labels cover every class
    sim = (
        f"{PY} -m sensor_sim run --broker {broker} --machines {machines} --hz {hz} "
        "--fault-mtbf 30 --repair-mean 30"
    )
    # a mixed site: the fans beside the seed machines, one node for both
    edge += f" --site {q(str(SITE_FILE))}"
    if signals is None:
        sim += f" --fans {FANS}"
    else:  # one reading per message both ways, a signals file per type (pi_edge/README.md)
        files = q(f"{signals},{FAN_SIGNALS_FILE}")
        sim += f" --fans {SIGNAL_FANS} --signals {files}"
        edge += f" --signals {files}"
    # the operator's console (console/): every machine and node, sparklines, the loop's timeline
    console = f"{PY} -m console --broker {broker} --log-file {q(str(run / 'console.log'))}"
    keep = "; echo; echo '[exited — press Enter to close]'; read -r _"
    commands = {"simulator": sim, "pi_edge": edge, "trainer": trainer, "console": console}
    commands["trainer_fan"] = trainer_fan
    if profile is not None:
        for pane, (name, _) in DEMO_IDENTITIES.items():
            if pane not in commands:
                continue
            login = f"set -a; . {q(str(profile.env_file(name)))}; set +a; "
            commands[pane] = login + commands[pane]
    return {pane: command + keep for pane, command in commands.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-dir", type=Path, default=REPO / "runs" / "demo")
    parser.add_argument("--machines", type=int, default=os.environ.get("DEMO_MACHINES"))
    parser.add_argument("--hz", type=float, default=os.environ.get("DEMO_HZ"))
    parser.add_argument(
        "--signals",
        action="store_true",
        help=f"per-signal readings ({SIGNALS_FILE.relative_to(REPO)}): the simulator publishes "
        "one message per sample and channel, pi_edge assembles windows; defaults to 4 machines "
        "at 1 window/s (960 messages/s) instead of 16 at 10",
    )
    parser.add_argument("--no-attach", action="store_true", help="do not attach to tmux")
    parser.add_argument(
        "--secure",
        action="store_true",
        help="the secure profile: TLS, one identity per device, the ACL (in RUN_DIR/secure)",
    )
    args = parser.parse_args(argv)
    if args.signals and args.secure:
        print(
            "error: --signals with --secure: the secure profile's ACL lets sensors publish "
            "window topics only; run the signals demo without --secure",
            file=sys.stderr,
        )
        return 2
    if shutil.which("tmux") is None:
        print(
            "error: tmux not found; install it with: sudo apt-get install -y tmux", file=sys.stderr
        )
        return 2
    run: Path = args.run_dir.resolve()
    run.mkdir(parents=True, exist_ok=True)
    if _tmux("has-session", "-t", SESSION, check=False).returncode == 0:
        print(
            f"error: a tmux session '{SESSION}' already runs; stop it with "
            f"`tmux kill-session -t {SESSION}`",
            file=sys.stderr,
        )
        return 2
    profile = None
    try:
        if args.secure:
            profile = secure_demo_profile(run / "secure")
        broker = Broker(
            run_dir=run / ("broker-secure" if profile else "broker"), profile=profile
        ).start()
        if profile is not None:  # `add`/`revoke` on this profile reload this broker
            set_reload(profile, pid_file=broker.pid_file)
    except (BrokerError, ProfileError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    env_line = f"export EDGELOOP_BROKER=127.0.0.1:{broker.port}"
    print(f"edgeloop demo: mosquitto on {broker.address}; run dir {run}", flush=True)
    stop = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        prepare(run)
        machines = int(args.machines or (4 if args.signals else 16))
        hz = float(args.hz or (1 if args.signals else 10))
        signals = SIGNALS_FILE if args.signals else None
        commands = pane_commands(run, broker.port, machines, hz, profile, signals)
        _tmux(
            "new-session",
            "-d",
            "-s",
            SESSION,
            "-x",
            "220",
            "-y",
            "80",
            "-n",
            "edgeloop",
            "-c",
            str(REPO),
        )
        _tmux("set-option", "-t", SESSION, "remain-on-exit", "off")
        _tmux("set-environment", "-t", SESSION, "EDGELOOP_BROKER", f"127.0.0.1:{broker.port}")
        first = f"{SESSION}:edgeloop.0"
        _tmux("send-keys", "-t", first, f"{env_line}; {commands['simulator']}", "Enter")
        _tmux("split-window", "-t", first, "-h", "-c", str(REPO))
        _tmux(
            "send-keys",
            "-t",
            f"{SESSION}:edgeloop.1",
            f"{env_line}; {commands['pi_edge']}",
            "Enter",
        )
        _tmux("split-window", "-t", f"{SESSION}:edgeloop.1", "-v", "-c", str(REPO))
        _tmux(
            "send-keys",
            "-t",
            f"{SESSION}:edgeloop.2",
            f"{env_line}; {commands['trainer']}",
            "Enter",
        )
        # the console below the three, full width (pane 3): it needs the room
        _tmux("split-window", "-t", first, "-v", "-f", "-l", "55%", "-c", str(REPO))
        _tmux(
            "send-keys",
            "-t",
            f"{SESSION}:edgeloop.3",
            f"{env_line}; {commands['console']}",
            "Enter",
        )
        if "trainer_fan" in commands:  # the fans' trainer beside the seed machines' (pane 4)
            _tmux("split-window", "-t", f"{SESSION}:edgeloop.2", "-h", "-c", str(REPO))
            _tmux(
                "send-keys",
                "-t",
                f"{SESSION}:edgeloop.3",
                f"{env_line}; {commands['trainer_fan']}",
                "Enter",
            )
        _tmux("select-pane", "-t", first)
        print(
            f"tmux session '{SESSION}': simulator (top left), pi_edge (top right), trainer "
            "(middle right; the fans' trainer beside it), operator console (bottom). A mixed "
            f"site ({SITE_FILE.relative_to(REPO)}): {machines} seed machines m01… and "
            f"{SIGNAL_FANS if signals else FANS} fans fan-01…, "
            "one pi_edge for both types. Keys in the simulator pane: d = step "
            "drift, o = drift off, l = technician labels on/off. In the console (pane 3): d/c "
            "drift on/off the selected machine, l label it, tab + b roll a node back, q quit."
        )
        if profile is None:
            print(f"Watch the wire: mosquitto_sub -p {broker.port} -t '{DEFAULT_PREFIX}/#' -v")
        else:
            ops = DEMO_IDENTITIES["console"][0]
            print(
                f"Secure profile in {profile.dir} (TLS, one identity per device). Watch the wire "
                f"as the operator (its `~cli` login: `{ops}` itself is the console's): "
                f"mosquitto_sub -p {broker.port} --cafile {profile.ca_file} "
                f'-u {ops}~cli -P "$(cat {profile.password_file(ops)})" '
                f"-t '{DEFAULT_PREFIX}/#' -v\n"
                f"Enroll another Pi: .venv/bin/python -m scripts.secure_profile add pi-2 --role "
                f"edge --out {profile.dir}  (then `revoke pi-2`; the broker reloads, no restart)"
            )
        inside_tmux = bool(os.environ.get("TMUX"))  # attach would refuse to nest
        if not args.no_attach and sys.stdin.isatty() and not inside_tmux:
            subprocess.run(["tmux", "attach-session", "-t", SESSION], check=False)
        else:
            if inside_tmux and not args.no_attach:
                _tmux("switch-client", "-t", SESSION, check=False)
            print(f"attach with: tmux attach -t {SESSION}; Ctrl-C here stops the demo", flush=True)
            while not stop and _tmux("has-session", "-t", SESSION, check=False).returncode == 0:
                time.sleep(0.5)
    finally:
        _tmux("kill-session", "-t", SESSION, check=False)
        broker.stop()
        print("edgeloop demo stopped: tmux session and broker are gone.")
    return 0


def secure_demo_profile(path: Path) -> SecureProfile:
    """The demo's profile in `path`: made once, with each of DEMO_IDENTITIES enrolled."""
    profile = SecureProfile(path)
    if profile.missing():
        profile = make_profile(path)
    enrolled = profile.roles()
    for name, role in DEMO_IDENTITIES.values():
        if name not in enrolled:
            enroll(profile, name, role)
    return profile


def prepare(run: Path) -> None:
    """Key pair and seed-style data set, made once per run dir."""
    keys = run / "keys"
    if not (keys / PUBLIC_KEY).exists():
        subprocess.run([PY, "-m", "jetson_trainer", "keygen", "--out", str(keys)], check=True)
    data = run / "data"
    if not (data / "train_data.npy").exists():
        subprocess.run(
            [PY, "-m", "sensor_sim", "dataset", "--out", str(data), "--seed", "42"], check=True
        )
    fans = run / "data-fan"  # the fans' history: classes.json names machine type "fan"
    if not (fans / "train_data.npy").exists():
        fan = ["--machine-type", "fan", "--size", "train=2000", "--size", "infer=400"]
        subprocess.run(
            [PY, "-m", "sensor_sim", "dataset", "--out", str(fans), "--seed", "42", *fan],
            check=True,
        )


if __name__ == "__main__":
    sys.exit(main())
