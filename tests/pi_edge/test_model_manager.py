"""ModelManager without a broker: vet on its thread, hand over between batches, refuse, rollback,
and the trust rules for bundles from the network: verified before parsed, this site's only, never
older than the high-water mark."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from pi_edge.intake.inbox import BatchPolicy
from pi_edge.model.lifecycle import ModelManager
from pi_edge.model.state_dir import ModelStore
from pi_edge.model.vetting import Expected
from protocol import CHANNELS, CLASSES, DEFAULT_PREFIX, Manifest, decode_bundle
from protocol.bundle import HEADER

from ._model import EdgeModels

SITE = DEFAULT_PREFIX  # the site the test bundles are made for


class Recorder:
    def __init__(self) -> None:
        self.pending = threading.Event()
        self.refused: list[str] = []
        self.installed: list[int] = []

    def on_install(self, manifest: Manifest) -> None:
        self.installed.append(manifest.version)

    def manager(
        self, state_dir: Path, models: EdgeModels, *, key: bool = True, site: str = SITE
    ) -> ModelManager:
        return ModelManager(
            state_dir,
            public_key=models.public_key if key else None,
            allow_unsigned=not key,
            site=site,
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


def refusals(rec: Recorder, n: int, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while len(rec.refused) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    return rec.refused


def with_manifest(models: EdgeModels, manifest: Any, *, signed: bool = True) -> bytes:
    """A bundle of the test model around any manifest JSON, signed with the trainer's key."""
    raw = json.dumps(manifest).encode()
    flags, s_len = (1, 64) if signed else (0, 0)
    body = HEADER.pack(b"EB", 1, flags, len(raw), len(models.model), s_len) + raw + models.model
    return body + models.private_key.sign(body) if signed else body


def serving(models: EdgeModels, tmp_path: Path, version: int) -> tuple[Recorder, ModelManager]:
    rec = Recorder()
    manager = rec.manager(tmp_path, models)
    manager.start()
    manager.submit(models.bundle(version))
    take(manager, rec)
    assert manager.version == version
    return rec, manager


def test_a_replayed_older_bundle_is_refused_and_the_newest_keeps_serving(
    models: EdgeModels, tmp_path: Path
) -> None:
    rec, manager = serving(models, tmp_path, 3)
    try:
        manager.submit(models.bundle(1))  # validly signed, older: a replay
        assert refusals(rec, 1) == ["bundle_replay"]
        assert manager.take_pending() is None and manager.version == 3
        error = manager.info().last_error or ""
        assert "replay" in error and "v1 is older than v3" in error
        manager.submit(models.bundle(4))  # a newer one still goes in
        take(manager, rec)
        assert manager.version == 4 and ModelStore(tmp_path).highest() == 4
    finally:
        manager.stop()


def test_the_high_water_mark_survives_a_restart(models: EdgeModels, tmp_path: Path) -> None:
    rec, manager = serving(models, tmp_path, 3)
    manager.stop()
    rec = Recorder()
    manager = rec.manager(tmp_path, models)
    manager.load_startup(None)
    manager.start()
    try:
        assert manager.version == 3
        manager.submit(models.bundle(2))
        assert refusals(rec, 1) == ["bundle_replay"] and manager.version == 3
    finally:
        manager.stop()


def test_a_bundle_for_another_site_is_refused(models: EdgeModels, tmp_path: Path) -> None:
    rec, manager = serving(models, tmp_path, 1)
    try:
        manager.submit(models.bundle(2, site="plant-b/v1"))
        assert refusals(rec, 1) == ["bundle_site"]
        manager.submit(models.bundle(3, site=""))  # an older trainer's bundle names no site
        assert refusals(rec, 2) == ["bundle_site", "bundle_site"]
        assert manager.version == 1 and ModelStore(tmp_path).highest() == 1
        assert "made for site" in (manager.info().last_error or "")
    finally:
        manager.stop()


