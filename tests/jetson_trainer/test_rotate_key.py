"""`jetson_trainer rotate-key` without a broker: two rotations make a chain a node walks, the
bundles under --models are re-signed, a revoked or unknown old key is refused, files are kept."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from jetson_trainer.__main__ import main
from jetson_trainer.build.keys import PRIVATE_NAME, generate_keypair, load_private_key
from jetson_trainer.build.rotation import KEY_LOG_NAME, rotate_key
from jetson_trainer.errors import TrainerError
from protocol import Manifest, decode_bundle, encode_bundle
from protocol.keys import TrustSet, decode_log, key_id, raw_public_key

SITE = "plant-a/v1"
MODEL = b"TFL3" + bytes(range(100))


def _bundle(key: object, version: int) -> bytes:
    m = Manifest(
        version=version,
        site=SITE,
        model_sha256=hashlib.sha256(MODEL).hexdigest(),
        model_bytes=len(MODEL),
    )
    return encode_bundle(m, MODEL, key.sign)  # type: ignore[attr-defined]


def test_two_rotations_make_a_chain_and_re_sign_the_bundles(tmp_path: Path) -> None:
    a_priv, _ = generate_keypair(tmp_path / "keys")
    a = load_private_key(a_priv)
    models = tmp_path / "store" / "models"
    for v in (1, 2):
        (models / f"v{v:04d}").mkdir(parents=True)
        (models / f"v{v:04d}" / "model.bundle").write_bytes(_bundle(a, v))
    first = rotate_key(a_priv, tmp_path / "keys-2", site=SITE, models_dir=models)
    assert first.seq == 1 and first.revoked == (first.old_id,)
    assert first.key_log == tmp_path / "keys" / KEY_LOG_NAME
    assert len(first.resigned) == 2
    b = load_private_key(first.private_key)
    for path in first.resigned:
        assert decode_bundle(path.read_bytes(), raw_public_key(b)).signed
    second = rotate_key(
        first.private_key, tmp_path / "keys-3", site=SITE, key_log=first.key_log, keep_old=True
    )
    assert second.seq == 2 and second.revoked == ()
    chain = decode_log(second.key_log.read_bytes())
    assert [r.seq for r in chain] == [1, 2]
    node = TrustSet.of([raw_public_key(a)])  # a Pi installed with the first key
    trust, applied = node.apply_log(second.log_bytes, SITE)
    c = load_private_key(second.private_key)
    assert len(applied) == 2
    assert set(trust.ids) == {key_id(raw_public_key(b)), key_id(raw_public_key(c))}
    assert trust.is_revoked(key_id(raw_public_key(a)))


def test_a_revoked_or_unknown_old_key_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    a_priv, _ = generate_keypair(tmp_path / "keys")
    first = rotate_key(a_priv, tmp_path / "keys-2", site=SITE)
    with pytest.raises(TrainerError, match="was revoked"):
        rotate_key(a_priv, tmp_path / "keys-x", site=SITE, key_log=first.key_log)
    stranger, _ = generate_keypair(tmp_path / "other")
    with pytest.raises(TrainerError, match="appears nowhere"):
        rotate_key(stranger, tmp_path / "keys-y", site=SITE, key_log=first.key_log)
    with pytest.raises(TrainerError, match="key log of site"):
        rotate_key(first.private_key, tmp_path / "keys-z", site="plant-b/v1", key_log=first.key_log)
    assert not (tmp_path / "keys-x").exists() and not (tmp_path / "keys-y").exists()
    assert decode_log(first.key_log.read_bytes())[-1].seq == 1
    with pytest.raises(TrainerError, match="already exists"):  # never over an existing pair
        rotate_key(first.private_key, tmp_path / "keys-2", site=SITE, key_log=first.key_log)


def test_the_command_writes_the_pair_and_the_log(tmp_path: Path) -> None:
    a_priv, _ = generate_keypair(tmp_path / "keys")
    argv = ["rotate-key", "--private-key", str(a_priv), "--out", str(tmp_path / "new")]
    assert main([*argv, "--prefix", SITE]) == 0
    assert (tmp_path / "new" / PRIVATE_NAME).stat().st_mode & 0o777 == 0o600
    (record,) = decode_log((tmp_path / "keys" / KEY_LOG_NAME).read_bytes())
    assert record.site == SITE and record.key == raw_public_key(
        load_private_key(tmp_path / "new" / PRIVATE_NAME)
    )
