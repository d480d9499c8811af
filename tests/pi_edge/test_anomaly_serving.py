"""Cold start on the edge (issue 24 item 4): a node serves an anomaly model the trainer made from
normal running only — same node, same bundle format — and raises `anomaly` states and events,
keeps and ships what it flags, and asks for the labels of what it flags; a technician's answers
naming a fault the model never knew reach the trainer, which grows the class list, and the node
learns the new class name from the bundle.

Real TensorFlow (the trainer's `run_train_anomaly`), real LiteRT on the node, a real Mosquitto.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jetson_trainer.build.anomaly import run_train_anomaly
from jetson_trainer.build.class_growth import grow
from jetson_trainer.build.interpreter import LiteModel
from pi_edge import EdgeService, Expected, vet_bundle
from pi_edge.errors import ModelError
from pi_edge.model.anomaly import AnomalyScorer
from protocol import (
    CHANNELS,
    CLASSES,
    DEFAULT_PREFIX,
    Bundle,
    Topics,
    Window,
    decode_bundle,
    encode_bundle,
    encode_window,
)
from protocol.drift_batch import decode_batch
from protocol.label_request import LabelRequests
from protocol.machine_state import MachineEvent, MachineState
from protocol.machine_type import DEFAULT_TYPE
from protocol.messages import Prediction
from sensor_sim.dataset import make_split

from ._model import EdgeModels
from .conftest import Listener, Publisher
from .test_service import service_factory  # noqa: F401 (a fixture)

N = 3  # --state-windows
NODE = "pi-cold"


@dataclasses.dataclass(frozen=True)
class Cold:
    bundle: Bundle  # unsigned, as the trainer wrote it (site DEFAULT_PREFIX)
    threshold: float
    normal: np.ndarray  # healthy windows the model scores well below the threshold
    faulty: np.ndarray  # fault windows (bearing_fault) it scores well above
    faulty_class: int
    history: np.ndarray  # the normal running it was trained on (the trainer's replay)
    holdout: np.ndarray  # other healthy windows (the growth gate's old-class holdout)
    unknown: np.ndarray  # drive_wear windows it flags: a fault no label will name here

    def signed(self, models: EdgeModels, version: int = 1, **changes: Any) -> bytes:
        m = dataclasses.replace(self.bundle.manifest, version=version, **changes)
        return encode_bundle(m, self.bundle.model, models.private_key.sign)


@pytest.fixture(scope="module")
def cold(tmp_path_factory: pytest.TempPathFactory) -> Cold:
    """An anomaly model trained on the healthy class of the simulator's machine only."""
    rng = np.random.default_rng(11)
    x, y = make_split("train", 1600, rng)
    normal = DEFAULT_TYPE.classes.index(DEFAULT_TYPE.normal)
    out = tmp_path_factory.mktemp("cold")
    run_train_anomaly(x[y == normal], None, out, kind=DEFAULT_TYPE, site=DEFAULT_PREFIX)
    bundle = decode_bundle((out / "model.bundle").read_bytes(), None, allow_unsigned=True)
    assert bundle.manifest.task == "anomaly" and bundle.manifest.anomaly is not None
    threshold = float(bundle.manifest.anomaly["threshold"])
    xt, yt = make_split("infer", 400, rng)
    scores = LiteModel(bundle.model, bundle.manifest.normalisation).predict(xt)[:, 0]
    fault = CLASSES.index("bearing_fault")
    calm, loud = (
        xt[(yt == normal) & (scores < threshold / 2)],
        xt[(yt == fault) & (scores > 2 * threshold)],
    )
    other = xt[(yt == CLASSES.index("drive_wear")) & (scores > 2 * threshold)]
    assert len(calm) >= 8 and len(loud) >= 8, "the anomaly model does not separate the test data"
    assert len(other) >= 8, "the anomaly model does not flag drive_wear"
    return Cold(
        bundle,
        threshold,
        calm[:8],
        loud[:8],
        fault,
        x[y == normal],
        xt[yt == normal][:200],
        other[:8],
    )


