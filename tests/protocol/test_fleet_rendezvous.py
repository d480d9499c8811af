"""Rendezvous hashing and fleet membership (protocol/fleet.py): balance, minimal movement,
a hash that is the same in every process, and members that come, go and time out."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from protocol.fleet import Membership, fleet_group_of, rendezvous_owner, rendezvous_weight
from protocol.status_detail import FleetDetail

MACHINES = [f"m{i:03d}" for i in range(900)]
NODES = ("pi-a", "pi-b", "pi-c")


def owners(members: tuple[str, ...]) -> dict[str, str | None]:
    return {m: rendezvous_owner(m, members) for m in MACHINES}


def test_three_nodes_split_900_machines_evenly() -> None:
    per_node = Counter(owners(NODES).values())
    assert set(per_node) == set(NODES)
    assert all(250 <= n <= 350 for n in per_node.values()), per_node  # 300 ± 50


@pytest.mark.parametrize("seed", range(5))
def test_three_nodes_each_own_80_to_120_of_300(seed: int) -> None:
    machines = [f"press-{seed}-{i}" for i in range(300)]
    per_node = Counter(rendezvous_owner(m, NODES) for m in machines)
    assert all(80 <= per_node[n] <= 120 for n in NODES), per_node


def test_a_node_that_goes_moves_only_its_own_machines() -> None:
    before = owners(NODES)
    after = owners(("pi-a", "pi-c"))
    moved = {m for m in MACHINES if before[m] != after[m]}
    assert moved == {m for m in MACHINES if before[m] == "pi-b"}
    assert {after[m] for m in moved} == {"pi-a", "pi-c"}  # spread over both survivors


def test_a_node_that_joins_takes_about_a_quarter_and_only_from_others() -> None:
    before = owners(NODES)
    after = owners((*NODES, "pi-d"))
    moved = [m for m in MACHINES if before[m] != after[m]]
    assert all(after[m] == "pi-d" for m in moved)  # nothing moves between the old members
    assert 0.25 * 900 * 0.75 <= len(moved) <= 0.25 * 900 * 1.25


def test_the_owner_does_not_depend_on_member_order_or_duplicates() -> None:
    for m in MACHINES[:50]:
        assert rendezvous_owner(m, NODES) == rendezvous_owner(m, reversed(NODES))
        assert rendezvous_owner(m, NODES) == rendezvous_owner(m, (*NODES, *NODES))


def test_the_hash_is_the_same_in_another_process() -> None:
    """Python's hash() is salted per process; the weight must not be."""
    code = "from protocol.fleet import rendezvous_weight as w; print(w('pi-a', 'm01'))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    )
    assert int(out.stdout) == rendezvous_weight("pi-a", "m01")


def test_no_members_means_no_owner() -> None:
    assert rendezvous_owner("m01", []) is None


# ---------------------------------------------------------------- membership
def test_a_member_lives_while_its_statuses_keep_coming() -> None:
    m = Membership("g", "pi-a", timeout_s=6.0)
    m.observe("pi-b", "online", "g", 0.0)
    for t in (2.0, 4.0, 6.0, 8.0):
        m.observe("pi-b", "online", "g", t)
        assert m.members(t + 1.9) == ("pi-a", "pi-b")
    assert m.members(13.99) == ("pi-a", "pi-b")
    assert m.members(14.0) == ("pi-a",)  # 6 s after its last status


def test_offline_will_and_degraded_remove_a_member_at_once() -> None:
    m = Membership("g", "pi-a", timeout_s=6.0)
    for state in ("offline", "degraded"):
        m.observe("pi-b", "online", "g", 0.0)
        assert m.observe("pi-b", state, None, 0.5) is True
        assert m.members(0.6) == ("pi-a",)


def test_an_online_status_after_the_will_brings_a_member_back() -> None:
    m = Membership("g", "pi-a", timeout_s=6.0)
    m.observe("pi-b", "offline", None, 0.0)
    assert m.observe("pi-b", "online", "g", 1.0) is True
    assert m.members(1.0) == ("pi-a", "pi-b")


def test_other_groups_and_non_fleet_nodes_are_not_members() -> None:
    m = Membership("g", "pi-a", timeout_s=6.0)
    assert m.observe("pi-x", "online", "other", 0.0) is False
    assert m.observe("simulator", "online", None, 0.0) is False
    m.observe("pi-b", "online", "g", 0.0)
    assert m.observe("pi-b", "online", "other", 1.0) is True  # moved to another group
    assert m.members(1.0) == ("pi-a",)


def test_the_node_itself_is_always_a_member() -> None:
    m = Membership("g", "pi-a", timeout_s=6.0)
    assert m.members(0.0) == ("pi-a",)
    assert m.observe("pi-a", "offline", None, 1.0) is False  # its own stale retained status
    assert m.members(100.0) == ("pi-a",)


def test_a_repeated_status_is_not_a_change() -> None:
    m = Membership("g", "pi-a", timeout_s=6.0)
    assert m.observe("pi-b", "online", "g", 0.0) is True
    assert m.observe("pi-b", "online", "g", 2.0) is False
    assert m.observe("pi-b", "online", "g", 9.0) is True  # it had timed out in between


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        Membership("g", "pi-a", timeout_s=0.0)


def test_fleet_group_of_reads_only_a_well_formed_detail() -> None:
    fleet = FleetDetail("g", (), 0, 0, 0, 0, 0, 6.0).to_json_obj()
    assert fleet == {**fleet, "group": "g", "members": []}
    assert fleet_group_of({"fleet": fleet}) == "g"
    assert fleet_group_of({}) is None
    assert fleet_group_of({"fleet": {"group": 3}}) is None
    assert fleet_group_of({"fleet": ["g"]}) is None


def test_a_node_that_stops_hearing_itself_times_nobody_out() -> None:
    """A frozen or deaf node must not claim every machine when it wakes up."""
    m = Membership("g", "pi-a", timeout_s=6.0)
    m.observe("pi-a", "online", "g", 0.0)  # its own status, echoed by the broker
    m.observe("pi-b", "online", "g", 0.0)
    assert m.members(20.0) == ("pi-a", "pi-b")  # it heard nothing at all for 20 s: deaf
    m.observe("pi-a", "online", "g", 20.5)  # it hears itself again, pi-b still silent
    assert m.members(20.6) == ("pi-a",)
