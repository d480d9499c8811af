"""A node's rollback reaches the running trainer: the version is marked bad, the champion goes
back to the last good model, re-issued under a new version, and that survives a restart."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from jetson_trainer.build.keys import load_private_key
from jetson_trainer.daemon.serve import ServeConfig, TrainerDaemon
from nodekit.mqtt import connect, make_client
from protocol import Bundle, Status, Topics, decode_bundle, encode_bundle, load_public_key
from scripts.broker import Broker

from .conftest import Trained

pytestmark = [pytest.mark.broker, pytest.mark.tensorflow]


def _wait(cond: Callable[[], bool], what: str, timeout: float = 20.0) -> float:
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.05)
    return time.monotonic() - start


def _two_versions(trained: Trained, models: Path, site: str) -> bytes:
    """v0001 (the trained model) and v0002 (its child, parent 1) for `site`; v1's .tflite."""
    made = decode_bundle(trained.bundle.read_bytes(), load_public_key(trained.public_key))
    sign = load_private_key(trained.private_key).sign
    for version, parent in ((1, None), (2, 1)):
        d = models / f"v{version:04d}"
        shutil.copytree(trained.out, d)
        m = dataclasses.replace(made.manifest, version=version, parent=parent, site=site)
        (d / "model.bundle").write_bytes(encode_bundle(m, made.model, sign))
        (d / "manifest.json").write_text(json.dumps(m.to_dict()))
        (d / "model_card.md").unlink(missing_ok=True)
    return made.model


def _daemon(trained: Trained, topics: Topics, broker: Broker, tmp_path: Path) -> TrainerDaemon:
    return TrainerDaemon(
        ServeConfig(
            broker=broker.address,
            prefix=topics.prefix,
            store=tmp_path / "trainer",
            private_key=trained.private_key,
            models=tmp_path / "models",
            client_id=f"trainer-rb-{time.time_ns()}",
            dashboard=False,
            tick_s=0.1,
        )
    )


def _run(daemon: TrainerDaemon) -> TrainerDaemon:
    """The daemon's policy thread (daemon.stop() ends and joins it)."""
    return daemon.start_policy()


def test_a_rolled_back_version_is_marked_bad_and_the_last_good_model_is_reissued(
    trained: Trained, broker: Broker, topics: Topics, tmp_path: Path
) -> None:
    v1_model = _two_versions(trained, tmp_path / "models", topics.prefix)
    key = load_public_key(trained.public_key)
    seen: list[Bundle] = []
    watcher = make_client(f"watch-{time.time_ns()}")
    watcher.on_connect = lambda c, *a: c.subscribe(topics.model_current, qos=1)
    watcher.on_message = lambda c, u, msg: seen.append(decode_bundle(msg.payload, key))
    connect(watcher, broker.address)
    watcher.loop_start()
    node = make_client(f"pi-9-{time.time_ns()}")
    connect(node, broker.address)
    node.loop_start()
    daemon = _daemon(trained, topics, broker, tmp_path).start()
    _run(daemon)
    try:
        _wait(lambda: any(b.manifest.version == 2 for b in seen), "v2 published")
        serving = Status("pi-9", "edge", "online", "0.1.0", model_version=2, timestamp=time.time())
        node.publish(topics.status("pi-9"), serving.to_json(), qos=1).wait_for_publish(5)
        _wait(lambda: "pi-9" in daemon.history.view().get(2).served, "pi-9 seen on v2")  # type: ignore[union-attr]
        rollback = {"from": 2, "to": 1, "reason": "accuracy 0.41 vs 0.97", "ts": 1e9, "auto": True}
        status = Status(
            "pi-9",
            "edge",
            "online",
            "0.1.0",
            model_version=1,
            timestamp=time.time(),
            detail={"rollbacks": [{"from": "two"}, rollback]},  # one malformed entry
        )
        node.publish(topics.status("pi-9"), status.to_json(), qos=1, retain=True).wait_for_publish(
            5
        )
        took = _wait(lambda: any(b.manifest.version == 3 for b in seen), "a re-issue published")
        print(f"rollback status → re-issued v3 on model/current: {took:.2f} s")
        new = next(b for b in seen if b.manifest.version == 3)
        assert new.signed and new.model == v1_model and new.manifest.extra["reissue_of"] == 1
        assert [b.manifest.version for b in seen] == [2, 3]  # v2 never published again
        reg = daemon.history.view()
        bad = reg.get(2)
        assert bad is not None and bad.status == "bad"
        assert [(m.node, m.reason, m.auto) for m in bad.bad] == [
            ("pi-9", "accuracy 0.41 vs 0.97", True)
        ]
        assert reg.champion() == 3 and daemon.champion is not None
        assert daemon.champion.version == 3
        _wait(lambda: daemon.history.view().get(1).deployed == ("pi-9",), "pi-9 on v1")  # type: ignore[union-attr]
        s = daemon.status()
        assert s.errors["bad_rollback_entry"] == 1 and s.detail["bad_models"] == [2]
        models = tmp_path / "models"
        assert "**Rolled back** by node `pi-9`" in (models / "v0002" / "model_card.md").read_text()
        assert "| re-issue of | v1 |" in (models / "v0003" / "model_card.md").read_text()
        # the next fine-tune would be v4, above every version the nodes saw
        assert daemon.history.next_version(models, daemon.champion) == 4
    finally:
        daemon.stop()
    # a restart reads the same retained rollback again: nothing new, v2 stays out
    again = _daemon(trained, topics, broker, tmp_path).start()
    _run(again)
    try:
        assert again.champion is not None and again.champion.version == 3
        _wait(lambda: again.state.pis.get("pi-9") is not None, "the node's status read again")
        time.sleep(0.5)  # several policy ticks
        assert again.champion.version == 3 and again.history.bad_versions() == {2}
        assert not (tmp_path / "models" / "v0004").exists()
    finally:
        again.stop()
        node.publish(topics.status("pi-9"), b"", qos=1, retain=True).wait_for_publish(5)
        for c in (node, watcher):
            c.loop_stop()
            c.disconnect()