def test_a_node_vets_an_anomaly_bundle_and_refuses_one_whose_golden_scores_moved(
    cold: Cold, models: EdgeModels
) -> None:
    vetted = vet_bundle(
        cold.signed(models, site=DEFAULT_PREFIX),
        public_key=models.public_key,
        allow_unsigned=False,
        expected=Expected(CLASSES, CHANNELS, 60),
    )
    scorer = vetted.anomaly
    assert isinstance(scorer, AnomalyScorer) and vetted.classes == ("normal", "anomaly")
    probs = scorer.predict(np.concatenate([cold.normal, cold.faulty]))
    assert probs.argmax(axis=1).tolist() == [0] * 8 + [1] * 8
    assert np.all(scorer.last_ratio[8:] > 1.0) and np.all(scorer.last_ratio[:8] < 1.0)
    golden = [dict(g, probs=[g["probs"][0] * 1.01]) for g in cold.bundle.manifest.golden]
    with pytest.raises(ModelError) as err:  # a 1 % score change is far beyond float32's
        vet_bundle(
            cold.signed(models, site=DEFAULT_PREFIX, golden=golden),
            public_key=models.public_key,
            allow_unsigned=False,
            expected=Expected(CLASSES, CHANNELS, 60),
        )
    assert err.value.kind == "golden"


def _send(pub: Publisher, topics: Topics, machine: str, xs: np.ndarray, seq0: int) -> int:
    for i, x in enumerate(xs):
        w = Window(machine, seq0 + i, time.time_ns(), np.asarray(x, np.float32))
        pub.publish(topics.window(machine), encode_window(w), qos=1)
        time.sleep(0.02)
    return seq0 + len(xs)


@pytest.mark.broker
def test_an_anomaly_model_raises_anomaly_states_and_events_keeps_and_asks_for_what_it_flags(
    service_factory: Callable[..., EdgeService],  # noqa: F811
    cold: Cold,
    models: EdgeModels,
    topics: Topics,
    listen: Callable[..., Listener],
    publisher: Publisher,
    tmp_path: Path,
) -> None:
    bundle_path = tmp_path / "cold.bundle"
    bundle_path.write_bytes(cold.signed(models, site=topics.prefix))
    seen = listen(
        f"{topics.prefix}/machines/#", topics.drift_batches(NODE), topics.label_requests(NODE)
    )
    svc = service_factory(model=bundle_path, state_windows=N, batch_max=1, node=NODE)
    assert svc.wait_for_model(1, timeout=20)
    healthy, sick = "m01", "m02"
    s1 = _send(publisher, topics, healthy, cold.normal, 0)
    s2 = _send(publisher, topics, sick, cold.normal[:4], 0)
    s2 = _send(publisher, topics, sick, cold.faulty, s2)
    state_sick = topics.machine_state(sick, NODE)

    def sick_state(want: str) -> Callable[[list[tuple[str, bytes, bool]]], bool]:
        return lambda msgs: any(
            t == state_sick and MachineState.from_json(p).state == want for t, p, _ in msgs
        )

    assert seen.wait_for(sick_state("anomaly"), timeout=20), "no anomaly state"
    _send(publisher, topics, sick, cold.normal, s2)
    _send(publisher, topics, healthy, cold.normal, s1)
    event_sick = topics.machine_event(sick)
    assert seen.wait_for(
        lambda msgs: any(
            t == event_sick and MachineEvent.from_json(p).event == "anomaly_end" for t, p, _ in msgs
        ),
        timeout=20,
    ), "the machine did not return to normal"
    states = [MachineState.from_json(p).state for p in seen.on(state_sick)]
    changes = [s for i, s in enumerate(states) if i == 0 or s != states[i - 1]]  # drift: again
    assert changes == ["normal", "anomaly", "normal"]
    events = [MachineEvent.from_json(p) for p in seen.on(topics.machine_event(sick))]
    assert [e.event for e in events] == ["anomaly_start", "anomaly_end"]
    assert events[0].cls == "anomaly" and events[1].previous_class == "anomaly"
    assert {
        MachineState.from_json(p).state for p in seen.on(topics.machine_state(healthy, NODE))
    } == {"normal"}
    assert seen.on(topics.machine_event(healthy)) == []  # no false anomaly on the healthy one
    # predictions say so: class `anomaly` among (healthy, anomaly), ood_score = score/threshold
    preds = [Prediction.from_json(p) for p in seen.on(topics.prediction(sick))]
    flagged = [p for p in preds if p.label == "anomaly"]
    assert len(flagged) == len(cold.faulty) and all(p.ood and p.ood_score > 1 for p in flagged)
    assert {p.classes for p in preds} == {("normal", "anomaly")}
    assert all(p.label == "normal" for p in preds if p.seq < 4 or p.seq >= s2)
    # what it flags goes to the trainer (out of distribution, no predicted class of the type)
    assert seen.wait_for(lambda msgs: any(t == topics.drift_batches(NODE) for t, _, _ in msgs), 20)
    kept = [r for p in seen.on(topics.drift_batches(NODE)) for r in decode_batch(p).records]
    assert kept and all(r.window.machine == sick for r in kept)
    assert all(r.reason == "out_of_distribution" and r.predicted is None for r in kept)
    assert all(r.score > 1.0 for r in kept)
    # and it asks for the labels of what it flagged, in the model's words
    deadline = time.monotonic() + 20  # the plant streams on; the node looks every 2 s
    while not seen.on(topics.label_requests(NODE)) and time.monotonic() < deadline:
        s1 = _send(publisher, topics, healthy, cold.normal, s1)
    asked = [
        r for p in seen.on(topics.label_requests(NODE)) for r in LabelRequests.from_json(p).requests
    ]
    assert asked and all(r.machine == sick and r.predicted == "anomaly" for r in asked)
    assert all(s2 - len(cold.faulty) <= r.seq < s2 for r in asked)
    assert json.loads(seen.on(topics.prediction(sick))[-1])["model_version"] == 1


