"""Which bundles a node trusts, end to end: a real Mosquitto, a real model, a running EdgeService.

A replayed older bundle, a bundle made for another site and an unsigned one are refused with the
reason in the node's status while the old model keeps classifying; a bundle whose manifest is
malformed (finding 2: `"normalisation": [1]`) does not stop the model thread, so a valid bundle
published afterwards is served, also when the bad one was retained before the node started.
`--insecure-dev` is a command-line flag only and cannot be combined with a public key.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nodekit.cli import EXIT_USAGE
from nodekit.settings import build, resolve
from pi_edge import EdgeConfig, EdgeService
from pi_edge.__main__ import main
from protocol import ConfigError, Status, Topics, Window, encode_window
from protocol.bundle import HEADER

from ._model import EdgeModels
from .conftest import Listener, Publisher


@pytest.fixture
def node(
    broker: Any, topics: Topics, models: EdgeModels, tmp_path: Path
) -> Iterator[Callable[..., EdgeService]]:
    made: list[EdgeService] = []

    def _make(*, key: bool = True, **kw: Any) -> EdgeService:
        cfg = build(
            EdgeConfig,
            broker=broker.address,
            prefix=topics.prefix,
            node=f"edge-trust-{time.time_ns()}",
            public_key=models.public_key_path if key else None,
            insecure_dev=not key,
            state_dir=tmp_path / "state",
            dashboard=False,
            status_interval_s=0.2,
            **kw,
        )
        svc = EdgeService(cfg, public_key=models.public_key if key else None)
        made.append(svc)
        return svc.start()

    yield _make
    for svc in made:
        svc.stop()


def _status(
    lst: Listener, topics: Topics, svc: EdgeService, cond: Callable[[Status], bool]
) -> Status:
    topic = topics.status(svc.config.node)
    found: list[Status] = []

    def pred(msgs: list[tuple[str, bytes, bool]]) -> bool:
        for t, p, _ in reversed(msgs):
            if t == topic and cond(s := Status.from_json(p)):
                found.append(s)
                return True
        return False

    assert lst.wait_for(pred, 15), f"no status on {topic} matched; last: {lst.on(topic)[-1:]}"
    return found[0]


def _classifies_with(
    lst: Listener, publisher: Publisher, topics: Topics, models: EdgeModels, version: int
) -> None:
    """A window sent now is classified, by model `version`."""
    machine = f"m{time.time_ns() % 100000}"
    w = Window(machine, 0, time.time_ns(), models.x_test[0], int(models.y_test[0]))
    publisher.publish(topics.window(machine), encode_window(w), 0)
    topic = topics.prediction(machine)
    assert lst.wait_for(lambda m: any(t == topic for t, _, _ in m), 15), "no prediction"
    assert json.loads(lst.on(topic)[0])["model_version"] == version


def _with_manifest(models: EdgeModels, manifest: Any, *, signed: bool) -> bytes:
    raw = json.dumps(manifest).encode()
    flags, s_len = (1, 64) if signed else (0, 0)
    body = HEADER.pack(b"EB", 1, flags, len(raw), len(models.model), s_len) + raw + models.model
    return body + models.private_key.sign(body) if signed else body


@pytest.mark.broker
def test_a_replayed_older_bundle_is_refused_and_the_status_says_why(
    node: Callable[..., EdgeService],
    publisher: Publisher,
    listen: Any,
    topics: Topics,
    models: EdgeModels,
) -> None:
    lst = listen(topics.predictions(), topics.statuses())
    svc = node(model=models.bundle_path)
    publisher.publish(topics.model_current, models.bundle(3, site=topics.prefix), retain=True)
    assert svc.wait_for_model(3, timeout=20)
    publisher.publish(topics.model_current, models.bundle(1, site=topics.prefix), retain=True)
    status = _status(lst, topics, svc, lambda s: s.errors.get("bundle_replay", 0) >= 1)
    assert status.model_version == 3
    assert "v1 is older than v3" in str(status.detail["last_model_error"])
    assert svc.model_version == 3
    _classifies_with(lst, publisher, topics, models, 3)


@pytest.mark.broker
def test_a_bundle_for_another_site_is_refused(
    node: Callable[..., EdgeService],
    publisher: Publisher,
    listen: Any,
    topics: Topics,
    models: EdgeModels,
) -> None:
    lst = listen(topics.predictions(), topics.statuses())
    svc = node(model=models.bundle_path)
    publisher.publish(topics.model_current, models.bundle(2, site="plant-b/v1"), retain=True)
    status = _status(lst, topics, svc, lambda s: s.errors.get("bundle_site", 0) >= 1)
    assert "made for site 'plant-b/v1'" in str(status.detail["last_model_error"])
    assert status.model_version == 1 and svc.model_version == 1
    _classifies_with(lst, publisher, topics, models, 1)


@pytest.mark.broker
def test_an_unsigned_bundle_is_refused_by_a_node_with_a_key(
    node: Callable[..., EdgeService],
    publisher: Publisher,
    listen: Any,
    topics: Topics,
    models: EdgeModels,
) -> None:
    lst = listen(topics.predictions(), topics.statuses())
    svc = node(model=models.bundle_path)
    bad = {**models.bundle_manifest(2, site=topics.prefix), "normalisation": [1]}
    publisher.publish(topics.model_current, _with_manifest(models, bad, signed=False), retain=True)
    status = _status(lst, topics, svc, lambda s: s.errors.get("bundle_signature", 0) >= 1)
    assert "unsigned" in str(status.detail["last_model_error"])
    publisher.publish(topics.model_current, models.bundle(2, site=topics.prefix), retain=True)
    assert svc.wait_for_model(2, timeout=20), "the model thread stopped after a bad bundle"
    _classifies_with(lst, publisher, topics, models, 2)


@pytest.mark.broker
@pytest.mark.parametrize("key", [True, False], ids=["signed", "insecure-dev"])
def test_a_retained_bad_manifest_does_not_stop_the_model_thread(
    node: Callable[..., EdgeService],
    publisher: Publisher,
    listen: Any,
    topics: Topics,
    models: EdgeModels,
    key: bool,
) -> None:
    lst = listen(topics.predictions(), topics.statuses())
    bad = {**models.bundle_manifest(2, site=topics.prefix), "normalisation": [1]}
    publisher.publish(topics.model_current, _with_manifest(models, bad, signed=key), retain=True)
    svc = node(key=key)  # starts with the bad bundle retained, no model of its own
    status = _status(lst, topics, svc, lambda s: s.errors.get("bundle_malformed", 0) >= 1)
    assert "normalisation" in str(status.detail["last_model_error"])
    assert svc.model_version is None
    publisher.publish(topics.model_current, models.bundle(3, site=topics.prefix), retain=True)
    assert svc.wait_for_model(3, timeout=20), "the model thread stopped after a bad bundle"
    _classifies_with(lst, publisher, topics, models, 3)


# -- --insecure-dev: a flag only, never with a key --------------------------------------------


def test_insecure_dev_with_a_public_key_is_a_usage_error(
    models: EdgeModels, tmp_path: Path
) -> None:
    argv = ["run", "--no-dashboard", "--state-dir", str(tmp_path), "--broker", "127.0.0.1:1"]
    assert main([*argv, "--insecure-dev", "--public-key", str(models.public_key_path)]) == (
        EXIT_USAGE
    )
    with pytest.raises(ConfigError, match="together with a public key"):
        build(EdgeConfig, insecure_dev=True, public_key=models.public_key_path)


def test_insecure_dev_is_refused_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match="only be given on the command line"):
        resolve(EdgeConfig, env={"EDGELOOP_INSECURE_DEV": "1"})
    monkeypatch.setenv("EDGELOOP_INSECURE_DEV", "true")
    argv = ["run", "--no-dashboard", "--state-dir", str(tmp_path), "--broker", "127.0.0.1:1"]
    assert main(argv) == EXIT_USAGE


def test_insecure_dev_is_refused_from_a_config_file(tmp_path: Path) -> None:
    for text in ("insecure_dev = true\n", "[edge]\ninsecure_dev = true\n"):
        toml = tmp_path / "edge.toml"
        toml.write_text(text)
        with pytest.raises(ConfigError, match="--insecure-dev"):
            resolve(EdgeConfig, file=toml, section="edge")
        argv = ["run", "--no-dashboard", "--config", str(toml), "--broker", "127.0.0.1:1"]
        assert main([*argv, "--state-dir", str(tmp_path)]) == EXIT_USAGE


def test_insecure_dev_from_the_command_line_still_works() -> None:
    cfg = resolve(EdgeConfig, env={}, flags={"insecure_dev": True})
    assert cfg.models.insecure_dev and cfg.models.public_key is None


def test_a_small_order_public_key_file_is_a_usage_error(tmp_path: Path) -> None:
    key = tmp_path / "identity.pub"
    key.write_bytes(bytes([1]) + bytes(31))
    argv = ["run", "--no-dashboard", "--state-dir", str(tmp_path), "--broker", "127.0.0.1:1"]
    assert main([*argv, "--public-key", str(key)]) == EXIT_USAGE
