"""One fine-tune attempt from a handful of labels: every label trains when the gate has spare
ones, and self-training adds the unlabeled drift windows the first pass is sure about."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from jetson_trainer.daemon.retrain import Attempt, Champion, RetrainConfig, accuracy, retrain
from jetson_trainer.daemon.selftrain import pick
from protocol.bundle import decode_bundle, load_public_key
from sensor_sim.drift import DriftSettings, apply, effect
from sensor_sim.physics import sample

from .conftest import Trained


def _champion(trained: Trained) -> Champion:
    import keras

    raw = trained.bundle.read_bytes()
    bundle = decode_bundle(raw, load_public_key(trained.public_key))
    keras_model = keras.models.load_model(trained.out / "model.keras")
    return Champion(1, raw, bundle.model, bundle.manifest, keras_model, trained.bundle)


def _drifted(n_per_class: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Seed 000's step drift, with every channel offset on top so the parent is wrong."""
    y = np.repeat(np.arange(4), n_per_class)
    eff = effect(DriftSettings("offset", {"temperature": 12.0, "power": 25.0}), 0.0)
    return apply(sample(y, rng, blend=1.0), eff), y


XY = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Setup:
    champion: Champion
    labels: XY  # 8: what the daemon trains on (2 per class)
    spare: XY  # 12 the gate judges on
    unlabeled: np.ndarray
    fresh: XY
    replay: XY
    original: XY


def _split(trained: Trained, split: str) -> XY:
    return np.load(trained.data / f"{split}_data.npy"), np.load(
        trained.data / f"{split}_labels.npy"
    )


@pytest.fixture(scope="module")
def setup(trained: Trained) -> Setup:
    rng = np.random.default_rng(7)
    return Setup(
        _champion(trained),
        _drifted(2, rng),
        _drifted(3, rng),
        _drifted(100, rng)[0],
        _drifted(100, rng),
        _split(trained, "train"),
        _split(trained, "infer"),
    )


def _attempt(s: Setup, tmp_path: Path, config: RetrainConfig, held_out: XY | None) -> Attempt:
    return retrain(
        s.champion,
        *s.labels,
        replay=s.replay,
        original_holdout=s.original,
        out_dir=tmp_path,
        private_key=None,
        config=config,
        recent=(s.unlabeled, np.full(len(s.unlabeled), -1)),
        held_out=held_out,
    )


def test_with_spare_labels_every_label_trains_and_self_training_heals_the_drift(
    setup: Setup, tmp_path: Path
) -> None:
    attempt = _attempt(setup, tmp_path, RetrainConfig(epochs=20), held_out=setup.spare)
    assert attempt.labels_used == 8
    assert attempt.holdout == 12  # the spare labels, none of the 8 trained on
    assert 300 <= attempt.pseudo_labels <= 400  # most of the 400 unlabeled windows are sure
    assert attempt.decision.accepted, attempt.decision.reason
    assert attempt.challenger is not None
    assert attempt.challenger.manifest.extra["pseudo_labels"] == attempt.pseudo_labels
    before = setup.champion.accuracy(*setup.fresh)
    after = accuracy(attempt.challenger.model, setup.champion.norm, *setup.fresh)
    assert before < 0.7 and after >= 0.95, (before, after)


def test_without_spare_labels_a_quarter_is_held_out_and_self_training_can_be_off(
    setup: Setup, tmp_path: Path
) -> None:
    config = RetrainConfig(epochs=10, self_training=False)
    attempt = _attempt(setup, tmp_path, config, held_out=None)
    assert attempt.labels_used == 8 and attempt.holdout == 4  # 1 per class held out
    assert attempt.pseudo_labels == 0


def test_pseudo_labels_need_confidence_and_no_class_drowns_the_others() -> None:
    rng = np.random.default_rng(0)
    probs = np.zeros((1000, 4))
    probs[:900, 0] = 0.99  # a plant: mostly normal
    probs[900:950, 1] = 0.95
    probs[950:, 2] = 0.5  # unsure: never a pseudo-label
    probs[:, 3] = 1 - probs.max(axis=1)
    idx, cls = pick(probs, confidence=0.9, per_class=100, rng=rng)
    assert np.bincount(cls, minlength=4).tolist() == [100, 50, 0, 0]
    assert (np.diff(idx) > 0).all() and (probs[idx].argmax(axis=1) == cls).all()
    with pytest.raises(ValueError, match="probabilities"):
        pick(np.zeros(4), rng=rng)


def test_when_no_drift_window_is_sure_the_labels_get_the_second_pass(
    setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    import jetson_trainer.daemon.retrain as retrain_module

    real = retrain_module.finetune_model

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(int(kwargs["epochs"]))  # type: ignore[call-overload]
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(retrain_module, "finetune_model", counting)
    monkeypatch.setattr(
        retrain_module,
        "pick_pseudo_labels",
        lambda probs, rng: (np.zeros(0, np.int64), np.zeros(0, np.int64)),
    )
    attempt = _attempt(setup, tmp_path, RetrainConfig(epochs=20), held_out=setup.spare)
    assert attempt.pseudo_labels == 0 and calls == [10, 10]  # 20 epochs in all, labels only
    assert attempt.decision.accepted, attempt.decision.reason