def _records(seen: Listener, topics: Topics) -> list[Any]:
    return [r for p in seen.on(topics.drift_batches(NODE)) for r in decode_batch(p).records]


@pytest.mark.broker
def test_labels_of_flagged_windows_grow_the_class_list_and_the_node_learns_the_new_class(
    service_factory: Callable[..., EdgeService],  # noqa: F811
    cold: Cold,
    models: EdgeModels,
    topics: Topics,
    listen: Callable[..., Listener],
    publisher: Publisher,
    tmp_path: Path,
) -> None:
    bundle_path = tmp_path / "cold.bundle"
    bundle_path.write_bytes(cold.signed(models, site=topics.prefix))
    seen = listen(
        f"{topics.prefix}/machines/#", topics.drift_batches(NODE), topics.label_requests(NODE)
    )
    svc = service_factory(model=bundle_path, state_windows=N, batch_max=1, node=NODE)
    assert svc.wait_for_model(1, timeout=20)
    healthy, sick = "m01", "m02"
    s2 = _send(publisher, topics, sick, cold.faulty, 0)
    s1, deadline = 0, time.monotonic() + 20
    while not seen.on(topics.label_requests(NODE)) and time.monotonic() < deadline:
        s1 = _send(publisher, topics, healthy, cold.normal, s1)
    asked = [
        r for p in seen.on(topics.label_requests(NODE)) for r in LabelRequests.from_json(p).requests
    ]
    assert asked, "the node did not ask for the labels of what it flagged"
    for r in asked:  # the technician: "that was a bearing fault" (a class no model knows yet)
        publisher.publish(topics.labels, r.label_event("bearing_fault").to_json())
    want = {(r.machine, r.seq) for r in asked}

    def labeled(msgs: list[tuple[str, bytes, bool]]) -> bool:
        got = {
            (r.window.machine, r.window.seq)
            for t, p, _ in msgs
            if t == topics.drift_batches(NODE)
            for r in decode_batch(p).records
            if r.window.label is not None
        }
        return want <= got

    assert seen.wait_for(labeled, timeout=20), "the labels did not reach a drift batch"
    records = [r for r in _records(seen, topics) if r.window.label is not None]
    assert {int(r.window.label) for r in records} == {CLASSES.index("bearing_fault")}
    # the trainer: labels index the type's declared classes; the anomaly model knew one
    names = [CLASSES[int(r.window.label)] for r in records]
    grown = grow(
        DEFAULT_TYPE,
        cold.bundle,
        cold.history,
        (cold.holdout, [DEFAULT_TYPE.normal] * len(cold.holdout)),
        (np.stack([r.window.data for r in records]), names),
        tmp_path / "v2",
        version=2,
        site=topics.prefix,
    )
    assert grown.classes == ("normal", "bearing_fault") and grown.gate.accepted
    assert grown.bundle_path is not None
    v2 = decode_bundle(grown.bundle_path.read_bytes(), None, allow_unsigned=True)
    assert v2.manifest.classes == ("normal", "bearing_fault") and v2.manifest.parent == 1
    assert v2.manifest.has_head and v2.manifest.task == "classify"  # the anomaly head
    head = grown.report["anomaly_head"]
    assert head["verdict_agreement"] >= 0.995 and head["argmax_agreement"] >= 0.995
    signed = encode_bundle(v2.manifest, v2.model, models.private_key.sign)
    publisher.publish(topics.model_current, signed, retain=True)
    assert svc.wait_for_model(2, timeout=20), "the node did not take the grown model"
    start = s2
    s2 = _send(publisher, topics, sick, cold.normal, s2)
    s2 = _send(publisher, topics, sick, cold.faulty, s2)
    other = "m03"  # a fault no label named yet, on a machine of its own
    s3 = _send(publisher, topics, other, cold.normal[:4], 0)
    s3 = _send(publisher, topics, other, cold.unknown, s3)
    pred_sick, pred_other = topics.prediction(sick), topics.prediction(other)
    assert seen.wait_for(
        lambda msgs: (
            sum(t == pred_sick and Prediction.from_json(p).seq >= start for t, p, _ in msgs)
            >= s2 - start
            and sum(t == pred_other for t, _, _ in msgs) >= s3
        ),
        timeout=20,
    )
    after = [p for b in seen.on(pred_sick) if (p := Prediction.from_json(b)).seq >= start]
    unknown = [Prediction.from_json(b) for b in seen.on(pred_other)]
    assert {p.classes for p in after + unknown} == {("normal", "bearing_fault", "anomaly")}
    assert {p.model_version for p in after + unknown} == {2}
    n = len(cold.normal)
    assert [p.label for p in after if p.seq - start < n] == ["normal"] * n  # healthy: healthy
    known = [p.label for p in after if p.seq - start >= n]
    assert known.count("bearing_fault") >= len(cold.faulty) - 1  # the known fault: its class
    assert [p.label for p in unknown] == ["normal"] * 4 + ["anomaly"] * len(cold.unknown)
    assert all(p.ood and p.ood_score > 1 for p in unknown if p.label == "anomaly")
    event_sick = topics.machine_event(sick)
    assert seen.wait_for(
        lambda msgs: any(
            t == event_sick and MachineEvent.from_json(p).cls == "bearing_fault" for t, p, _ in msgs
        ),
        timeout=20,
    ), "no fault event of the new class"
    event_other = topics.machine_event(other)
    assert seen.wait_for(
        lambda msgs: any(
            t == event_other and MachineEvent.from_json(p).event == "anomaly_start"
            for t, p, _ in msgs
        ),
        timeout=20,
    ), "the unknown fault raised no anomaly event after growth"
    # what the head flagged is kept and shipped for the trainer, like an anomaly model's
    assert seen.wait_for(
        lambda msgs: any(
            r.window.machine == other and r.reason == "out_of_distribution"
            for t, p, _ in msgs
            if t == topics.drift_batches(NODE)
            for r in decode_batch(p).records
        ),
        timeout=20,
    ), "the windows the head flagged were not shipped"
    shipped = [r for r in _records(seen, topics) if r.window.machine == other]
    assert all(r.predicted is None and r.window.seq >= 4 for r in shipped)  # `anomaly`


