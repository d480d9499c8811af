"""The fine-tune's replay draw (jetson_trainer/daemon/replay.py): agreeing windows, classes
balanced."""

from __future__ import annotations

import numpy as np

from jetson_trainer.daemon.replay import pick_replay


def _plant_like(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A plant's history: 95 % normal, labels 5 % wrong, a champion that knows the truth."""
    true = np.where(rng.random(5000) < 0.95, 0, rng.integers(1, 4, 5000))
    wrong = rng.random(5000) < 0.05
    y = np.where(wrong, (true + rng.integers(1, 4, 5000)) % 4, true)
    return true, y, true.copy()  # the champion predicts the true class


def test_rare_faults_get_an_equal_share_and_wrong_labels_stay_out() -> None:
    rng = np.random.default_rng(1)
    true, y, pred = _plant_like(rng)
    idx = pick_replay(pred, y, 1000, np.random.default_rng(2))
    assert len(idx) == 1000
    assert np.bincount(y[idx], minlength=4).tolist() == [250, 250, 250, 250]
    assert (y[idx] == true[idx]).all()  # no window whose label is wrong
    # a random draw of the same size holds ~16 of each fault, and wrong labels
    plain = np.random.default_rng(2).choice(len(y), 1000, replace=False)
    assert np.bincount(y[plain], minlength=4)[1:].max() < 60
    assert (y[plain] != true[plain]).sum() > 20


def test_a_class_the_champion_never_gets_right_is_left_out() -> None:
    y = np.array([0, 0, 0, 1, 1, 2, 2])
    pred = np.array([0, 0, 0, 1, 1, 0, 0])  # class 2 never right
    idx = pick_replay(pred, y, 10, np.random.default_rng(0))
    assert sorted(set(y[idx].tolist())) == [0, 1]
    assert np.bincount(y[idx]).tolist() == [5, 5]


def test_no_agreement_at_all_falls_back_to_a_random_draw() -> None:
    y = np.array([0, 1, 2, 3] * 5)
    pred = (y + 1) % 4
    idx = pick_replay(pred, y, 8, np.random.default_rng(0))
    assert len(idx) == 8 and len(set(idx.tolist())) == 8


def test_nothing_asked_nothing_given() -> None:
    rng = np.random.default_rng(0)
    assert len(pick_replay(np.zeros(5), np.zeros(5), 0, rng)) == 0
    assert len(pick_replay(np.zeros(0), np.zeros(0), 10, rng)) == 0
