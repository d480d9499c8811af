"""Real recorded data the whole way round the loop, live (issue 24 item 7): BasicMotions
(tests/realdata/basic_motions.py: a smart watch's 6 channels, 4 activities, in the data set's own
channel and class names) → `jetson_trainer import` of a historian export and an activity log →
`train` makes the signed first model, which the typed trainer daemon (`serve --site-file F
--machine-type wrist`) publishes on the type's model topic → pi_edge, serving the type from the
site file (real Mosquitto, real LiteRT), classifies the archive's test cases in the data set's
class names → a sensor drift injected (the gyroscope's zero-rate offset moves by +2 rad/s on
every axis) → an activity log entry per case as maintenance label events in the data set's class
names (one naming a class the type has not is refused) → the node ships the labeled windows as
drift batches of the type → the daemon fine-tunes, gates and publishes v2 on the type's model
topic → the node hot-swaps, and the drifted test cases are classified again. Accuracy and
macro-F1 are measured on the predictions the node published, beside the published 1-NN
baselines."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from jetson_trainer.__main__ import main as trainer_main
from jetson_trainer.build.keys import generate_keypair
from jetson_trainer.daemon.serve import ServeConfig, TrainerDaemon
from nodekit.settings import build
from pi_edge import EdgeConfig, EdgeService
from protocol import Topics, Window, decode_bundle, encode_window, load_public_key
from protocol.labels import LabelEvent
from scripts.broker import Broker
from scripts.tools import ToolMissingError, installed

from ..pi_edge.conftest import Listener, Publisher
from ..realdata import basic_motions as bm
from ._loop import wait_until

pytestmark = [pytest.mark.broker, pytest.mark.tensorflow, pytest.mark.timeout(300)]

GYRO_OFFSET = np.array([0.0, 0.0, 0.0, 2.0, 2.0, 2.0], np.float32)  # rad/s, the injected drift
ROUND_1 = 2  # labeled drifted cases per class that show the trainer its champion is wrong


def _macro_f1(truth: list[str], predicted: list[str], classes: tuple[str, ...]) -> float:
    scores = []
    for c in classes:
        tp = sum(t == c and p == c for t, p in zip(truth, predicted, strict=True))
        fp = sum(t != c and p == c for t, p in zip(truth, predicted, strict=True))
        fn = sum(t == c and p != c for t, p in zip(truth, predicted, strict=True))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


class _Node:
    """Sends windows of one machine and reads back the node's predictions of them."""

    def __init__(self, pub: Publisher, lst: Listener, topics: Topics) -> None:
        self.pub, self.lst, self.topics = pub, lst, topics

    def send(self, machine: str, x: np.ndarray, seq0: int, ts0_ns: int, step_ns: int) -> None:
        for i, case in enumerate(x):
            window = Window(machine, seq0 + i, ts0_ns + i * step_ns, np.asarray(case, np.float32))
            self.pub.publish(self.topics.window(machine), encode_window(window), qos=1)

    def predictions(self, machine: str, seqs: range, timeout: float = 30.0) -> list[dict]:
        topic = self.topics.prediction(machine)

        def found() -> dict[int, dict]:
            out = {}
            for p in self.lst.on(topic):
                pred = json.loads(p)
                if pred["seq"] in seqs:
                    out[pred["seq"]] = pred
            return out

        assert self.lst.wait_for(lambda _: len(found()) == len(seqs), timeout), (
            f"the node did not classify all {len(seqs)} windows of {machine}"
        )
        got = found()
        return [got[s] for s in seqs]