FAN_SITE = """
[[types]]
name = "fan"
channels = [{name = "vib_x", unit = "g", sample_hz = 1000.0},
            {name = "vib_y", unit = "g", sample_hz = 1000.0},
            {name = "current", unit = "A", sample_hz = 1000.0}]
sample_hz = 1000.0
window_length = 128
hop = 128
classes = ["ok", "imbalance", "misalignment", "looseness"]
normal = "ok"
machines = ["fan-*"]
"""


@pytest.mark.broker
def test_a_declared_type_s_cold_start_keeps_its_declared_classes_for_labels(
    service_factory: Callable[..., EdgeService],  # noqa: F811
    models: EdgeModels,
    topics: Topics,
    listen: Callable[..., Listener],
    publisher: Publisher,
    tmp_path: Path,
) -> None:
    """Another type than `default` (a site file's fan): its anomaly model knows `ok` only, yet
    the node keeps the fan's declared classes, so a technician's `imbalance` label of a flagged
    window is taken and shipped in the fan's drift batch (version 2) as imbalance's index."""
    from sensor_sim.kinds import FAN

    site = tmp_path / "site.toml"
    site.write_text(FAN_SITE)
    kind = FAN.kind
    assert kind.window_length == 128 and kind.channel_names == ("vib_x", "vib_y", "current")
    rng = np.random.default_rng(4)
    x, y = make_split("train", 1200, rng, FAN)
    out = tmp_path / "fan-v1"
    run_train_anomaly(x[y == 0], None, out, kind=kind, site=topics.prefix)
    bundle = decode_bundle((out / "model.bundle").read_bytes(), None, allow_unsigned=True)
    assert bundle.manifest.task == "anomaly" and bundle.manifest.classes == ("ok",)
    threshold = float(bundle.manifest.anomaly["threshold"])  # type: ignore[index]
    xt, yt = make_split("infer", 400, rng, FAN)
    scores = LiteModel(bundle.model, bundle.manifest.normalisation).predict(xt)[:, 0]
    imbalance = kind.classes.index("imbalance")
    calm = xt[(yt == 0) & (scores < threshold / 2)][:8]
    loud = xt[(yt == imbalance) & (scores > 2 * threshold)][:8]
    assert len(calm) == 8 and len(loud) == 8, "the fan's anomaly model does not separate them"
    signed = encode_bundle(bundle.manifest, bundle.model, models.private_key.sign)
    publisher.publish(topics.model_of("fan"), signed, retain=True)
    seen = listen(topics.drift_batches(NODE), topics.label_requests(NODE))
    svc = service_factory(site=site, types=("fan",), node=NODE, batch_max=1)
    try:
        assert svc.wait_for_model(1, timeout=20)
        s2 = _send(publisher, topics, "fan-2", loud, 0)
        s1, deadline = 0, time.monotonic() + 20
        while not seen.on(topics.label_requests(NODE)) and time.monotonic() < deadline:
            s1 = _send(publisher, topics, "fan-1", calm, s1)
        asked = [
            r
            for p in seen.on(topics.label_requests(NODE))
            for r in LabelRequests.from_json(p).requests
        ]
        assert asked and all(r.predicted == "anomaly" and r.machine == "fan-2" for r in asked)
        assert all(r.seq < s2 for r in asked)
        for r in asked:
            publisher.publish(topics.labels, r.label_event("imbalance").to_json())

        def labeled(msgs: list[tuple[str, bytes, bool]]) -> bool:
            return any(
                r.window.label is not None
                for t, p, _ in msgs
                if t == topics.drift_batches(NODE)
                for r in decode_batch(p).records
            )

        assert seen.wait_for(labeled, timeout=20), "the fan's labels did not reach a batch"
        batches = [decode_batch(p) for p in seen.on(topics.drift_batches(NODE))]
        assert {b.machine_type for b in batches} == {"fan"}
        got = {
            int(r.window.label) for b in batches for r in b.records if r.window.label is not None
        }
        assert got == {imbalance}
    finally:
        publisher.publish(topics.model_of("fan"), b"", retain=True)