def test_an_unsigned_bundle_is_refused_with_a_key_even_with_unsigned_allowed(
    models: EdgeModels, tmp_path: Path
) -> None:
    rec = Recorder()
    manager = ModelManager(
        tmp_path,
        public_key=models.public_key,
        allow_unsigned=True,  # as if --insecure-dev had slipped through with a key
        site=SITE,
        expected=Expected(CLASSES, CHANNELS, 60),
        threads=1,
        policy=BatchPolicy(),
        on_pending=rec.pending.set,
        on_refused=rec.refused.append,
        on_install=rec.on_install,
    )
    manager.start()
    try:
        manager.submit(models.bundle(2, signed=False))
        assert refusals(rec, 1) == ["bundle_signature"] and manager.version is None
    finally:
        manager.stop()


def test_a_bad_manifest_does_not_stop_the_model_thread(models: EdgeModels, tmp_path: Path) -> None:
    bad = {**models.bundle_manifest(2), "normalisation": [1]}
    for key in (True, False):  # with a key (signed bad manifest) and on a development node
        rec = Recorder()
        manager = rec.manager(tmp_path / str(key), models, key=key)
        manager.start()
        try:
            manager.submit(with_manifest(models, bad, signed=key))
            assert refusals(rec, 1) == ["bundle_malformed"]
            assert "normalisation" in (manager.info().last_error or "")
            manager.submit(models.bundle(3))
            take(manager, rec)
            assert manager.version == 3
        finally:
            manager.stop()


def test_an_unsigned_bad_manifest_is_never_parsed_by_a_node_with_a_key(
    models: EdgeModels, tmp_path: Path
) -> None:
    rec = Recorder()
    manager = rec.manager(tmp_path, models)
    manager.start()
    try:
        manager.submit(with_manifest(models, {"normalisation": [1]}, signed=False))
        assert refusals(rec, 1) == ["bundle_signature"]
        manager.submit(models.bundle(2))
        take(manager, rec)
        assert manager.version == 2
    finally:
        manager.stop()


def test_rollback_survives_a_restart_below_the_high_water_mark(
    models: EdgeModels, tmp_path: Path
) -> None:
    rec, manager = serving(models, tmp_path, 1)
    manager.submit(models.bundle(2))
    take(manager, rec)
    manager.stop()
    store = ModelStore(tmp_path)
    assert store.highest() == 2
    assert store.rollback() == (2, 1)
    rec = Recorder()
    manager = rec.manager(tmp_path, models)
    manager.load_startup(None)  # current.bundle (v1) is the operator's: trusted below v2
    manager.start()
    try:
        assert manager.version == 1 and rec.refused == []
        manager.submit(models.bundle(2))  # the retained v2 comes back on connect: blocked
        time.sleep(0.3)
        assert manager.version == 1 and rec.refused == []
        manager.submit(models.bundle(1, created=1.8e9))  # another v1: the same version, ignored
        time.sleep(0.3)
        assert manager.take_pending() is None and manager.version == 1
        manager.submit(models.bundle(3))  # a newer version is accepted and lifts the block
        take(manager, rec)
        assert manager.version == 3 and store.blocked() == [] and store.highest() == 3
    finally:
        manager.stop()


def test_bookkeeping_never_parses_a_stored_bundle(models: EdgeModels, tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store.dir.mkdir(parents=True)
    bad = with_manifest(models, {"normalisation": [1]}, signed=False)
    store.current_path.write_bytes(bad)
    store.previous_path.write_bytes(models.bundle(1))
    assert store.version_of(bad) is None  # unknown: not verified by this node
    assert store.rollback() == (None, None)
    store.save(decode_bundle(models.bundle(5), models.public_key))
    assert store.version_of(models.bundle(5)) == 5 and store.highest() == 5
    assert json.loads((store.dir / "versions.json").read_text())["highest"] == 5
