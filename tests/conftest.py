"""Shared fixtures: a real Mosquitto per test session and a unique topic prefix per test."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import pytest

from protocol import Topics
from scripts.broker import Broker, BrokerError
from scripts.secure_profile import SecureProfile, make_profile
from tests.pi_edge._model import EdgeModels, build
from tests.pi_edge._type_model import TypeModel, build_press


@pytest.fixture(autouse=True)
def _root_log_handlers() -> Iterator[None]:
    """The root logger's handlers as they were before the test: a CLI's `main()` run in-process
    adds a handler on the stream pytest captured for that test, and a thread of a later test
    that logs through it wrote "--- Logging error ---" (I/O on a closed file) into the run."""
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    yield
    for handler in root.handlers[:]:  # pytest's own capture handlers come and go per phase
        if handler not in before and not type(handler).__module__.startswith("_pytest"):
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """Mosquitto from the repo's mosquitto.conf on a free loopback port (never 1883)."""
    try:
        b = Broker(run_dir=tmp_path_factory.mktemp("mosquitto")).start()
    except BrokerError as exc:
        pytest.fail(f"cannot start the test broker: {exc}")
    yield b
    b.stop()


@pytest.fixture(scope="session")
def secure_profile(tmp_path_factory: pytest.TempPathFactory) -> SecureProfile:
    """CA, certificates and an ACL for every `test/<name>` prefix, with one identity per role
    named after it (`edge` is node `edge`); tests that need more enroll them."""
    return make_profile(
        tmp_path_factory.mktemp("secure-profile"),
        prefix="test/+",
        enroll_=[(role, role) for role in ("sensor", "edge", "trainer", "operator", "bridge")],
    )


@pytest.fixture(scope="session")
def secure_broker(
    tmp_path_factory: pytest.TempPathFactory, secure_profile: SecureProfile
) -> Iterator[Broker]:
    """Mosquitto in the secure profile (TLS only, a login per identity, the ACL) on a free port."""
    try:
        b = Broker(run_dir=tmp_path_factory.mktemp("mosquitto-secure"), profile=secure_profile)
        b.start()
    except BrokerError as exc:
        pytest.fail(f"cannot start the secure test broker: {exc}")
    yield b
    b.stop()


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> EdgeModels:
    """One tiny trained model and its signed bundles (tests/pi_edge/_model.py), built once for
    the pi_edge and the integration tests."""
    return build(tmp_path_factory.mktemp("pi_edge_models"))


@pytest.fixture(scope="session")
def press_model(tmp_path_factory: pytest.TempPathFactory, models: EdgeModels) -> TypeModel:
    """A second real model, of the made-up machine type `press` (32 × 3, 3 classes), built with
    the trainer's build path, signed with the session's key (tests/pi_edge/_type_model.py)."""
    return build_press(tmp_path_factory.mktemp("press_model"), models)


@pytest.fixture
def topics(request: pytest.FixtureRequest) -> Topics:
    """A topic prefix unique to this test, so tests never see each other's messages."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", request.node.name)[:60]
    return Topics(f"test/{name}")
