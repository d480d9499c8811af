"""Machine state and events through a real Mosquitto, seen by paho and by `mosquitto_sub`."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from pi_edge import EdgeService, Expected, vet_bundle
from protocol import CHANNELS, CLASSES, Topics, Window, encode_window
from protocol.machine_state import MachineEvent, MachineState
from sensor_sim.physics import generate

from ._model import EdgeModels
from .conftest import Listener, Publisher
from .test_service import _online, service_factory  # noqa: F401 (a fixture)

pytestmark = pytest.mark.broker
N = 3  # --state-windows
PAUSE_S = 0.6  # between the phases: a lower bound for each phase's duration


def _confident(models: EdgeModels, cls: int) -> np.ndarray:
    """A test window the model itself puts in class `cls` with confidence ≥ 0.8."""
    vetted: Any = vet_bundle(
        models.bundle(1),
        public_key=models.public_key,
        allow_unsigned=False,
        expected=Expected(CLASSES, CHANNELS, 60),
    )
    probs = vetted.classifier.predict(models.x_test)
    hits = np.flatnonzero((probs.argmax(axis=1) == cls) & (probs.max(axis=1) >= 0.8))
    assert hits.size, f"the test model has no confident window of {CLASSES[cls]}"
    return np.asarray(models.x_test[hits[0]])


def _mosquitto_sub(broker: Any, *args: str) -> list[str]:
    exe = shutil.which("mosquitto_sub")
    assert exe, "mosquitto_sub missing: sudo apt-get install -y mosquitto-clients"
    return [exe, "-h", broker.host, "-p", str(broker.port), "-V", "mqttv5", *args]


def test_state_is_retained_once_per_change_and_fault_events_carry_durations(
    service_factory: Callable[..., EdgeService],  # noqa: F811
    models: EdgeModels,
    broker: Any,
    topics: Topics,
    listen: Callable[..., Listener],
    publisher: Publisher,
) -> None:
    normal, fault = _confident(models, 0), _confident(models, 1)
    machine = "m01"
    svc = service_factory(model=models.bundle_path, state_windows=N)
    state_topic = topics.machine_state(machine, svc.config.node)
    event_topic = topics.machine_event(machine)
    status = listen(topics.status(svc.config.node))
    _online(status, topics, svc.config.node, 1)
    seen = listen(state_topic, event_topic)
    # the real client: 3 states + 2 events, then it exits. The first state is retained, so it
    # gets it once whether it subscribed before or after; once it printed that, it hears all.
    sub = subprocess.Popen(
        [
            *_mosquitto_sub(broker, "-q", "1", "-t", state_topic, "-t", event_topic),
            *("-F", "MSG %r %t %p", "-C", "5", "-W", "60"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    seq = 0

    def send(data: np.ndarray) -> None:
        nonlocal seq
        for _ in range(2 * N):
            window = Window(machine, seq, 0, data)
            publisher.publish(topics.window(machine), encode_window(window), qos=1)
            seq += 1

    try:
        assert sub.stdout is not None
        send(normal)
        first = sub.stdout.readline()  # mosquitto_sub flushes each message
        assert first.startswith("MSG ") and state_topic in first, first
        time.sleep(PAUSE_S)
        send(fault)
        time.sleep(PAUSE_S)
        send(normal)
        assert seen.wait_for(
            lambda msgs: sum(t == event_topic for t, _, _ in msgs) >= 2, timeout=20
        ), f"got {seen.messages}"
        rest, _ = sub.communicate(timeout=30)
        out = first + rest
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.communicate()
    time.sleep(0.3)  # nothing more may follow

    states = [MachineState.from_json(p) for p in seen.on(state_topic)]
    events = [MachineEvent.from_json(p) for p in seen.on(event_topic)]
    assert [(s.state, s.cls) for s in states] == [
        ("normal", "normal"),
        ("fault", "bearing_fault"),
        ("normal", "normal"),
    ]
    assert all(s.machine == machine and s.node == svc.config.node for s in states)
    assert all(s.model_version == 1 and s.drift in ("ok", "suspect", "drift") for s in states)
    assert states[1].since >= states[0].since + PAUSE_S
    assert [(e.event, e.previous_class, e.cls) for e in events] == [
        ("fault_start", "normal", "bearing_fault"),
        ("fault_end", "bearing_fault", "normal"),
    ]
    for e, s in zip(events, states[1:], strict=True):
        assert PAUSE_S <= e.duration_s <= 15.0  # type: ignore[operator]
        assert (e.ts, e.confidence) == (s.ts, s.confidence)
    assert events[1].duration_s == pytest.approx(states[2].since - states[1].since, abs=1e-3)
    order = [t for t, _, _ in seen.messages]
    assert order == [state_topic, state_topic, event_topic, state_topic, event_topic]

    # mosquitto_sub saw the same five messages, byte for byte
    lines = [line.split(" ", 3) for line in out.splitlines() if line.startswith("MSG ")]
    assert [(t, p) for _, _, t, p in lines] == [(t, p.decode()) for t, p, _ in seen.messages], out
    # a late subscriber finds exactly the last state, retained
    late = subprocess.run(
        _mosquitto_sub(broker, "-t", state_topic, "-F", "%r %p", "-C", "1", "-W", "10"),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    print(out, late.stdout, sep="")  # with -s: the captured messages
    flag, payload = late.stdout.strip().split(" ", 1)
    assert flag == "1" and MachineState.from_json(payload) == states[-1]
    retained = listen(state_topic, event_topic)
    assert retained.wait_for(lambda msgs: len(msgs) >= 1, timeout=10)
    time.sleep(0.3)
    assert [(t, r) for t, _, r in retained.messages] == [(state_topic, True)]
    assert json.loads(retained.messages[0][1])["class"] == "normal"


def test_a_change_of_drift_alone_publishes_the_state_again_without_an_event(
    service_factory: Callable[..., EdgeService],  # noqa: F811
    models: EdgeModels,
    topics: Topics,
    listen: Callable[..., Listener],
    publisher: Publisher,
) -> None:
    """The class holds (bearing_fault) while the machine drifts: the retained state is published
    again with the new drift level, same class, since and confidence; no event is sent."""
    machine = "m01"
    svc = service_factory(model=models.bundle_path, state_windows=N)
    state_topic = topics.machine_state(machine, svc.config.node)
    event_topic = topics.machine_event(machine)
    status = listen(topics.status(svc.config.node))
    _online(status, topics, svc.config.node, 1)
    seen = listen(state_topic, event_topic)
    rng = np.random.default_rng(3)
    seq = 0

    def send(regime: str, n: int) -> None:
        nonlocal seq
        for x in generate(np.ones(n, np.int64), rng, regime):  # bearing_fault in either regime
            publisher.publish(topics.window(machine), encode_window(Window(machine, seq, 0, x)))
            seq += 1

    send("standard", 2 * N)
    assert seen.wait_for(lambda msgs: len(msgs) >= 2, timeout=20), seen.messages
    first = MachineState.from_json(seen.on(state_topic)[0])
    assert (first.state, first.cls, first.drift) == ("fault", "bearing_fault", "ok")
    for _ in range(40):  # until the node's drift verdict for the machine moves
        send("drift", 10)
        if seen.wait_for(lambda _: len(seen.on(state_topic)) >= 2, timeout=1.0):
            break
    deadline = time.monotonic() + 20  # every window sent is classified: nothing more follows
    while svc.status().metrics["classified"] < seq:
        assert time.monotonic() < deadline, "the node did not classify every window"
        time.sleep(0.05)
    time.sleep(0.3)
    states = [MachineState.from_json(p) for p in seen.on(state_topic)]
    assert len(states) >= 2, f"no drift after {seq} windows: {svc.snapshot().machines}"
    again = states[1]
    assert again.drift in ("suspect", "drift")
    assert (again.state, again.cls, again.since, again.confidence, again.model_version) == (
        first.state,
        first.cls,
        first.since,
        first.confidence,
        first.model_version,
    )
    assert again.ts >= first.ts
    assert [MachineEvent.from_json(p).event for p in seen.on(event_topic)] == ["fault_start"]
    late = listen(state_topic)  # what a new subscriber (Home Assistant) finds: the drifted one
    assert late.wait_for(lambda msgs: len(msgs) >= 1, timeout=10)
    assert late.messages[0][2] and MachineState.from_json(late.messages[0][1]) == states[-1]
