"""Issue 23, edge half, without a broker: whose statuses make a fleet, whose labels count, label
requests for any window seq, and labels.json fsynced."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from nodekit.settings import build, resolve
from pi_edge.config import EdgeConfig
from pi_edge.intake.config import IntakeConfig
from pi_edge.intake.ownership import Membership, Ownership
from pi_edge.loop.maintenance_labels import Labeler
from protocol import ConfigError, Status, Window
from protocol.fleet import fleet_view, rendezvous_owner
from protocol.label_request import LabelRequest, LabelRequests
from protocol.labels import LabelEvent
from protocol.status_detail import FleetDetail

T0 = 1_790_000_000.0
MACHINES = [f"m{i:02d}" for i in range(1, 17)]


def _online(node: str, group: str = "line-1", role: str = "edge") -> Status:
    fleet = FleetDetail(group, (node,), 0, 0, 0, 1, 0, 6.0).to_json_obj()
    return Status(node, role, "online", "1.0", detail={"v": 1, "fleet": fleet})


# ---------------------------------------------------------------------------- fleet
def test_a_status_counts_only_on_its_own_topic_and_only_from_an_edge_node() -> None:
    bad: list[str] = []
    assert fleet_view("pi-b", _online("pi-b")) == ("online", "line-1")
    assert fleet_view("pi-b", Status("pi-b", "edge", "offline", "1")) == ("offline", None)
    assert fleet_view("ghost", _online("pi-b"), lambda e: bad.append(e.kind)) is None
    forged = Status("pi-a", "edge", "offline", "1")  # on pi-b's topic
    assert fleet_view("pi-b", forged, lambda e: bad.append(e.kind)) is None
    assert bad == ["bad_id", "bad_id"]
    for role in ("trainer", "sensor", "operator", "simulator"):
        assert fleet_view("pi-b", _online("pi-b", role=role)) is None


def test_forged_and_phantom_statuses_move_no_machine() -> None:
    """What the paho thread does per status: fleet_view, then observe. Forgeries naming another
    node, of another role, or (with an allow-list) of an unknown id change nobody's share."""
    own = Ownership(Membership("line-1", "pi-a", 6.0, allowed=frozenset({"pi-a", "pi-b"})))

    def hear(topic_node: str, status: Status | None, now: float) -> None:
        view = fleet_view(topic_node, status)
        if view is not None:
            own.observe(topic_node, view[0], view[1], now)

    hear("pi-b", _online("pi-b"), 0.0)
    before = [m for m in MACHINES if own.owns(m, 0.1)]
    assert own.members == ("pi-a", "pi-b") and 0 < len(before) < 16
    for i in range(50):  # phantoms: of unknown ids, naming another node, of another role
        hear(f"ghost-{i}", _online(f"ghost-{i}"), 0.2)
        hear(f"ghost-{i}", Status("pi-b", "edge", "offline", "1"), 0.2)
        hear("pi-b", _online("pi-b", role="trainer"), 0.2)
    assert [m for m in MACHINES if own.owns(m, 0.3)] == before
    assert own.members == ("pi-a", "pi-b") and own.generation == 1
    assert own.membership.ignored == 50
    assert before == [m for m in MACHINES if rendezvous_owner(m, ("pi-a", "pi-b")) == "pi-a"]


def test_fleet_members_is_a_setting_and_the_node_is_always_one() -> None:
    cfg = resolve(EdgeConfig, flags={"fleet": "line-1", "fleet_members": "pi-b,pi-c"})
    own = cfg.intake.ownership("pi-a", lambda change: None)
    assert own is not None and own.membership.allowed == {"pi-a", "pi-b", "pi-c"}
    with pytest.raises(ConfigError):
        resolve(EdgeConfig, flags={"fleet": "line-1", "fleet_members": "pi/b"})


# ---------------------------------------------------------------------------- labels
def test_window_labels_auto_trusts_none_once_the_node_logs_in() -> None:
    plain = build(EdgeConfig)
    assert plain.intake.label_trust(logged_in=False) is True
    assert plain.intake.label_trust(logged_in=True) is False
    env = {"EDGELOOP_WINDOW_LABELS": "m01,m02"}
    assert resolve(EdgeConfig, env=env).intake.label_trust(True) == {"m01", "m02"}
    assert IntakeConfig(window_labels=("all",)).label_trust(True) is True
    assert IntakeConfig(window_labels=("none",)).label_trust(False) is False
    for bad in (("all", "m01"), ("m/1",), ()):
        with pytest.raises(ConfigError):
            IntakeConfig(window_labels=bad)


def test_a_maintenance_label_wins_over_an_in_band_one_new_and_held() -> None:
    lab = Labeler(None, hold_windows=100, hold_s=600.0)
    data = np.zeros((60, 4), np.float32)
    held = [Window("m01", i, int((T0 + i) * 1e9), data, label=0) for i in range(5)]
    lab.hold(held, [0] * 5, [0.0] * 5, now=T0 + 5)
    lab.submit(LabelEvent("m01", "pump_fault", T0 + 2).to_json())
    kept = lab.pump(now=T0 + 6)
    assert [(k.window.seq, k.window.label) for k in kept] == [(2, 3), (3, 3), (4, 3)]
    new = lab.label_new([Window("m01", 9, int((T0 + 9) * 1e9), data, label=0)])
    assert new[0].label == 3


def test_labels_json_is_written_with_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    lab = Labeler(tmp_path, hold_windows=0, hold_s=0.0)
    lab.submit(LabelEvent("m01", "pump_fault", T0).to_json())
    lab.pump(now=T0)
    assert len(synced) >= 2  # the file and its directory
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))
    assert Labeler(tmp_path, hold_windows=0, hold_s=0.0).book.label_at("m01", T0 + 1) == 3


# ---------------------------------------------------------------------------- label requests
@pytest.mark.parametrize("seq", [0, 2**63 - 1, 2**63, 2**64 - 1])
def test_a_label_request_names_any_window_seq(seq: int) -> None:
    w = Window("m01", seq, int(T0 * 1e9), np.zeros((60, 4), np.float32))
    req = LabelRequests("pi-1", T0, (LabelRequest(w.machine, T0, T0 + 1e-6, "normal", 0.4, seq),))
    back = LabelRequests.from_json(req.to_json())
    assert back == req and back.requests[0].seq == w.seq
    assert back.requests[0].label_event("pump_fault").label_id.startswith(f"req-m01-{seq}@")
