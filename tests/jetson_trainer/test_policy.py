"""Fine-tune trigger policy: when the daemon trains, and on which labels."""

from __future__ import annotations

from jetson_trainer.daemon.finetune_policy import Observation, PolicyConfig, TrainPolicy


def obs(seqno: int, new: int, acc: float | None, pi: bool = False) -> Observation:
    return Observation(store_seqno=seqno, new_labels=new, recent_accuracy=acc, pi_drift=pi)


def test_accurate_champion_never_trains_however_many_labels_arrive() -> None:
    policy = TrainPolicy(PolicyConfig(labels_needed=8))
    assert all(policy.update(obs(i, i, 1.0)).startswith("watching") for i in range(0, 500, 10))


def test_low_accuracy_collects_labels_after_the_trigger_then_trains() -> None:
    policy = TrainPolicy(PolicyConfig(labels_needed=8, trigger_accuracy=0.9))
    assert policy.update(obs(100, 50, 0.6)).startswith("collecting: 0/8")
    assert policy.labels_after == 100
    assert (
        policy.update(obs(105, 7, 0.6)) == "collecting: 7/8 labels since trigger "
        "(champion accuracy 0.600 on the newest labels)"
    )
    assert policy.update(obs(110, 8, 0.6)) == "train"


def test_pi_drift_report_triggers_once_until_the_model_changes() -> None:
    policy = TrainPolicy(PolicyConfig(labels_needed=4))
    assert policy.update(obs(10, 0, 1.0, pi=True)).startswith("collecting")
    assert policy.update(obs(20, 4, 1.0, pi=True)) == "train"
    policy.attempted(accepted=False)
    assert policy.update(obs(30, 0, 1.0, pi=True)).startswith("watching")
    policy.model_changed()
    assert policy.update(obs(40, 0, 1.0, pi=True)).startswith("collecting")


def test_low_accuracy_retriggers_even_after_a_rejected_attempt() -> None:
    policy = TrainPolicy(PolicyConfig(labels_needed=4))
    policy.update(obs(10, 0, 0.5))
    policy.attempted(accepted=False)
    assert policy.update(obs(20, 0, 0.5)).startswith("collecting")
