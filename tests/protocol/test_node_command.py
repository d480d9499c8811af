"""Node commands (`{prefix}/nodes/{node}/command`): round trip, refusals, fuzzing."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import PayloadError, Topics
from protocol.node_command import MAX_NODE_COMMAND_BYTES, NodeCommand


def test_a_rollback_round_trips_with_and_without_an_id() -> None:
    for cmd in (NodeCommand("rollback"), NodeCommand("rollback", id="console@17.5")):
        assert NodeCommand.from_json(cmd.to_json()) == cmd
    assert json.loads(NodeCommand("rollback").to_json()) == {"v": 1, "cmd": "rollback"}


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (b'{"v":1}', "bad_field"),
        (b'{"v":1,"cmd":"rollback","when":1}', "bad_field"),
        (b'{"v":1,"cmd":1}', "bad_field"),
        (b'{"v":true,"cmd":"rollback"}', "bad_version"),
        (b'{"v":1,"cmd":"rollback","id":""}', "bad_id"),
        (b'{"v":1,"cmd":"rollback","id":{"a":1}}', "too_deep"),
        (b'"rollback"', "bad_json"),
        (b"\xff", "bad_utf8"),
        (b" " * (MAX_NODE_COMMAND_BYTES + 1), "too_large"),
    ],
)
def test_bad_commands_are_refused_with_their_kind(payload: bytes, kind: str) -> None:
    with pytest.raises(PayloadError) as info:
        NodeCommand.from_json(payload)
    assert info.value.kind == kind


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=600) | st.text(max_size=200).map(str.encode))
def test_any_bytes_give_a_command_or_a_payload_error(payload: bytes) -> None:
    try:
        cmd = NodeCommand.from_json(payload)
    except PayloadError:
        return
    assert cmd.cmd == "rollback"


def test_the_topic_is_per_node() -> None:
    assert Topics("site").node_command("pi-1") == "site/nodes/pi-1/command"
    with pytest.raises(PayloadError):
        Topics("site").node_command("+")
