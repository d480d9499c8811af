"""The anomaly head's definition (jetson_trainer/build/anomaly_head.py), in numpy: a window unlike
normal is flagged unless it deviates the way its predicted class's labeled windows did."""

from __future__ import annotations

import numpy as np
import pytest

from jetson_trainer.build.anomaly_head import Head, fit_head, flagged, head_outputs
from jetson_trainer.errors import TrainerError


def _windows(rng: np.random.Generator, n: int, shift: tuple[float, float]) -> np.ndarray:
    """Normalised 2-channel windows; `shift` moves each channel's level."""
    return np.asarray(rng.normal(size=(n, 30, 2)) * 0.5 + np.asarray(shift), np.float64)


def test_the_head_flags_a_fault_off_its_class_s_direction_and_keeps_the_known_one() -> None:
    rng = np.random.default_rng(3)
    normal = _windows(rng, 600, (0.0, 0.0))
    known = _windows(rng, 8, (3.0, 0.0))  # channel 0 rises: the labeled fault
    head = fit_head(("normal", "a"), normal, known, ["a"] * 8)
    assert head.tolerance[0] == 2.0 and 0.5 <= head.tolerance[1] < 1.0
    healthy, a, other = (
        _windows(rng, 200, (0, 0)),
        _windows(rng, 50, (5, 0)),
        _windows(rng, 50, (0, 4)),
    )
    said_a = np.tile([0.02, 0.98], (50, 1))  # the classifier calls both faults `a`
    assert not flagged(head_outputs(np.tile([0.99, 0.01], (200, 1)), healthy, head)).any()
    assert not flagged(head_outputs(said_a, a, head)).any()  # a worse `a`: still `a`
    assert flagged(head_outputs(said_a, other, head)).all()  # another fault: anomaly
    said_normal = np.tile([0.99, 0.01], (50, 1))
    assert flagged(head_outputs(said_normal, a, head)).all()  # missed by the classifier
    again = Head.from_extra(head.to_extra())
    assert np.array_equal(again.directions, head.directions) and again.threshold == head.threshold


def test_a_head_needs_labels_of_every_fault_class() -> None:
    rng = np.random.default_rng(1)
    with pytest.raises(TrainerError, match="no labeled window of 'b'"):
        fit_head(
            ("normal", "a", "b"), _windows(rng, 300, (0, 0)), _windows(rng, 4, (3, 0)), ["a"] * 4
        )
