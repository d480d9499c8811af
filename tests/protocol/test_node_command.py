"""Node commands (`{prefix}/nodes/{node}/command`): round trip, refusals, fuzzing."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import PayloadError, Topics
from protocol.node_command import MAX_NODE_COMMAND_BYTES, NodeCommand


def test_a_rollback_round_trips_addressed_and_in_the_old_form() -> None:
    for cmd in (
        NodeCommand("rollback"),
        NodeCommand("rollback", id="console@17.5"),
        NodeCommand("rollback", id="console@17.5", from_version=2**31 - 1),
    ):
        assert NodeCommand.from_json(cmd.to_json()) == cmd
    assert json.loads(NodeCommand("rollback").to_json()) == {"v": 1, "cmd": "rollback"}
    addressed = NodeCommand("rollback", id="c@1", from_version=3)
    assert json.loads(addressed.to_json()) == {"v": 2, "cmd": "rollback", "id": "c@1", "from": 3}
    assert addressed.addressed and not NodeCommand("rollback", id="c@1").addressed


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (b'{"v":1}', "bad_field"),
        (b'{"v":1,"cmd":"rollback","when":1}', "bad_field"),
        (b'{"v":1,"cmd":1}', "bad_field"),
        (b'{"v":true,"cmd":"rollback"}', "bad_version"),
        (b'{"v":1,"cmd":"rollback","id":""}', "bad_id"),
        (b'{"v":1,"cmd":"rollback","from":3}', "bad_field"),  # v1 has no from
        (b'{"v":2,"cmd":"rollback","from":3}', "bad_field"),  # v2 needs an id
        (b'{"v":2,"cmd":"rollback","id":"a"}', "bad_field"),  # … and a from
        (b'{"v":2,"cmd":"rollback","id":"a","from":true}', "bad_field"),
        (b'{"v":2,"cmd":"rollback","id":"a","from":2147483648}', "bad_field"),
        (b'{"v":2,"cmd":"rollback","id":"a","from":1.0}', "bad_field"),
        (b'{"v":3,"cmd":"rollback","id":"a","from":1}', "bad_version"),
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
    assert cmd.from_version is None or (cmd.id is not None and 1 <= cmd.from_version < 2**31)


def test_the_topic_is_per_node() -> None:
    assert Topics("site").node_command("pi-1") == "site/nodes/pi-1/command"
    with pytest.raises(PayloadError):
        Topics("site").node_command("+")
