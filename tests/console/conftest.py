"""Console fixtures: the pi_edge tests' tiny real model (for a real rollback), MQTT helpers."""

from __future__ import annotations

import pytest

from tests.pi_edge._model import EdgeModels, build
from tests.pi_edge.conftest import Listener, Publisher, listen, publisher

__all__ = ["EdgeModels", "Listener", "Publisher", "listen", "publisher"]


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> EdgeModels:
    return build(tmp_path_factory.mktemp("console_models"))
