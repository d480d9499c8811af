"""The daemon skips bundles on disk that do not verify or were made for another site, and starts
with the newest good one."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from jetson_trainer.build.keys import generate_keypair, load_private_key
from jetson_trainer.daemon.serve import ServeConfig, TrainerDaemon
from protocol import Topics, decode_bundle, encode_bundle, load_public_key
from scripts.broker import Broker

from .conftest import Trained

pytestmark = [pytest.mark.broker, pytest.mark.tensorflow]


def _models_with_three_bad_newest(trained: Trained, tmp_path: Path, site: str) -> Path:
    """v0001 good for `site`; v0002 signed by another key; v0003 corrupt; v0004 validly signed
    for another site (each beside a loadable Keras)."""
    models = tmp_path / "models"
    shutil.copytree(trained.out, models / "v0001")
    made = decode_bundle(trained.bundle.read_bytes(), load_public_key(trained.public_key))
    sign = load_private_key(trained.private_key).sign
    good = dataclasses.replace(made.manifest, site=site)
    (models / "v0001" / "model.bundle").write_bytes(encode_bundle(good, made.model, sign))
    other_private, _ = generate_keypair(tmp_path / "other-keys")
    forged = encode_bundle(good, made.model, load_private_key(other_private).sign)
    elsewhere = dataclasses.replace(good, version=4, site="plant-elsewhere/v1")
    for version, payload in (
        ("v0002", forged),
        ("v0003", b"EDGL\x01 not a bundle at all"),
        ("v0004", encode_bundle(elsewhere, made.model, sign)),
    ):
        (models / version).mkdir()
        (models / version / "model.bundle").write_bytes(payload)
        shutil.copy(trained.out / "model.keras", models / version / "model.keras")
    return models


def test_daemon_skips_corrupt_wrongly_signed_and_other_site_bundles_and_serves_the_good_one(
    trained: Trained, broker: Broker, topics: Topics, tmp_path: Path
) -> None:
    models = _models_with_three_bad_newest(trained, tmp_path, topics.prefix)
    daemon = TrainerDaemon(
        ServeConfig(
            broker=broker.address,
            prefix=topics.prefix,
            store=tmp_path / "trainer",
            private_key=trained.private_key,
            models=models,
            client_id="trainer-skip",
            dashboard=False,
        )
    ).start()
    try:
        champion = daemon.champion
        assert champion is not None and champion.version == 1
        assert champion.path == models / "v0001" / "model.bundle"
        status = daemon.status()
        assert status.model_version == 1
        assert status.errors["bad_bundle"] == 3
        skipped = status.detail["skipped_bundles"]
        assert [s.split(":")[0] for s in skipped] == [
            "v0004/model.bundle",
            "v0003/model.bundle",
            "v0002/model.bundle",
        ]
        assert "made for site 'plant-elsewhere/v1'" in skipped[0]
        assert "signature" in skipped[2].lower()
    finally:
        daemon.stop()
