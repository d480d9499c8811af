"""Issue 23, item 4: the gate stays the last line. A label sender that consistently flips the
labels of the drifted windows (normal → bearing_fault → … , on the labels the fine-tune trains on
*and* on the spare ones the gate judges on) must not get its fine-tune published: the gate also
judges on data no label sender controls (the original holdout, and the original holdout moved
to the drifted regime, see versions/gate.py).

TensorFlow runs in this process (the `trained` fixture of tests/jetson_trainer)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from jetson_trainer.daemon.retrain import RetrainConfig, retrain
from jetson_trainer.versions.gate import decide
from tests.jetson_trainer.conftest import keypair, tiny_data, trained  # noqa: F401 - fixtures
from tests.jetson_trainer.test_retrain_few_labels import Setup, setup  # noqa: F401 - fixture

pytestmark = [pytest.mark.tensorflow]


def _flip(y: np.ndarray) -> np.ndarray:
    return (y + 1) % 4  # a consistent permutation of the four classes


def test_a_fine_tune_on_consistently_flipped_labels_does_not_pass_the_gate(
    setup: Setup,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    honest = retrain(
        setup.champion,
        *setup.labels,
        replay=setup.replay,
        original_holdout=setup.original,
        out_dir=tmp_path / "honest",
        private_key=None,
        config=RetrainConfig(epochs=20),
        recent=(setup.unlabeled, np.full(len(setup.unlabeled), -1)),
        held_out=setup.spare,
    )
    flipped = retrain(
        setup.champion,
        setup.labels[0],
        _flip(setup.labels[1]),
        replay=setup.replay,
        original_holdout=setup.original,
        out_dir=tmp_path / "flipped",
        private_key=None,
        config=RetrainConfig(epochs=20),
        recent=(setup.unlabeled, np.full(len(setup.unlabeled), -1)),
        held_out=(setup.spare[0], _flip(setup.spare[1])),
    )
    d = flipped.decision
    without = decide(  # the gate of before: drift holdout and original holdout only
        dataclasses.replace(d.champion, anchor=None), dataclasses.replace(d.challenger, anchor=None)
    )
    print(
        f"\n[fault] honest: {honest.decision.reason} (moved holdout "
        f"{honest.decision.champion.anchor} → {honest.decision.challenger.anchor})\n"
        f"[fault] flipped: {d.reason}\n"
        f"[fault] flipped, without the moved holdout: accepted={without.accepted} "
        f"({without.reason})"
    )
    assert honest.decision.accepted, honest.decision.reason  # the gate still lets the good in
    assert not flipped.decision.accepted, flipped.decision.reason
    assert flipped.challenger is None
