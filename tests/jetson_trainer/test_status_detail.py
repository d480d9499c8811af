"""The trainer's status detail through the contract's codecs (protocol.status_detail): versioned,
a stage the console acts on beside the phase text, the last gate decision and the staged
rollout read back exactly; no broker, no TensorFlow."""

from __future__ import annotations

import math
from pathlib import Path

from jetson_trainer.build.keys import generate_keypair
from jetson_trainer.config import ServeConfig
from jetson_trainer.daemon.retrain import Attempt
from jetson_trainer.daemon.serve import TrainerDaemon
from jetson_trainer.versions.gate import GateDecision, Scores
from protocol import PayloadError, Status
from protocol.status_detail import (
    DETAIL_VERSION,
    DetailReader,
    GateDetail,
    RolloutDetail,
    TrainerPhase,
    TrainerStage,
)


def _daemon(tmp_path: Path, **kw: object) -> TrainerDaemon:
    private, _ = generate_keypair(tmp_path / "keys")
    config = ServeConfig(
        store=tmp_path / "store",
        private_key=private,
        broker="127.0.0.1:1",  # never connected: start() is not called
        prefix="site/v1",
        client_id="trainer-t",
        dashboard=False,
        **kw,  # type: ignore[arg-type]
    )
    return TrainerDaemon(config)


def _read(daemon: TrainerDaemon) -> tuple[Status, DetailReader, list[PayloadError]]:
    status = Status.from_json(daemon.status().to_json())  # as the console receives it
    bad: list[PayloadError] = []
    return status, DetailReader(status.detail, status.role, bad.append), bad


def test_the_stage_says_for_programs_what_the_phase_says_for_people(tmp_path: Path) -> None:
    daemon = _daemon(tmp_path)
    try:
        status, detail, bad = _read(daemon)
        assert status.detail["v"] == DETAIL_VERSION and next(iter(status.detail)) == "v"
        assert detail.get(TrainerStage) == TrainerStage("starting")
        assert detail.get(TrainerPhase) == TrainerPhase("starting")
        daemon.loop.update(stage=TrainerStage("fine_tuning", 3, 480))
        status, detail, bad = _read(daemon)
        assert detail.get(TrainerStage) == TrainerStage("fine_tuning", 3, 480)
        assert status.detail["phase"] == "fine-tuning v3 on 480 labels" == daemon.state.phase
        assert detail.get(GateDetail) is None and detail.get(RolloutDetail) is None and bad == []
    finally:
        daemon.store.close()


def test_a_gate_score_on_no_data_is_null_and_the_status_stays_readable(tmp_path: Path) -> None:
    """Without --data there is no original holdout: its accuracy is NaN, which JSON readers
    refuse (the whole status with it); the status carries null instead."""
    daemon = _daemon(tmp_path)
    try:
        decision = GateDecision(False, "no better", Scores(0.5, math.nan), Scores(0.9, math.nan))
        daemon.loop.update(last_attempt=Attempt(decision, 480, 96, 3.25, None))
        payload = daemon.status().to_json()
        assert b"NaN" not in payload
        _, detail, bad = _read(daemon)
        gate = detail.get(GateDetail)
        assert gate == GateDetail(False, "no better", 480, 3.25, 96, 0.5, 0.9, None, None)
        assert bad == []
    finally:
        daemon.store.close()


def test_the_staged_rollout_reads_back_before_any_version(tmp_path: Path) -> None:
    daemon = _daemon(tmp_path, canary_groups=("canary",))
    try:
        _, detail, bad = _read(daemon)
        assert detail.get(RolloutDetail) == RolloutDetail(None, "idle", ("canary",)) and bad == []
    finally:
        daemon.store.close()
