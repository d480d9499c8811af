"""The node's trust set in its state dir (models/trust.json), without a broker or a model: the
saved set wins over a configured key a record revoked, and a damaged or foreign file stops the
node instead of falling back to that key."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pi_edge.errors import EdgeError
from pi_edge.intake.inbox import BatchPolicy
from pi_edge.model.lifecycle import ModelManager
from pi_edge.model.state_dir import ModelStore
from pi_edge.model.vetting import Expected
from protocol import CHANNELS, CLASSES
from protocol.keys import TrustSet, encode_log, key_id, make_record, raw_public_key

SITE = "test/trust-state"
A, B, C = (Ed25519PrivateKey.from_private_bytes(bytes([i]) * 32) for i in (11, 12, 13))


def _manager(state: Path, *keys: bytes) -> ModelManager:
    return ModelManager(
        state,
        public_key=keys or None,
        allow_unsigned=not keys,
        site=SITE,
        expected=Expected(CLASSES, CHANNELS, 60),
        threads=1,
        policy=BatchPolicy(),
        on_pending=lambda: None,
        on_refused=lambda kind: None,
        on_install=lambda manifest: None,
    )


def _rotated(state: Path) -> TrustSet:
    trust, _ = TrustSet.of([raw_public_key(A)]).apply_log(
        encode_log([make_record(A, B, site=SITE, seq=1)]), SITE
    )
    ModelStore(state).save_trust(trust, SITE)
    return trust


def test_the_saved_set_wins_over_a_revoked_configured_key_and_a_new_one_joins(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _rotated(tmp_path)
    manager = _manager(tmp_path, raw_public_key(A))
    assert manager.trust is not None and manager.trust.ids == (key_id(raw_public_key(B)),)
    assert f"configured public key {key_id(raw_public_key(A))} was revoked" in caplog.text
    manager = _manager(tmp_path, raw_public_key(A), raw_public_key(C))
    assert manager.trust is not None
    assert manager.trust.ids == (key_id(raw_public_key(B)), key_id(raw_public_key(C)))
    assert _manager(tmp_path).trust is None  # --insecure-dev verifies nothing


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],
        lambda data: data.replace(b'"seq": 1', b'"seq": -1'),
        lambda data: b"",
    ],
    ids=["cut", "bad-field", "empty"],
)
def test_a_damaged_trust_file_stops_the_node(tmp_path: Path, damage: object) -> None:
    _rotated(tmp_path)
    path = ModelStore(tmp_path).trust_path
    path.write_bytes(damage(path.read_bytes()))  # type: ignore[operator]
    with pytest.raises(EdgeError, match="will not guess which keys to trust"):
        _manager(tmp_path, raw_public_key(A))


def test_another_sites_trust_file_stops_the_node(tmp_path: Path) -> None:
    trust = _rotated(tmp_path)
    ModelStore(tmp_path).save_trust(trust, "test/another-site")
    with pytest.raises(EdgeError, match="not this site's"):
        _manager(tmp_path, raw_public_key(A))
