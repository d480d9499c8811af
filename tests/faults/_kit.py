"""The fault tests' kit: pi_edge and the trainer as real processes, a window feeder, a
watcher, and the ledgers that count what was sent, classified, stored, lost and duplicated.

Every process is a child of the test (PR_SET_PDEATHSIG, so none outlives a killed pytest) and
logs to the test's tmp dir. The trainer's model comes from one tiny training run per session,
in a subprocess, so that TensorFlow never loads into the test process.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from nodekit.mqtt import connect, make_client
from protocol import Status, Topics
from protocol.window import Window, encode_window
from scripts.broker import _die_with_parent
from sensor_sim.physics import generate

REPO = Path(__file__).resolve().parents[2]
FAST_RECONNECT_S = 0.2  # the test's own clients: back long before the nodes under test
NEVER_TRAIN = "1000000"  # --labels/--check-labels: the trainer's policy never fine-tunes

SITE = "plant-f/v1"  # every fault test's prefix: the kit's model is made for this site

# One signed v1, trained as the daemon trains its first model, bound to SITE (re-signed if the
# trainer did not bind it itself) so that a node with --prefix SITE accepts it.
_TRAIN = """
import dataclasses, sys
from pathlib import Path
from jetson_trainer.daemon.champion import load_original, public_key_of, train_initial
from jetson_trainer.build.keys import generate_keypair, load_private_key
from protocol import decode_bundle, encode_bundle
from sensor_sim.dataset import write_datasets
root, site = Path(sys.argv[1]), sys.argv[2]
write_datasets(root / "data", seed=0,
               sizes={"train": 600, "infer": 200, "drift_train": 4, "drift_infer": 4})
private, _ = generate_keypair(root / "keys")
path = train_initial(root / "models", load_original(root / "data"), private, epochs=3)
bundle = decode_bundle(path.read_bytes(), public_key_of(private))
if getattr(bundle.manifest, "site", site) != site:
    manifest = dataclasses.replace(bundle.manifest, site=site)
    path.write_bytes(encode_bundle(manifest, bundle.model, load_private_key(private).sign))
