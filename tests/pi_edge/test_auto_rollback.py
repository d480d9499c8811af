"""Automatic rollback on a real broker with real TFLite models: a validly signed but bad model is
rolled back by the node itself within the watch, reported in its status and never re-installed
from the retained topic; a good model fine-tuned for a drift stays."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nodekit.settings import build
from pi_edge import EdgeConfig, EdgeService
from protocol import Status, Topics, Window, encode_window
from protocol.node_command import NodeCommand
from sensor_sim.physics import generate

from ._model import EdgeModels
from ._variants import variant
from .conftest import Listener, Publisher

pytestmark = [pytest.mark.broker, pytest.mark.tensorflow]

log = logging.getLogger(__name__)
MACHINES = ("m01", "m02", "m03", "m04")


class Feeder:
    """Publishes windows of one regime from four machines at about `rate` per second (QoS 0),
    every `label_every`-th with its true class, until stopped."""

    def __init__(
        self,
        pub: Publisher,
        topics: Topics,
        regime: str,
        *,
        rate: float = 200.0,
        label_every: int = 4,
        seed: int = 0,
    ) -> None:
        rng = np.random.default_rng(seed)
        self.y = rng.integers(0, 4, 2000)
        self.x = generate(self.y, rng, regime)
        self._pub, self._topics = pub, topics
        self._rate, self._label_every = rate, label_every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feeder", daemon=True)
        self.sent = 0

    def __enter__(self) -> Feeder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        tick = 0.05
        per_tick = max(1, round(self._rate * tick))
        while not self._stop.wait(tick):
            for _ in range(per_tick):
                i = self.sent % len(self.y)
                machine = MACHINES[self.sent % len(MACHINES)]
                label = int(self.y[i]) if self.sent % self._label_every == 0 else None
                w = Window(machine, self.sent, time.time_ns(), self.x[i], label)
                self._pub.client.publish(self._topics.window(machine), encode_window(w), qos=0)
                self.sent += 1


def _config(broker: Any, topics: Topics, models: EdgeModels, state_dir: Path, **kw: Any) -> Any:
    return build(
        EdgeConfig,
        broker=broker.address,
        prefix=topics.prefix,
        node="pi-watch",
        public_key=models.public_key_path,
        state_dir=state_dir,
        dashboard=False,
        status_interval_s=0.3,
        model=models.bundle_path,
        **kw,
    )


def _wait(cond: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _health(svc: EdgeService) -> dict[str, Any]:
    health: dict[str, Any] = svc.models.health_detail()["model_health"]
    return health


def _baseline_ready(svc: EdgeService, labeled: int = 40) -> bool:
    serving = _health(svc)["serving"]
    return bool(serving["windows"] >= 500 and serving["labeled"] >= labeled)


def _last_status(listener: Listener, topics: Topics, node: str) -> Status:
    return Status.from_json(listener.on(topics.status(node))[-1])


def test_a_confidently_wrong_model_is_rolled_back_by_the_node_within_the_watch(
    broker: Any,
    topics: Topics,
    models: EdgeModels,
    publisher: Publisher,
    listen: Any,
    tmp_path: Path,
) -> None:
    bad = variant(models, "permuted", 2, topics.prefix)  # as confident as v1, wrong everywhere
    watch_s = 30.0
    listener = listen(topics.status("pi-watch"))
    state = tmp_path / "edge"
    config = _config(broker, topics, models, state, watch_s=watch_s)
    with (
        EdgeService(config, public_key=models.public_key) as svc,
        Feeder(publisher, topics, "infer"),
    ):
        assert svc.wait_for_model(1, 20)
        assert _wait(lambda: _baseline_ready(svc), 30), _health(svc)
        before = _health(svc)["serving"]
        assert before["accuracy"] >= 0.9, before  # v1 is good on this data

        publisher.publish(topics.model_current, bad, retain=True)
        assert svc.wait_for_model(2, 30), "the bad v2 was not installed"
        swapped = time.monotonic()
        watching = _health(svc)
        assert watching["watching"] == 2 and watching["against"] == 1
        assert watching["verdict"] == "watching"

        assert svc.wait_for_model(1, watch_s), "the node did not roll back within the watch"
        rolled_back = time.monotonic() - swapped
        log.warning("swap to the bad v2 → back on v1: %.2f s", rolled_back)
        print(f"\nswap → rollback: {rolled_back:.2f} s ({_health(svc)['reason']})")
        health = _health(svc)
        assert health["verdict"] == "worse" and health["signal"] == "accuracy", health
        assert health["since_swap"] is None and health["watching"] is None
        assert health["auto_rollbacks"] == 1 and health["operator_rollbacks"] == 0
        assert "labeled accuracy" in health["reason"]

        def reported(msgs: list[tuple[str, bytes, bool]]) -> bool:
            s = Status.from_json(msgs[-1][1])
            return s.model_version == 1 and bool(s.detail.get("rollbacks"))

        assert listener.wait_for(reported, 10)
        status = _last_status(listener, topics, "pi-watch")
        (entry,) = status.detail["rollbacks"]
        assert (entry["from"], entry["to"], entry["auto"]) == (2, 1, True)
        assert "labeled accuracy" in entry["reason"] and len(entry["reason"]) <= 200
        assert abs(entry["ts"] - time.time()) < 60
        assert status.detail["model_health"]["verdict"] == "worse"
        assert "rollback_failed" not in status.errors
        assert json.loads((state / "models" / "blocked.json").read_text())["versions"] == [2]

        # the retained v2 comes again (as on every reconnect): ignored, v1 keeps serving
        publisher.publish(topics.model_current, bad, retain=True)
        time.sleep(1.5)
        assert svc.model_version == 1
        assert _health(svc)["verdict"] == "worse"

    # a restart on the same state dir: v1 from disk, the retained v2 stays blocked
    with EdgeService(config, public_key=models.public_key) as again:
        assert again.wait_for_model(1, 20)
        assert _wait(lambda: again.broker_state == "connected", 10)
        time.sleep(2.0)  # the retained v2 has arrived and been vetted by now
        assert again.model_version == 1
        (entry,) = again.status().detail["rollbacks"]
        assert (entry["from"], entry["auto"]) == (2, True)
    publisher.publish(topics.model_current, b"", retain=True)


def test_an_unsure_model_is_rolled_back_on_confidence_when_no_labels_come(
    broker: Any, topics: Topics, models: EdgeModels, publisher: Publisher, tmp_path: Path
) -> None:
    bad = variant(models, "shuffled", 2, topics.prefix)
    config = _config(broker, topics, models, tmp_path / "edge", watch_s=30.0)
    with (
        EdgeService(config, public_key=models.public_key) as svc,
        Feeder(
            publisher,
            topics,
            "infer",
            label_every=10**9 + 7,  # only window 0 is labeled
        ),
    ):
        assert svc.wait_for_model(1, 20)
        assert _wait(lambda: _health(svc)["serving"]["windows"] >= 500, 30)
        publisher.publish(topics.model_current, bad, retain=True)
        assert svc.wait_for_model(2, 30)
        swapped = time.monotonic()
        assert svc.wait_for_model(1, 30), "the unsure v2 was not rolled back"
        print(f"\nswap → rollback on confidence: {time.monotonic() - swapped:.2f} s")
        health = _health(svc)
        assert health["verdict"] == "worse" and health["signal"] == "confidence", health
        (entry,) = svc.status().detail["rollbacks"]
        assert entry["auto"] is True and "mean confidence" in entry["reason"]
    publisher.publish(topics.model_current, b"", retain=True)


def test_a_model_fine_tuned_for_the_drift_passes_its_watch_and_stays(
    broker: Any, topics: Topics, models: EdgeModels, publisher: Publisher, tmp_path: Path
) -> None:
    good = variant(models, "finetuned", 2, topics.prefix)
    watch_s = 8.0
    config = _config(broker, topics, models, tmp_path / "edge", watch_s=watch_s)
    with (
        EdgeService(config, public_key=models.public_key) as svc,
        Feeder(publisher, topics, "drift", seed=5),
    ):
        assert svc.wait_for_model(1, 20)
        assert _wait(lambda: _baseline_ready(svc), 30), _health(svc)
        publisher.publish(topics.model_current, good, retain=True)
        assert svc.wait_for_model(2, 30)
        assert _wait(lambda: _health(svc)["verdict"] != "watching", watch_s + 10), _health(svc)
        health = _health(svc)
        print(f"\nfine-tuned v2 vs v1 on drifted data: {health}")
        assert health["verdict"] == "passed", health
        assert health["watched"] == 2 and "labeled accuracy" in health["reason"]
        base, new = health["baseline"], health["serving"]
        assert base["labeled"] >= 20 and new["labeled"] >= 20
        assert svc.model_version == 2
        time.sleep(1.0)
        assert svc.model_version == 2
        detail = svc.status().detail
        assert detail["rollbacks"] == [] and detail["model_health"]["auto_rollbacks"] == 0

        # an operator's rollback is listed too, as not automatic, with the command's id
        publisher.publish(
            topics.node_command("pi-watch"),
            NodeCommand("rollback", id="op@1", from_version=2).to_json(),
        )
        assert svc.wait_for_model(1, 20)
        assert _wait(lambda: bool(svc.status().detail["rollbacks"]), 5)
        (entry,) = svc.status().detail["rollbacks"]
        assert (entry["from"], entry["to"], entry["auto"]) == (2, 1, False)
        assert "op@1" in entry["reason"]
        assert svc.status().detail["model_health"]["operator_rollbacks"] == 1
    publisher.publish(topics.model_current, b"", retain=True)
