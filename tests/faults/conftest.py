"""Fault-test fixtures: the session's signed model, a broker and the node processes of a test.

Each test gets its own Mosquitto (with persistence, in its tmp dir) rather than the session's:
the faults leave persistent sessions, queued batches and retained messages behind, and one
test crashes its broker. All use the prefix the kit's model is made for (`SITE`). A test that
fails prints the tails of its nodes' logs; every node and broker is stopped at teardown.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from protocol import Topics
from scripts.broker import Broker, BrokerError

from ._kit import SITE, Kit, Nodes, train_kit

_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


@pytest.fixture(scope="session")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    try:
        return train_kit(tmp_path_factory.mktemp("fault_kit"))
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def fault_broker(tmp_path: Path) -> Iterator[Broker]:
    """A Mosquitto of this test alone, persistence in tmp_path/broker (see module docstring)."""
    try:
        broker = Broker(run_dir=tmp_path / "broker").start()
    except BrokerError as exc:
        pytest.fail(f"cannot start the test broker: {exc}")
    yield broker
    broker.stop()


@pytest.fixture
def site() -> Topics:
    return Topics(SITE)


@pytest.fixture
def nodes(kit: Kit, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Nodes]:
    made = Nodes(kit, tmp_path, SITE, [])
    yield made
    for child in made.children:
        child.stop(timeout=10)
    if request.node.stash.get(_FAILED, False):
        print(f"\n{made.tails()}")
