"""Maintenance label events through a real Mosquitto: sent with `mosquitto_pub` (a client we did
not write) and with `python -m jetson_trainer label`, applied by a real node to the windows it
holds and to new ones, shipped as labeled drift batches, kept across a restart."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jetson_trainer.daemon.intake import Intake
from jetson_trainer.daemon.store import WindowStore
from pi_edge import EdgeService
from protocol import CLASSES, Status, Topics, Window, decode_window, encode_window

from ._model import EdgeModels
from .conftest import Listener, Publisher
from .test_service import _online, _window, service_factory  # noqa: F401 (a fixture)

pytestmark = pytest.mark.broker


class Trainer:
    """The trainer's real intake and store: stores the drift batches and acks them to the Pi."""

    def __init__(self, broker: Any, topics: Topics, path: Path) -> None:
        self.store = WindowStore(path / "store.sqlite")
        self.stop_event = threading.Event()
        self.intake = Intake(
            broker=broker.address,
            client_id=f"trainer-{time.time_ns()}",
            topics=topics,
            store=self.store,
            store_dir=path,
            offline_status=b"",
            stop=self.stop_event,
            on_connected=lambda: None,
        )
        self.intake.start()

    def labels(self) -> dict[tuple[str, int], int]:
        """(machine, seq) → label of every labeled window stored."""
        rows = self.store._file.read(
            lambda db: db.execute("SELECT frame FROM windows WHERE label IS NOT NULL").fetchall()
        )
        windows = [decode_window(bytes(frame)) for (frame,) in rows]
        return {(w.machine, w.seq): w.label for w in windows if w.label is not None}

    def wait_labeled(
        self, want: dict[tuple[str, int], int], timeout: float = 20.0
    ) -> dict[tuple[str, int], int]:
        deadline = time.monotonic() + timeout
        got = self.labels()
        while not all(got.get(k) == v for k, v in want.items()) and time.monotonic() < deadline:
            time.sleep(0.1)
            got = self.labels()
        return {k: v for k, v in got.items() if k[0] in {m for m, _ in want}}  # their machines

    def close(self) -> None:
        self.stop_event.set()
        self.intake.stop()
        self.intake.close()
        self.store.close()


def _send(
    publisher: Publisher, topics: Topics, models: EdgeModels, machine: str, seqs: range
) -> list[Window]:
    sent = []
    for seq in seqs:
        w = _window(models, machine, seq, label=False)
        publisher.publish(topics.window(machine), encode_window(w), qos=1)
        sent.append(w)
    return sent


def test_labels_reach_held_and_new_windows_and_survive_a_restart(
    service_factory: Callable[..., EdgeService],  # noqa: F811
    models: EdgeModels,
    broker: Any,
    topics: Topics,
    listen: Callable[..., Listener],
    publisher: Publisher,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    exe = shutil.which("mosquitto_pub")
    assert exe, "mosquitto_pub missing: sudo apt-get install -y mosquitto-clients"
    svc = service_factory(model=models.bundle_path, status_interval_s=0.3)
    node = svc.config.node
    status = listen(topics.status(node))
    _online(status, topics, node, 1)
    trainer = Trainer(broker, topics, tmp_path / "trainer")
    request.addfinalizer(trainer.close)

    # 1. ten unlabeled windows of m01, then a technician's late label for four of them
    past = _send(publisher, topics, models, "m01", range(10))
    deadline = time.monotonic() + 15
    while len(svc.labeler.held) < 10:
        assert time.monotonic() < deadline, "the node did not hold the windows"
        time.sleep(0.05)
    start, end = past[3].timestamp_ns / 1e9, past[7].timestamp_ns / 1e9
    event = (
        f'{{"v":1,"machine":"m01","class":"bearing_fault","from":{start!r},"to":{end!r},'
        f'"source":"mosquitto_pub"}}'
    )
    subprocess.run(
        [
            exe,
            "-h",
            broker.host,
            "-p",
            str(broker.port),
            "-q",
            "1",
            "-t",
            topics.labels,
            "-m",
            event,
        ],
        check=True,
        timeout=10,
    )
    want = {("m01", s): CLASSES.index("bearing_fault") for s in range(3, 7)}
    assert trainer.wait_labeled(want) == want

    # 2. poison on the label topic: counted, the node stays online; a class the machine's type
    # has not ("rust") is refused by the node (bad_label), a malformed name by the codec
    for bad in (
        b"{}",
        b'{"v":1,"machine":"m01","class":"rust","from":1}',
        b'{"v":1,"machine":"m01","class":"a/b","from":1}',
        b"\xff" * 10,
    ):
        publisher.publish(topics.labels, bad, qos=1)

    # 3. an open label sent with the trainer's CLI reaches every new window of m02
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "jetson_trainer",
            "label",
            "--machine",
            "m02",
            "--class",
            "pump_fault",
            "--from",
            "now-1m",
            "--broker",
            broker.address,
            "--prefix",
            topics.prefix,
            "--source",
            "technician anna",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    deadline = time.monotonic() + 10
    while not svc.labeler.book.open_labels():
        assert time.monotonic() < deadline, "the node did not take the CLI's label"
        time.sleep(0.05)
    _send(publisher, topics, models, "m02", range(100, 105))
    want2 = {("m02", s): CLASSES.index("pump_fault") for s in range(100, 105)}
    assert trainer.wait_labeled(want2) == want2

    def counted(msgs: list[tuple[str, bytes, bool]]) -> bool:
        for t, p, _ in reversed(msgs):
            if t == topics.status(node):
                s = Status.from_json(p)
                labels = s.detail.get("labels", {})
                return (
                    s.state == "online"
                    and labels.get("refused") == 4
                    and labels.get("open") == {"m02": "pump_fault"}
                )
        return False

    assert status.wait_for(counted, 10), "the status does not count the refused label events"
    errors = svc.status().errors
    kinds = ("bad_version", "bad_field", "bad_label", "bad_utf8")
    assert {k: errors.get(k) for k in kinds} == dict.fromkeys(kinds, 1)

    # 4. a restart keeps the open label: new windows of m02 are still labeled
    svc.stop()
    seen = len(status.messages)
    again = service_factory(model=models.bundle_path, status_interval_s=0.3, node=node)
    assert again.labeler.book.open_labels() == {"m02": "pump_fault"}
    assert status.wait_for(  # published once it has subscribed
        lambda msgs: any(Status.from_json(p).state == "online" for _, p, _ in msgs[seen:]), 15
    ), "the restarted node did not come online"
    _send(publisher, topics, models, "m02", range(200, 203))
    want3 = {("m02", s): CLASSES.index("pump_fault") for s in range(200, 203)}
    assert trainer.wait_labeled(want3) == want2 | want3
