"""A real node on a real Mosquitto asks for labels: drifted, low-confidence traffic makes it
publish a label request (decoded by a second paho client), the answer to one requested window
labels exactly that held window (the trainer's real store gets it labeled, its neighbours not),
and the status carries the label-free accuracy estimate."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pi_edge import EdgeService
from protocol import CLASSES, Status, Topics, Window, encode_window
from protocol.label_request import LabelRequests

from ._model import EdgeModels
from .conftest import Listener, Publisher
from .test_label_events import Trainer
from .test_service import _online, _status_where, service_factory  # noqa: F401 (a fixture)

pytestmark = pytest.mark.broker


def _drifted(models: EdgeModels, machine: str, seq: int) -> Window:
    """A window halfway between a normal and a pump-fault window: the model is unsure of it
    (mean confidence ~0.7 on the test model, against 0.999 on clean windows)."""
    normal = np.flatnonzero(models.y_test == 0)
    pump = np.flatnonzero(models.y_test == 3)
    a, b = normal[seq % len(normal)], pump[seq % len(pump)]
    x = ((models.x_test[a] + models.x_test[b]) / 2).astype(np.float32)
    return Window(machine, seq, time.time_ns(), x)


def test_a_drifted_node_asks_for_labels_and_the_answer_labels_that_window(
    service_factory: Callable[..., EdgeService],  # noqa: F811
    models: EdgeModels,
    broker: Any,
    topics: Topics,
    listen: Callable[..., Listener],
    publisher: Publisher,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    svc = service_factory(
        model=models.bundle_path,
        status_interval_s=0.3,
        label_requests_per_min=4,
        label_requests_per_machine=2,
    )
    node = svc.config.node
    status = listen(topics.status(node))
    asks = listen(topics.all_label_requests())
    _online(status, topics, node, 1)
    trainer = Trainer(broker, topics, tmp_path / "trainer")
    request.addfinalizer(trainer.close)

    # 1. clean traffic: confident, the estimate is high, nothing is asked
    for seq in range(30):
        i = seq % len(models.x_test)
        w = Window("m01", seq, time.time_ns(), models.x_test[i])
        publisher.publish(topics.window("m01"), encode_window(w), qos=1)
    clean = _status_where(
        status, topics, node, lambda s: (s.detail.get("estimate") or {}).get("windows") == 30
    )
    assert clean.detail["estimate"]["accuracy_est"] > 0.95
    assert clean.detail["estimate"]["method"] == "doc"  # the test manifest has no quantiles
    time.sleep(2.5)  # one more check interval of the asker
    assert asks.on(topics.label_requests(svc.config.node)) == [], "a sure node asked for labels"

    # 2. drifted traffic on three machines: unsure windows, a low estimate, a request
    sent: dict[tuple[str, int], Window] = {}
    for seq in range(100, 140):
        for machine in ("m02", "m03", "m04"):
            w = _drifted(models, machine, seq)
            sent[(machine, seq)] = w
            publisher.publish(topics.window(machine), encode_window(w), qos=1)
    assert asks.wait_for(lambda msgs: len(msgs) >= 1, timeout=20), "no label request came"
    first = LabelRequests.from_json(asks.on(topics.label_requests(svc.config.node))[0])
    assert first.node == node
    picked = first.requests
    assert 1 <= len(picked) <= 4
    per_machine = {m: sum(r.machine == m for r in picked) for m in {r.machine for r in picked}}
    assert max(per_machine.values()) <= 2
    for r in picked:
        assert r.machine in ("m02", "m03", "m04"), f"a sure window was asked for: {r}"
        w = sent[(r.machine, r.seq)]
        assert r.start == w.timestamp_ns / 1e9 and r.end > r.start
        assert r.confidence < 0.95 and r.predicted in CLASSES
    unsure = _status_where(
        status,
        topics,
        node,
        lambda s: ((s.detail.get("estimate") or {}).get("accuracy_est") or 1.0) < 0.9,
    )
    assert unsure.detail["labels"]["requests"]["windows"] >= len(picked)

    # 3. the answer to one request: exactly that held window is labeled and shipped
    target = picked[0]
    truth = CLASSES.index("drive_wear")  # any class: what matters is which window gets it
    publisher.publish(topics.labels, target.label_event("drive_wear", "test").to_json(), qos=1)
    want = {(target.machine, target.seq): truth}
    got = trainer.wait_labeled(want)
    assert got == want, f"labeled in the trainer's store: {got}"  # its neighbours stay unlabeled

    # 4. the budget: at most 4 windows in the minute, however unsure the node stays
    time.sleep(3.0)
    total = sum(
        len(LabelRequests.from_json(p).requests)
        for p in asks.on(topics.label_requests(svc.config.node))
    )
    assert total <= 4
    last: Status = _status_where(
        status, topics, node, lambda s: (s.detail.get("estimate") or {}).get("windows") == 150
    )
    est = last.detail["estimate"]
    assert est["model_version"] == 1 and est["accuracy_est"] < 0.9
    assert est["labeled"] == 0 and est["labeled_accuracy"] is None  # no window came labeled


def test_the_simulator_answers_what_the_node_asks_and_those_windows_reach_the_trainer(
    service_factory: Callable[..., EdgeService],  # noqa: F811
    models: EdgeModels,
    broker: Any,
    topics: Topics,
    listen: Callable[..., Listener],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """The loop without any in-band label: a drifting simulator (no ground truth in its
    windows), a node that asks, the simulator as the technician (`--answer-label-requests`),
    the trainer's real store. Every window the store gets labeled was asked for, and carries the
    class the simulator really gave it (m02 has a pump fault, the others run normally)."""
    import threading

    from protocol import Command
    from sensor_sim import FleetConfig, SimConfig, Simulator

    sim = Simulator(
        SimConfig(
            broker=broker.address,
            prefix=topics.prefix,
            fleet=FleetConfig(machines=3, label_fraction=0.0, mtbf_s=0.0),
            hz=10.0,
            seed=3,
            answer_label_requests=True,
            label_answer_delay_s=0.3,
            dashboard=False,
        )
    ).start()
    stop = threading.Event()
    thread = threading.Thread(target=sim.run, args=(stop,), daemon=True)

    def close_sim() -> None:
        stop.set()
        thread.join(10)
        sim.close()

    request.addfinalizer(close_sim)
    sim.send_command(Command("fault", machines=("m02",), state="pump_fault"))
    sim.send_command(Command("drift", mode="gain", params={"power": 1.5}))
    thread.start()
    deadline = time.monotonic() + 10
    while sim.snapshot().machines[1].state != "pump_fault":
        assert time.monotonic() < deadline, "the simulator did not take the fault"
        time.sleep(0.05)
    asks = listen(topics.all_label_requests())
    trainer = Trainer(broker, topics, tmp_path / "trainer")
    request.addfinalizer(trainer.close)
    svc = service_factory(
        model=models.bundle_path,
        status_interval_s=0.3,
        label_requests_per_min=6,
        label_requests_per_machine=2,
    )

    def n_asked(msgs: list[tuple[str, bytes, bool]]) -> int:
        return sum(len(LabelRequests.from_json(p).requests) for _, p, _ in msgs)

    # the budget (6 a minute) fills within a few checks; then nothing more is asked for 60 s
    assert asks.wait_for(lambda msgs: n_asked(msgs) >= 6, timeout=30), "the node asked < 6"
    asked = {
        (r.machine, r.seq)
        for p in asks.on(topics.label_requests(svc.config.node))
        for r in LabelRequests.from_json(p).requests
    }
    truth = {
        m: CLASSES.index("pump_fault" if m == "m02" else "normal") for m in ("m01", "m02", "m03")
    }
    want = {(m, s): truth[m] for m, s in asked}
    got = trainer.wait_labeled(want, timeout=20)
    assert got == want  # exactly the windows asked for, each with its true class
    assert len(want) == 6 and len({m for m, _ in want}) == 3  # spread over the machines
    answers = sim.status().detail["label_answers"]
    assert answers["answered"] == len(want) and answers["unknown"] == 0
    assert svc.labeler.stats()["windows_labeled"] == len(want)
