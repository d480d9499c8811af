"""A node in a rollout group hears two offers, its group's topic and model/current: it ends on
the highest version offered whatever the order, an older offer on one topic while the other
offers a newer one is not counted as a refused replay, and the trust rules stay as they were."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from pi_edge.intake.inbox import BatchPolicy
from pi_edge.model.lifecycle import ModelManager
from pi_edge.model.vetting import Expected
from protocol import CHANNELS, CLASSES, DEFAULT_PREFIX

from ._model import EdgeModels

GROUP = "mqtt group canary"  # the source the service gives its group's bundles
CURRENT = "mqtt"


class _Node:
    def __init__(self, state_dir: Path, models: EdgeModels) -> None:
        self.pending = threading.Event()
        self.refused: list[str] = []
        self.manager = ModelManager(
            state_dir,
            public_key=models.public_key,
            allow_unsigned=False,
            site=DEFAULT_PREFIX,
            expected=Expected(CLASSES, CHANNELS, 60),
            threads=1,
            policy=BatchPolicy(),
            on_pending=self.pending.set,
            on_refused=self.refused.append,
            on_install=lambda m: None,
            disk_poll_s=0.05,
        )

    def swap(self, timeout: float = 10.0) -> int:
        """What the worker does between batches: install the pending model; its version."""
        assert self.pending.wait(timeout), "no model was handed over"
        self.pending.clear()
        pending = self.manager.take_pending()
        assert pending is not None
        self.manager.install(*pending)
        return pending[0].version

    def settle(self) -> None:
        time.sleep(0.5)  # the model thread has handled everything queued


def test_both_offers_queued_at_once_end_on_the_highest_in_either_order(
    models: EdgeModels, tmp_path: Path
) -> None:
    for name, first, second in (
        ("group-first", (GROUP, 3), (CURRENT, 2)),
        ("current-first", (CURRENT, 2), (GROUP, 3)),
    ):
        node = _Node(tmp_path / name, models)
        node.manager.load_startup(None)
        for source, version in (first, second):  # both retained, both arrive on connect
            node.manager.submit(models.bundle(version), source)
        node.manager.start()
        try:
            node.settle()  # both vetted before the worker's next batch
            assert node.swap() == 3, name
            node.settle()
            assert node.manager.take_pending() is None and node.manager.version == 3
            assert node.refused == [], (name, node.refused)
        finally:
            node.manager.stop()


def test_an_older_model_current_is_quiet_while_the_group_offers_newer_but_never_installed(
    models: EdgeModels, tmp_path: Path
) -> None:
    node = _Node(tmp_path, models)
    node.manager.load_startup(None)
    node.manager.start()
    try:
        node.manager.submit(models.bundle(2), CURRENT)
        assert node.swap() == 2
        node.manager.submit(models.bundle(3), GROUP)  # the canary gets v3 first
        assert node.swap() == 3
        node.manager.submit(models.bundle(2), CURRENT)  # model/current again (a reconnect)
        node.settle()
        assert node.manager.take_pending() is None and node.manager.version == 3
        assert node.refused == [] and node.manager.info().last_error is None
        node.manager.submit(models.bundle(3), CURRENT)  # promoted: already serving
        node.settle()
        assert node.manager.take_pending() is None and node.refused == []
        node.manager.submit(models.bundle(4), CURRENT)  # a newer one from anywhere goes in
        assert node.swap() == 4
    finally:
        node.manager.stop()


def test_forgeries_and_replays_on_the_group_topic_are_still_refused(
    models: EdgeModels, tmp_path: Path
) -> None:
    node = _Node(tmp_path, models)
    node.manager.load_startup(None)
    node.manager.start()
    try:
        node.manager.submit(models.bundle(1), CURRENT)
        assert node.swap() == 1
        node.manager.submit(models.bundle(5, signed=False), GROUP)  # never installable
        node.settle()
        assert node.refused == ["bundle_signature"] and node.manager.version == 1
        node.manager.submit(models.bundle(3), GROUP)
        assert node.swap() == 3
        node.manager.submit(models.bundle(2), GROUP)  # older than v3, nothing newer elsewhere
        node.settle()
        assert node.refused == ["bundle_signature", "bundle_replay"]
        assert node.manager.version == 3 and node.manager.take_pending() is None
    finally:
        node.manager.stop()
