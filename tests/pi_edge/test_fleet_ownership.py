"""pi_edge/intake/ownership.py's Ownership: the per-window answer, its cache, the machines handed
over, and the `--fleet` settings (pure; the broker test is test_fleet.py)."""

from __future__ import annotations

import pytest

from nodekit.settings import resolve
from pi_edge.config import EdgeConfig
from pi_edge.intake.ownership import Change, Membership, Ownership
from protocol import ConfigError
from protocol.fleet import rendezvous_owner

MACHINES = [f"m{i:02d}" for i in range(48)]


def ownership(node: str = "pi-a", **kw: object) -> tuple[Ownership, list[Change]]:
    changes: list[Change] = []
    own = Ownership(Membership("g", node, 6.0), on_change=changes.append, **kw)  # type: ignore[arg-type]
    return own, changes


def test_alone_a_node_owns_everything_and_skips_nothing() -> None:
    own, changes = ownership()
    assert all(own.owns(m, 0.0) for m in MACHINES)
    assert own.skipped == 0 and changes == []


def test_it_owns_exactly_what_the_hash_gives_it() -> None:
    own, _ = ownership()
    own.observe("pi-b", "online", "g", 0.0)
    own.observe("pi-c", "online", "g", 0.0)
    mine = [m for m in MACHINES if own.owns(m, 0.1)]
    assert mine == [m for m in MACHINES if rendezvous_owner(m, ("pi-a", "pi-b", "pi-c")) == "pi-a"]
    assert own.skipped == len(MACHINES) - len(mine)
    assert own.info()["owned"] == len(mine)


def test_a_member_that_dies_silently_hands_its_machines_back_after_the_timeout() -> None:
    own, changes = ownership()
    own.observe("pi-b", "online", "g", 0.0)
    before = {m for m in MACHINES if own.owns(m, 0.0)}
    assert before != set(MACHINES)
    assert {m for m in MACHINES if own.owns(m, 5.9)} == before  # not yet
    assert all(own.owns(m, 6.05) for m in MACHINES)  # the next check after 6 s
    assert changes[-1].members == ("pi-a",) and set(changes[-1].gained) == set(MACHINES) - before
    assert own.take_lost() == []


def test_a_joiner_takes_machines_and_the_worker_hears_which() -> None:
    own, changes = ownership()
    for m in MACHINES:
        own.owns(m, 0.0)
    own.observe("pi-b", "online", "g", 1.0)  # a status: the change is seen at once
    lost = own.take_lost()
    assert lost and set(lost) == {
        m for m in MACHINES if rendezvous_owner(m, ("pi-a", "pi-b")) == "pi-b"
    }
    assert not any(own.owns(m, 1.0) for m in lost)
    assert not any(own.owned(m) for m in lost) and own.owned("m00") != ("m00" in lost)
    assert own.take_lost() == []  # handed over once
    assert changes[-1].lost == tuple(lost) and own.generation == 1


def test_a_machine_won_back_before_the_worker_looked_is_not_forgotten() -> None:
    own, _ = ownership()
    for m in MACHINES:
        own.owns(m, 0.0)
    own.observe("pi-b", "online", "g", 1.0)
    own.observe("pi-b", "offline", None, 1.1)  # a Will right after
    assert own.take_lost() == []


def test_the_member_set_is_read_at_most_every_check_period() -> None:
    own, _ = ownership(check_every_s=1.0)
    own.observe("pi-b", "online", "g", 0.0)
    first = [own.owns(m, 0.0) for m in MACHINES]
    own.membership.observe("pi-c", "online", "g", 0.1)  # behind Ownership's back
    assert [own.owns(m, 0.5) for m in MACHINES] == first  # cached until the next check
    assert own.generation == 1
    own.owns("m00", 1.0)
    assert own.generation == 2


def test_the_cache_is_bounded_and_keeps_owned_machines() -> None:
    own, _ = ownership(max_cached=20)
    own.observe("pi-b", "online", "g", 0.0)
    for i in range(500):
        own.owns(f"x{i}", 0.0)
    assert own.info()["seen"] <= 20


def test_mine_answers_for_machines_the_cache_dropped_without_counting() -> None:
    """What the worker asks of a machine the cap evicted (is its state this node's to clear?)
    even after the bounded cache dropped it."""
    own, _ = ownership(max_cached=4)
    own.observe("pi-b", "online", "g", 0.0)
    for m in MACHINES:
        own.owns(m, 0.0)
    skipped = own.skipped
    members = ("pi-a", "pi-b")
    assert [own.mine(m) for m in MACHINES] == [
        rendezvous_owner(m, members) == "pi-a" for m in MACHINES
    ]
    assert own.skipped == skipped and own.info()["seen"] <= 4


def test_status_detail() -> None:
    own, _ = ownership()
    own.observe("pi-b", "online", "g", 0.0)
    info = own.info()
    assert info["group"] == "g" and info["members"] == ["pi-a", "pi-b"]
    assert info["timeout_s"] == 6.0


# ---------------------------------------------------------------- settings
def test_fleet_settings_resolve() -> None:
    cfg = resolve(EdgeConfig, flags={"fleet": "line-1", "fleet_timeout_s": "4"})
    assert cfg.intake.fleet == "line-1" and cfg.intake.fleet_timeout_s == 4.0
    assert resolve(EdgeConfig, env={"EDGELOOP_FLEET": "line-2"}).intake.fleet == "line-2"


def test_fleet_with_shared_group_is_refused() -> None:
    with pytest.raises(ConfigError, match="drop --shared-group"):
        resolve(EdgeConfig, flags={"fleet": "g", "shared_group": "pis"})


def test_a_bad_fleet_group_is_refused() -> None:
    with pytest.raises(ConfigError, match="fleet group"):
        resolve(EdgeConfig, flags={"fleet": "line/1"})


def test_prometheus_metrics_of_a_fleet_member_and_none_without_a_fleet() -> None:
    from nodekit.metrics_server import exposition
    from pi_edge.report.prometheus import _fleet
    from protocol import Status

    own, _ = ownership()
    own.observe("pi-b", "online", "g", 0.0)
    for m in MACHINES:
        own.owns(m, 0.1)
    status = Status("pi-a", "edge", "online", "0", detail={"fleet": own.info()})
    text = exposition(_fleet(status)).decode()
    assert "edgeloop_fleet_members 2.0" in text
    assert f"edgeloop_fleet_machines_owned {float(own.info()['owned'])}" in text
    assert f"edgeloop_fleet_windows_skipped_total {float(own.skipped)}" in text
    assert "edgeloop_fleet_member_changes_total 1.0" in text
    assert _fleet(Status("pi-a", "edge", "online", "0")) == []