"""


def child_env() -> dict[str, str]:
    """This environment without EDGELOOP_* settings (they would leak into the children)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGELOOP_")}
    env.update(PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3", COLUMNS="160")
    return env


@dataclass(frozen=True, slots=True)
class Kit:
    """A signed v1 model as the trainer keeps it (`v0001/`), and its key pair."""

    models: Path  # copied into each trainer's store: a trainer may write to its own
    private_key: Path
    public_key: Path


def train_kit(root: Path) -> Kit:
    """Tiny data, a key pair and a 3-epoch signed v1 under `root` (~8 s, in a subprocess)."""
    done = subprocess.run(
        [sys.executable, "-c", _TRAIN, str(root), SITE],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"training the fault tests' model failed:\n{done.stderr[-3000:]}")
    keys = root / "keys"
    return Kit(root / "models", keys / "trainer_ed25519.pem", keys / "trainer_ed25519.pub.pem")


# ---------------------------------------------------------------------- processes
class Child:
    """One node as a subprocess (`python -m …`), its output in `log`."""

    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None

    def start(self) -> Child:
        self._out = self.log.open("ab")
        self._out.write(f"--- start {time.strftime('%H:%M:%S')}: {' '.join(self.argv)}\n".encode())
        self._out.flush()
        self.proc = subprocess.Popen(
            self.argv,
            cwd=REPO,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, safe before exec
        )
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def freeze(self) -> None:
        """SIGSTOP: the process holds its sockets but reads and acknowledges nothing."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGSTOP)

    def kill9(self) -> None:
        """SIGKILL: no handler runs, no status is published, nothing is flushed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._close_log()

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (the node shuts down cleanly), SIGKILL if it hangs; returns the exit code."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a frozen process would not see SIGTERM
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self._close_log()
        return None if proc is None else proc.returncode

    def _close_log(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def tail(self, lines: int = 25) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass(slots=True)
class Nodes:
    """Builds and starts pi_edge and trainer processes for one test; kills them at teardown."""

    kit: Kit
    tmp: Path
    prefix: str
    children: list[Child]

    def edge(self, broker: str, state_dir: Path, node: str = "pi-fault") -> Child:
        argv = [
            sys.executable, "-m", "pi_edge", "run",
            "--broker", broker, "--prefix", self.prefix, "--node", node,
            "--public-key", str(self.kit.public_key), "--state-dir", str(state_dir),
            "--no-dashboard", "--status-interval", "0.5",
        ]  # fmt: skip
        return self._start(node, argv)

    def trainer(self, broker: str, store: Path, client_id: str = "trainer-fault") -> Child:
        models = store / "models"
        if not models.exists():
            shutil.copytree(self.kit.models, models)
        argv = [
            sys.executable, "-m", "jetson_trainer", "serve",
            "--store", str(store), "--private-key", str(self.kit.private_key),
            "--broker", broker, "--prefix", self.prefix, "--client-id", client_id,
            "--no-dashboard", "--labels", NEVER_TRAIN, "--check-labels", NEVER_TRAIN,
        ]  # fmt: skip
        return self._start(client_id, argv)

    def _start(self, name: str, argv: list[str]) -> Child:
        child = Child(name, argv, self.tmp / f"{name}.log").start()
        self.children.append(child)
        return child

    def tails(self) -> str:
        """The end of each node's log (a restarted node's runs share one log)."""
        seen: dict[Path, Child] = {c.log: c for c in self.children}
        return "\n".join(f"==== {c.log.name} ====\n{c.tail()}" for c in seen.values())


# ---------------------------------------------------------------------- MQTT helpers
def _fast_client(name: str, address: str) -> Any:
    client: Any = make_client(f"{name}-{time.time_ns()}")
    client.reconnect_delay_set(FAST_RECONNECT_S, FAST_RECONNECT_S)  # float seconds work
    return client


class Feeder:
    """A sensor gateway: publishes windows round-robin over `machines` at QoS 0, every
    `labeled_every`-th with its ground truth, and remembers the id of each labeled window it
    handed to a connected client. It reconnects within `FAST_RECONNECT_S`."""

    def __init__(
        self, address: str, topics: Topics, machines: int = 8, labeled_every: int = 2
    ) -> None:
        rng = np.random.default_rng(7)
        self._labels = np.arange(64) % 4
        self._data = generate(self._labels, rng)
        self._machines = [f"m{i:02d}" for i in range(machines)]
        self._topics = [topics.window(m) for m in self._machines]
        self._labeled_every = labeled_every
        self._n = 0
        self.sent = 0
        self.not_connected = 0
        self.sent_labeled: list[str] = []  # "machine:seq", the ledger's key
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.client = _fast_client("feeder", address)
        connect(self.client, address)
        self.client.loop_start()

    def wait_connected(self, timeout: float = 10.0) -> None:
        wait_until(self.client.is_connected, timeout, "the feeder connecting")

    def send_one(self) -> bool:
        i = self._n
        self._n += 1
        k = i % len(self._machines)
        machine, seq = self._machines[k], i // len(self._machines)
        labeled = i % self._labeled_every == 0
        j = i % len(self._labels)
        window = Window(
            machine,
            seq,
            time.time_ns(),
            self._data[j],
            label=int(self._labels[j]) if labeled else None,
        )
        if not self.client.is_connected():
            self.not_connected += 1
            return False
        if self.client.publish(self._topics[k], encode_window(window), qos=0).rc != 0:
            self.not_connected += 1
            return False
        self.sent += 1
        if labeled:
            self.sent_labeled.append(f"{machine}:{seq}")
        return True

    def send(self, n: int, per_s: float = 400.0) -> None:
        """Publish `n` windows (connected or not), paced at `per_s`."""
        for _ in range(n):
            self.send_one()
            time.sleep(1.0 / per_s)

    def stream(self, per_s: float) -> Feeder:
        """Publish at `per_s` on a thread until `stop_stream()`."""

        def run() -> None:
            next_t = time.monotonic()
            while not self._stop.is_set():
                self.send_one()
                next_t += 1.0 / per_s
                self._stop.wait(max(0.0, next_t - time.monotonic()))

        self._stop.clear()
        self._thread = threading.Thread(target=run, name="feeder", daemon=True)
        self._thread.start()
        return self

    def stop_stream(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def close(self) -> None:
        self.stop_stream()
        self.client.disconnect()
        self.client.loop_stop()


class Watcher:
    """Subscribes to predictions and statuses (reconnecting within `FAST_RECONNECT_S`) and
    notes when each prediction arrived and every status of every node."""

    def __init__(self, address: str, topics: Topics) -> None:
        self._topics = topics
        self._lock = threading.Lock()
        self.prediction_times: list[float] = []
        self.statuses: list[tuple[float, Status]] = []  # (monotonic arrival, status)
        self.client = _fast_client("watcher", address)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        connect(self.client, address)
        self.client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        client.subscribe([(self._topics.predictions(), 0), (self._topics.statuses(), 1)])

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        now = time.monotonic()
        if msg.topic.endswith("/prediction"):
            with self._lock:
                self.prediction_times.append(now)
            return
        with contextlib.suppress(Exception):  # a test helper: a bad status just isn't noted
            status = Status.from_json(msg.payload)
            with self._lock:
                self.statuses.append((now, status))

    def first_prediction_after(self, t: float) -> float | None:
        with self._lock:
            return next((p for p in self.prediction_times if p > t), None)

    def predictions_after(self, t: float) -> int:
        with self._lock:
            return sum(1 for p in self.prediction_times if p > t)

    def latest(self, node: str, after: float = 0.0) -> Status | None:
        """The newest status of `node` that arrived after monotonic time `after`."""
        with self._lock:
            got = [s for t, s in self.statuses if s.node == node and t > after]
        return got[-1] if got else None

    def wait_online(
        self, node: str, after: float, timeout: float, model: int | None = None
    ) -> float:
        """Seconds until `node` said `online` (serving `model`, if given) after `after`."""

        def ok() -> bool:
            s = self.latest(node, after)
            return (
                s is not None
                and s.state == "online"
                and (model is None or s.model_version == model)
            )

        return wait_until(
            ok, timeout, f"{node} reporting online" + (f" with v{model}" if model else "")
        )

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained(address: str, topic: str, timeout: float = 10.0) -> tuple[bytes, bool]:
    """(payload, retain flag) of the first message a new subscriber to `topic` gets."""
    got: list[tuple[bytes, bool]] = []
    ready = threading.Event()
    client = _fast_client("retained", address)
    client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)

    def on_message(c: Any, u: Any, msg: Any) -> None:
        got.append((bytes(msg.payload), bool(msg.retain)))
        ready.set()

    client.on_message = on_message
    connect(client, address)
    client.loop_start()
    try:
        if not ready.wait(timeout):
            raise AssertionError(f"nothing retained on {topic} within {timeout:.0f} s")
        return got[0]
    finally:
        client.disconnect()
        client.loop_stop()


class ShipperGate:
    """A TCP relay to the broker that turns away any client whose CONNECT packet carries
    `blocked` (pi_edge's shipper is `<node>-batches`): the node classifies on its main
    connection while its kept windows pile up in its durable buffer."""

    def __init__(self, broker_port: int, blocked: bytes = b"-batches") -> None:
        self._target = ("127.0.0.1", broker_port)
        self._blocked = blocked
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.refused = 0
        self.relayed = 0
        self._socks: list[socket.socket] = [self._listener]
        self._closed = False
        threading.Thread(target=self._accept, name="gate-accept", daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._socks.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            first = conn.recv(65536)  # paho writes CONNECT in one send; it arrives whole
            if not first or self._blocked in first:
                self.refused += 1
                conn.close()
                return
            up = socket.create_connection(self._target)
        except OSError:
            conn.close()
            return
        self._socks.append(up)
        self.relayed += 1
        up.sendall(first)
        threading.Thread(target=_pump, args=(up, conn), daemon=True).start()
        _pump(conn, up)

    def close(self) -> None:
        self._closed = True
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


# ---------------------------------------------------------------------- ledgers
def _read(path: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows of `sql` from SQLite file `path`, read-only (never checkpoints the owner's WAL)."""
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute(sql).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):  # its owner is still creating the schema
            return []
        raise
    finally:
        db.close()


def classified_labeled(state_dir: Path) -> list[str]:
    """'machine:seq' of each labeled window in pi_edge's prediction history (one per row)."""
    rows = _read(
        state_dir / "history.sqlite", "SELECT machine, seq FROM predictions WHERE truth IS NOT NULL"
    )
    return [f"{m}:{s}" for m, s in rows]


def buffered(state_dir: Path) -> list[tuple[str, int, int]]:
    """(window id, labeled, inflight token) of every row in pi_edge's durable buffer."""
    return [
        (str(i), int(lab), int(inf))
        for i, lab, inf in _read(
            state_dir / "buffer.sqlite", "SELECT id, labeled, inflight FROM kept"
        )
    ]


def stored_labeled(store: Path) -> list[str]:
    """'machine:seq' of each labeled row in the trainer's window store (one per row)."""
    rows = _read(store / "windows.sqlite", "SELECT id FROM windows WHERE label IS NOT NULL")
    return [str(i).rsplit(":", 1)[0] for (i,) in rows]


def key_of(wid: str) -> str:
    """'machine:seq' of a window id 'machine:seq:timestamp_ns' (protocol.window_id)."""
    return wid.rsplit(":", 1)[0]


@dataclass(frozen=True, slots=True)
class Tally:
    """What one fault test measured, in the words of issue 11."""

    fault: str
    sent: int  # labeled windows the feeder handed to a connected client
    classified: int  # distinct labeled windows pi_edge classified (or buffered)
    stored: int  # distinct labeled windows in the trainer's store
    lost: int  # classified but not stored
    duplicated: int  # store rows beyond one per window
    recover_s: float
    note: str = ""

    @classmethod
    def of(
        cls,
        fault: str,
        sent: list[str],
        classified: list[str],
        stored: list[str],
        recover_s: float,
        note: str = "",
    ) -> Tally:
        got = Counter(stored)
        return cls(
            fault,
            len(sent),
            len(set(classified)),
            len(got),
            len(set(classified) - set(got)),
            sum(n - 1 for n in got.values()),
            recover_s,
            note,
        )

    def line(self) -> str:
        return (
            f"[fault] {self.fault}: windows sent {self.sent} / classified {self.classified} / "
            f"stored {self.stored} / lost {self.lost} / duplicated {self.duplicated}; "
            f"recovered in {self.recover_s:.1f} s{'; ' + self.note if self.note else ''}"
        )


def wait_until(cond: Callable[[], bool], timeout: float, what: str, poll: float = 0.05) -> float:
    """Poll `cond` until true; seconds it took, or AssertionError naming `what`."""
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(poll)
    return time.monotonic() - start


def poll(cond: Callable[[], bool], timeout: float, every: float = 0.1) -> float | None:
    """Seconds until `cond()` held, or None if it did not within `timeout` (the caller's ledger
    then says what is missing)."""
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            return None
        time.sleep(every)
    return time.monotonic() - start


def delivered(state_dir: Path, store: Path) -> bool:
    """No labeled window left in pi_edge's buffer, and every one it classified is stored."""
    if any(labeled for _, labeled, _ in buffered(state_dir)):
        return False
    return set(classified_labeled(state_dir)) <= set(stored_labeled(store))


def secs(s: float | None, timeout: float) -> str:
    """A `poll` result for a report line.

    >>> secs(1.234, 45), secs(None, 45)
    ('1.2 s', 'never (45 s)')
    """
    return f"never ({timeout:.0f} s)" if s is None else f"{s:.1f} s"


def settle(read: Callable[[], int], quiet_s: float = 1.0, timeout: float = 30.0) -> int:
    """`read()` once it stopped changing for `quiet_s` (e.g. history rows after the stream)."""
    last, since = read(), time.monotonic()
    deadline = since + timeout
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
    return last


__all__ = [
    "SITE",
    "Child",
    "Feeder",
    "Kit",
    "Nodes",
    "ShipperGate",
    "Tally",
    "Watcher",
    "buffered",
    "classified_labeled",
    "delivered",
    "key_of",
    "poll",
    "retained",
    "secs",
    "settle",
    "stored_labeled",
    "train_kit",
    "wait_until",
]
