"""The staged rollout's shell (jetson_trainer/daemon/rollout_shell.py) with a recording client:
which topic gets which version when, without a broker (the broker test is
test_staged_rollout.py)."""

from __future__ import annotations

from typing import Any

from jetson_trainer.daemon.retrain import Champion
from jetson_trainer.daemon.rollout_shell import StagedRollout
from protocol import Manifest, Status, Topics
from protocol.status_detail import HealthFigures, ModelHealthDetail, Rollback

TOPICS = Topics("site")
CURRENT = TOPICS.model_current
GROUP = TOPICS.model_group("canary")


class Client:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, int, bool]] = []

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        self.sent.append((topic, payload, qos, retain))

    def on(self, topic: str) -> list[int]:
        return [int(p.decode()) for t, p, _, _ in self.sent if t == topic]


def _champion(version: int) -> Champion:
    manifest = Manifest(version=version, model_sha256="0" * 64, model_bytes=1, site="site")
    return Champion(version, str(version).encode(), b"", manifest, None)


def _health(watched: int, verdict: str) -> dict[str, Any]:
    """An edge node's `detail.model_health` after a watch of `watched`."""
    none = HealthFigures(0, None, None, 0, None)
    return ModelHealthDetail(
        None, watched, None, None, verdict, None, None, 60.0, None, None, none
    ).to_json_obj()


def _rollback(version: int) -> dict[str, Any]:
    return Rollback(version, version - 1, "accuracy fell", 1.0, True).to_json_obj()


def _status(node: str, serving: int | None, **detail: Any) -> Status:
    state = "offline" if serving is None else "online"
    return Status(node, "edge", state, "0.1.0", model_version=serving, detail=detail)


def test_without_canary_groups_every_version_goes_straight_to_model_current() -> None:
    client = Client()
    staged = StagedRollout(client, TOPICS, (), 60.0)
    assert staged.announce(_champion(1)) is True
    staged.offer(_champion(2))
    staged.announce(_champion(2))  # a reconnect: the same version again, retained
    assert client.on(CURRENT) == [1, 2, 2] and client.on(GROUP) == []
    assert all(qos == 1 and retain for _, _, qos, retain in client.sent)
    assert staged.detail() is None and staged.step(frozenset(), 1e9) is None


def test_a_canary_version_is_promoted_once_and_a_bad_one_is_never_sent_again() -> None:
    client = Client()
    staged = StagedRollout(client, TOPICS, ("canary",), 60.0)
    staged.announce(_champion(1))
    assert client.on(GROUP) == [1] and client.on(CURRENT) == []
    health = _health(1, "idle")
    staged.on_status(_status("pi-c", 1, rollout_group="canary", model_health=health))
    staged.on_status(_status("pi-x", 1, model_health=_health(1, "passed")))
    assert staged.step(frozenset()) is None  # only a non-canary passed; the canary has no watch
    promoted = staged.step(frozenset(), now=1e12)  # … until the canary watch ends
    assert promoted is not None and promoted.version == 1
    assert client.on(CURRENT) == [1] and staged.step(frozenset(), now=2e12) is None

    staged.offer(_champion(2))
    staged.on_status(
        _status("pi-c", 1, rollout_group="canary", rollbacks=[_rollback(2)], model_health=health)
    )
    assert staged.step(frozenset()) is None
    detail = staged.detail()
    assert detail is not None
    assert (detail["version"], detail["phase"], detail["current_version"]) == (2, "bad", 1)
    staged.announce(_champion(2))  # a reconnect before the fallback: v2 is not offered again
    assert client.on(GROUP) == [1, 2] and client.on(CURRENT) == [1, 1]

    staged.offer(_champion(3))  # the last good, re-issued
    detail = staged.detail()
    assert detail is not None and detail["version"] == 3 and detail["phase"] == "canary"
    assert detail["ended"] == [
        {"version": 2, "phase": "bad", "reason": "canary pi-c rolled back from v2; never promoted"}
    ]
    assert client.on(GROUP) == [1, 2, 3] and client.on(CURRENT) == [1, 1]