def test_basic_motions_round_the_loop_live(broker: Broker, topics: Topics, tmp_path: Path) -> None:
    try:
        motions = bm.load(installed("real-data").path("wheel"))
    except ToolMissingError as exc:  # `make test` installs it; a bare pytest may not have
        pytest.fail(str(exc))
    kind = bm.machine_type()
    classes = kind.classes
    site = tmp_path / "site.toml"
    site.write_text(bm.SITE_TOML)
    signals, log = bm.historian_files(motions, tmp_path)
    data = tmp_path / "data"
    started = time.monotonic()
    assert (
        trainer_main(
            [
                "import",
                str(signals),
                "--maintenance",
                str(log),
                "--out",
                str(data),
                "--site-file",
                str(site),
                "--machine-type",
                "wrist",
                "--sample-hz",
                "10",
                "--holdout",
                "0.5",
                "--channel-map",
                bm.channel_map(),
            ]
        )
        == 0
    )
    private, public = generate_keypair(tmp_path / "keys")
    # `train` (every variant converted: int8 ships only if it agrees, else float16) writes the
    # signed v1 where the daemon keeps its versions; the daemon serves it as its champion
    v1 = tmp_path / "trainer" / "models" / "v0001"
    keys = ["--private-key", str(private), "--prefix", topics.prefix]
    assert trainer_main(["train", "--data", str(data), "--out", str(v1), "--seed", "1", *keys]) == 0
    daemon = TrainerDaemon(
        ServeConfig(
            broker=broker.address,
            prefix=topics.prefix,
            store=tmp_path / "trainer",
            private_key=private,
            data=data,
            client_id=f"trainer-wrist-{time.time_ns()}",
            dashboard=False,
            tick_s=0.2,
            labels_needed=32,
            labels_per_class=4,  # trains on 4 cases per class; the rest of them go to the gate
            check_labels=4 * ROUND_1,
            finetune_epochs=30,
            site_file=site,
            machine_type="wrist",
        )
    )
    edge = EdgeService(
        build(
            EdgeConfig,
            broker=broker.address,
            prefix=topics.prefix,
            node="pi-wrist",
            public_key=public,
            state_dir=tmp_path / "edge",
            dashboard=False,
            status_interval_s=0.5,
            site=site,
            types=("wrist",),
            batch_wait_ms=1.0,
            label_requests_per_min=0,
        ),
        public_key=load_public_key(public),
    )
    pub = Publisher(broker.address, f"pub-{time.time_ns()}")
    lst = Listener(broker.address, [topics.predictions()], f"lst-{time.time_ns()}")
    node = _Node(pub, lst, topics)
    try:
        daemon.start().start_policy()
        edge.start()
        lane = edge.lanes.lanes[0]
        wait_until(lambda: lane.manager.version == 1, 180, "the wrist model v1 reaching pi_edge")
        v1_live = time.monotonic() - started
        wrist = edge.lane_loops["wrist"]
        assert lane.machine_type is not None and lane.machine_type.classes == classes

        names = list(classes)
        x_test = motions["TEST"][0]
        y_test = list(motions["TEST"][1])
        x_train, y_train = motions["TRAIN"][0], list(motions["TRAIN"][1])
        now_ns = time.time_ns()
        step = 10 * 10**9  # a case is 10 s of the watch

        def scored(preds: list[dict]) -> tuple[float, float]:
            labels = [p["label"] for p in preds]
            acc = float(np.mean([p == t for p, t in zip(labels, y_test, strict=True)]))
            return acc, _macro_f1(y_test, labels, classes)

        # v1 on the archive's test cases, as recorded: in the data set's own class names
        node.send("wearer-1", x_test, 0, now_ns - 3600 * 10**9, step)
        clean = node.predictions("wearer-1", range(40))
        assert {tuple(p["classes"]) for p in clean} == {classes}
        assert {p["machine_type"] for p in clean} == {"wrist"}
        assert {p["model_version"] for p in clean} == {1}
        assert {p["label"] for p in clean} <= set(names)
        v1_clean = scored(clean)

        # the drift: the gyroscope's zero-rate offset moves; v1 on the drifted test cases
        node.send("wearer-3", x_test + GYRO_OFFSET, 0, now_ns - 1800 * 10**9, step)
        v1_drifted = scored(node.predictions("wearer-3", range(40)))

        # a label in a class the type has not: refused, naming its classes
        bad = LabelEvent("wearer-2", "bearing_fault", time.time() - 900.0, source="tech")
        pub.publish(topics.labels, bad.to_json())
        wait_until(lambda: wrist.stats()["refused"] == 1, 10, "the refused label event")

        # the activity log of the drifted training cases, as maintenance label events in the
        # data set's class names; round 1 shows the trainer its champion is wrong (or the
        # node's drift report did), round 2 arrives while it collects labels
        base = time.time() - 1200.0
        order = [[i for i, y in enumerate(y_train) if y == c] for c in names]
        rounds = ([o[:ROUND_1] for o in order], [o[ROUND_1:] for o in order])
        seq = 0
        for n_round, picks in enumerate(rounds):
            for k, (c, cases) in enumerate(zip(names, picks, strict=True)):
                start = base + seq * 10.0
                end = start + 10.0 * len(cases)
                pub.publish(
                    topics.labels,
                    LabelEvent("wearer-2", c, start, end, source="activity log").to_json(),
                )
                wait_until(
                    lambda s=start, k=k: (
                        wrist.labeler is not None
                        and wrist.labeler.book.label_at("wearer-2", s) == k
                    ),
                    10,
                    f"the label event of {c}",
                )
                xs = x_train[cases] + GYRO_OFFSET
                node.send("wearer-2", xs, seq, int(start * 1e9), step)
                seq += len(cases)
            if n_round == 0:
                wait_until(lambda: daemon.policy.collecting, 60, "the trainer's fine-tune trigger")
        wait_until(lambda: lane.manager.version == 2, 240, "v2 reaching pi_edge")
        v2_live = time.monotonic() - started
        served = decode_bundle(
            (tmp_path / "edge" / "types" / "wrist" / "models" / "current.bundle").read_bytes(),
            load_public_key(public),
        )
        m = served.manifest
        assert (m.version, m.parent, m.type_name, m.classes) == (2, 1, "wrist", classes)
        stats = wrist.stats()
        assert stats["events"] == 8 and stats["windows_labeled"] >= 4 * 10

        # v2 on the same drifted test cases, and on the clean ones
        node.send("wearer-3", x_test + GYRO_OFFSET, 100, now_ns - 600 * 10**9, step)
        after = node.predictions("wearer-3", range(100, 140))
        assert {p["model_version"] for p in after} == {2}
        v2_drifted = scored(after)
        node.send("wearer-1", x_test, 100, now_ns - 300 * 10**9, step)
        v2_clean = scored(node.predictions("wearer-1", range(100, 140)))
        print(
            f"\nBasicMotions live on pi_edge (wrist type, LiteRT, {m.quantization}): v1 on the "
            f"clean test cases accuracy {v1_clean[0]:.3f} macro-F1 {v1_clean[1]:.3f}; "
            f"gyro offset +2 rad/s: v1 {v1_drifted[0]:.3f} / {v1_drifted[1]:.3f} → v2 "
            f"{v2_drifted[0]:.3f} / {v2_drifted[1]:.3f} (clean under v2 {v2_clean[0]:.3f} / "
            f"{v2_clean[1]:.3f}); v2 fine-tuned on {m.extra.get('labels_used')} labels; v1 live "
            f"{v1_live:.0f} s, v2 live {v2_live:.0f} s after the start; published "
            f"{bm.PUBLISHED}"
        )
        assert v1_clean[0] >= 0.9, "v1 on the clean test cases"
        assert v1_drifted[0] <= v1_clean[0] - 0.2, "the injected drift does not hurt v1"
        assert v2_drifted[0] >= 0.9 and v2_drifted[0] >= v1_drifted[0] + 0.2
        assert v2_clean[0] >= 0.9, "v2 forgot the undrifted cases"
    finally:
        lst.close()
        pub.close()
        edge.stop()
        daemon.stop()
