"""Rollbacks are idempotent and addressed, without a broker: ModelStore and ModelManager.

A rollback names the version it rolls back from; a repeat, a duplicate id or a stale command
does nothing and says so; a blocked version is never made current, never loaded from the state
dir or --model, and the start-up fallback to previous.bundle respects the block list.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pi_edge.model.lifecycle import ModelManager
from pi_edge.model.state_dir import ModelStore, RollbackRefusedError
from protocol import decode_bundle

from ._model import EdgeModels
from .test_model_manager import Recorder, take


def _stored(models: EdgeModels, tmp_path: Path, *versions: int) -> ModelStore:
    store = ModelStore(tmp_path)
    for v in versions:
        store.save(decode_bundle(models.bundle(v), models.public_key))
    return store


def _until(cond: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_store_rollback_names_its_from_version_and_a_stale_one_changes_nothing(
    models: EdgeModels, tmp_path: Path
) -> None:
    store = _stored(models, tmp_path, 1, 2, 3)
    with pytest.raises(RollbackRefusedError) as info:
        store.rollback(expect_from=2)  # the node serves v3
    assert info.value.kind == "stale"
    assert store.current_path.read_bytes() == models.bundle(3) and store.blocked() == []
    assert store.rollback(expect_from=3) == (3, 2)
    with pytest.raises(RollbackRefusedError) as info:
        store.rollback(expect_from=3)  # the same command again
    assert info.value.kind == "stale"
    assert store.current_path.read_bytes() == models.bundle(2)
    assert store.blocked() == [3] and [r["from"] for r in store.rollbacks()] == [3]


def test_a_rollback_never_makes_a_blocked_version_current(
    models: EdgeModels, tmp_path: Path
) -> None:
    store = _stored(models, tmp_path, 1, 2)
    store.previous_path.write_bytes(models.bundle(1))
    store._write_blocked([1])  # v1 was rolled back from earlier (a restored state dir, say)
    with pytest.raises(RollbackRefusedError) as info:
        store.rollback()
    assert info.value.kind == "blocked"
    assert store.current_path.read_bytes() == models.bundle(2) and store.blocked() == [1]


def test_a_blocked_current_bundle_is_not_served_at_start_the_previous_one_is(
    models: EdgeModels, tmp_path: Path
) -> None:
    store = _stored(models, tmp_path, 1, 2)
    store._write_blocked([2])  # a power cut after blocking v2, before current.bundle changed
    rec = Recorder()
    manager = rec.manager(tmp_path, models)
    manager.load_startup(None)
    assert manager.version == 1 and rec.refused == ["bundle_blocked"]
    assert store.current_path.read_bytes() == models.bundle(1)  # the disk says what serves
    assert not store.previous_path.exists()
    assert (store.dir / "current.bundle.refused").read_bytes() == models.bundle(2)


def test_a_failed_current_bundle_falls_back_only_to_an_unblocked_previous(
    models: EdgeModels, tmp_path: Path
) -> None:
    store = _stored(models, tmp_path, 1, 2)
    store.current_path.write_bytes(models.bundle(2)[:-10])  # fails its check
    store._write_blocked([1])
    rec = Recorder()
    manager = rec.manager(tmp_path, models)
    manager.load_startup(tmp_path / "models" / "previous.bundle")  # --model: v1 too
    assert manager.version is None  # waits for the network rather than serve v1
    assert rec.refused[-2:] == ["bundle_blocked", "bundle_blocked"]
    assert store.current_path.read_bytes() == models.bundle(2)[:-10]  # nothing promoted


def test_a_repeat_a_duplicate_and_a_stale_command_do_nothing_and_say_so(
    models: EdgeModels, tmp_path: Path
) -> None:
    _stored(models, tmp_path, 1, 2, 3)
    rec = Recorder()
    manager = rec.manager(tmp_path, models)
    manager.load_startup(None)
    assert manager.version == 3
    manager.start()
    try:
        assert manager.request_rollback(2, "op@1") == "queued"  # stale: v3 serves
        assert _until(lambda: manager.command_detail()["stale"] == 1)
        assert manager.version == 3 and rec.refused == ["command_stale"]

        assert manager.request_rollback(3, "op@2") == "queued"
        assert take(manager, rec) == "rollback"
        assert manager.version == 2
        assert manager.request_rollback(3, "op@2") == "duplicate"  # a QoS 1 duplicate
        assert manager.request_rollback(3, "op@3") == "queued"  # the same, pressed again
        assert _until(lambda: manager.command_detail()["stale"] == 2)
        time.sleep(0.2)
        assert manager.take_pending() is None and manager.version == 2
        detail = manager.command_detail()
        assert (detail["done"], detail["duplicate"], detail["stale"]) == (1, 1, 2)
        assert [c["result"] for c in detail["last"]] == ["stale", "done", "duplicate", "stale"]
        assert detail["last"][-1]["serving"] == 2 and detail["last"][-1]["from"] == 3
        assert rec.refused == ["command_stale", "command_duplicate", "command_stale"]
        assert ModelStore(tmp_path).blocked() == [3]
    finally:
        manager.stop()


def test_an_operator_command_after_an_automatic_rollback_is_stale(
    models: EdgeModels, tmp_path: Path
) -> None:
    _stored(models, tmp_path, 1, 2)
    rec = Recorder()
    manager = rec.manager(tmp_path, models)
    manager.load_startup(None)
    manager.start()
    try:
        manager._rollback("clearly worse", auto=True, expect_from=2)  # the node's own
        assert take(manager, rec) == "rollback" and manager.version == 1
        manager.request_rollback(2, "console@9")  # the operator saw v2 and pressed b
        assert _until(lambda: manager.command_detail()["stale"] == 1)
        time.sleep(0.2)
        assert manager.take_pending() is None and manager.version == 1
        manager.submit(models.bundle(2))  # the retained v2 stays blocked
        time.sleep(0.3)
        assert manager.take_pending() is None and manager.version == 1
    finally:
        manager.stop()


def test_an_unaddressed_command_is_counted_and_changes_nothing(
    models: EdgeModels, tmp_path: Path
) -> None:
    _stored(models, tmp_path, 1, 2)
    rec = Recorder()
    manager: ModelManager = rec.manager(tmp_path, models)
    manager.load_startup(None)
    manager.command_result("rollback", "old-console", None, "unaddressed")
    assert rec.refused == ["command_unaddressed"] and manager.version == 2
    assert "name the version" in manager.command_detail()["last"][0]["why"]
