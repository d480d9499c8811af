"""ModelManager without a broker: vet on its thread, hand over between batches, refuse, rollback."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from pi_edge.batching import BatchPolicy
from pi_edge.model_manager import ModelManager
from pi_edge.models import Expected, ModelStore
from protocol import CHANNELS, CLASSES, Manifest, decode_bundle

from ._model import EdgeModels


class Recorder:
    def __init__(self) -> None:
        self.pending = threading.Event()
        self.refused: list[str] = []
        self.installed: list[int] = []

    def on_install(self, manifest: Manifest) -> None:
        self.installed.append(manifest.version)

    def manager(self, state_dir: Path, models: EdgeModels) -> ModelManager:
        return ModelManager(
            state_dir,
            public_key=models.public_key,
            allow_unsigned=False,
            expected=Expected(CLASSES, CHANNELS, 60),
            threads=1,
            policy=BatchPolicy(),
            on_pending=self.pending.set,
            on_refused=self.refused.append,
            on_install=self.on_install,
            disk_poll_s=0.05,
        )


def take(manager: ModelManager, rec: Recorder, timeout: float = 10.0) -> str:
    """What the worker does between two batches: swap in the pending model."""
    assert rec.pending.wait(timeout), "no model was handed over"
    rec.pending.clear()
    pending = manager.take_pending()
    assert pending is not None
    manager.install(*pending)
    return pending[1]


def test_a_bundle_is_vetted_off_thread_saved_and_handed_to_the_worker(
    models: EdgeModels, tmp_path: Path
) -> None:
    rec = Recorder()
    manager = rec.manager(tmp_path, models)
    manager.load_startup(None)
    assert manager.version is None
    manager.start()
    try:
        manager.submit(models.bundle(1))
        assert take(manager, rec) == "mqtt"
        assert manager.version == 1 and rec.installed == [1]
        assert manager.wait_for(1, timeout=1)
        assert ModelStore(tmp_path).current_path.read_bytes() == models.bundle(1)
        info = manager.info()
        assert (info.version, info.source, info.last_error) == (1, "mqtt", None)
    finally:
        manager.stop()


def test_a_refused_bundle_is_counted_and_the_old_model_keeps_serving(
    models: EdgeModels, tmp_path: Path
) -> None:
    rec = Recorder()
    manager = rec.manager(tmp_path, models)
    manager.start()
    try:
        manager.submit(models.bundle(1))
        take(manager, rec)
        manager.submit(models.bundle(2, signed=False))
        deadline = time.monotonic() + 10
        while not rec.refused and time.monotonic() < deadline:
            time.sleep(0.02)
        assert rec.refused == ["bundle_signature"]
        assert manager.take_pending() is None and manager.version == 1
        assert "signature" in (manager.info().last_error or "")
    finally:
        manager.stop()


def test_a_rollback_on_disk_is_noticed_and_loaded(models: EdgeModels, tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store.save(decode_bundle(models.bundle(1), models.public_key))
    store.save(decode_bundle(models.bundle(2), models.public_key))
    rec = Recorder()
    manager = rec.manager(tmp_path, models)
    manager.load_startup(None)
    assert manager.version == 2
    manager.start()
    try:
        time.sleep(0.1)  # st_mtime_ns must change
        store.rollback()
        assert take(manager, rec) == "rollback"
        assert manager.version == 1 and rec.installed == [2, 1]
        manager.submit(models.bundle(2))  # the retained v2 may not come back
        time.sleep(0.3)
        assert manager.take_pending() is None and manager.version == 1
    finally:
        manager.stop()
