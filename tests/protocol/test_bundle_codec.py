"""Model bundle: round trip, signature checks, tamper detection, public-key formats."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol import BundleError, Manifest, SignatureError, decode_bundle, encode_bundle
from protocol._ed25519 import verify
from protocol.bundle import HEADER, load_public_key

MODEL = b"TFL3" + bytes(range(256)) * 4


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def manifest(**overrides: object) -> Manifest:
    fields: dict[str, object] = {
        "version": 3,
        "parent": 2,
        "model_sha256": hashlib.sha256(MODEL).hexdigest(),
        "model_bytes": len(MODEL),
        "normalisation": {"mean": [50.0, 0.3, 11.0, 125.0], "std": [5.0, 0.1, 0.5, 10.0]},
        "golden": [{"x": [[0.0] * 4] * 60, "probs": [1.0, 0.0, 0.0, 0.0]}],
    }
    fields.update(overrides)
    return Manifest(**fields)  # type: ignore[arg-type]


def test_signed_bundle_round_trips(key: Ed25519PrivateKey) -> None:
    data = encode_bundle(manifest(), MODEL, sign=key.sign)
    bundle = decode_bundle(data, raw_public(key))
    assert bundle.signed and bundle.model == MODEL and bundle.manifest == manifest()


@pytest.mark.parametrize("where", ["header", "manifest", "model", "signature"])
def test_flipped_byte_anywhere_is_refused(key: Ed25519PrivateKey, where: str) -> None:
    data = bytearray(encode_bundle(manifest(), MODEL, sign=key.sign))
    m_len = int.from_bytes(data[4:8], "little")
    offset = {
        "header": 3,
        "manifest": HEADER.size + 20,
        "model": HEADER.size + m_len + 100,
        "signature": len(data) - 5,
    }[where]
    data[offset] ^= 0x01
    with pytest.raises(BundleError):
        decode_bundle(bytes(data), raw_public(key))


def test_wrong_key_is_refused_with_a_clear_message(key: Ed25519PrivateKey) -> None:
    data = encode_bundle(manifest(), MODEL, sign=key.sign)
    other = Ed25519PrivateKey.generate()
    with pytest.raises(SignatureError, match="does not verify"):
        decode_bundle(data, raw_public(other))


def test_unsigned_bundle_is_refused_unless_development_flag(key: Ed25519PrivateKey) -> None:
    data = encode_bundle(manifest(), MODEL)
    with pytest.raises(SignatureError, match="unsigned"):
        decode_bundle(data, raw_public(key))
    assert not decode_bundle(data, raw_public(key), allow_unsigned=True).signed


def test_model_that_does_not_match_its_checksum_is_refused_even_unsigned() -> None:
    data = bytearray(encode_bundle(manifest(), MODEL))
    data[-10] ^= 0xFF
    with pytest.raises(BundleError) as info:
        decode_bundle(bytes(data), None, allow_unsigned=True)
    assert info.value.kind == "checksum"


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"", "truncated"),
        (b"XX" + b"\x00" * 20, "bad_magic"),
        (b"EB\x07" + b"\x00" * 20, "version"),
    ],
)
def test_garbage_bundles_raise_typed_errors(data: bytes, kind: str) -> None:
    with pytest.raises(BundleError) as info:
        decode_bundle(data, None, allow_unsigned=True)
    assert info.value.kind == kind


def test_manifest_rejects_unknown_fields_and_bad_normalisation() -> None:
    good = manifest().to_dict()
    with pytest.raises(BundleError, match="unknown"):
        Manifest.from_dict({**good, "surprise": 1})
    with pytest.raises(BundleError, match="std"):
        Manifest.from_dict({**good, "normalisation": {"mean": [0.0] * 4, "std": [1, 1, 0, 1]}})
    with pytest.raises(BundleError, match="version"):
        Manifest.from_dict({**good, "version": 0})


def test_public_key_loads_from_pem_hex_and_raw(key: Ed25519PrivateKey, tmp_path: Path) -> None:
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    raw = raw_public(key)
    for name, content in {"k.pem": pem, "k.hex": raw.hex().encode(), "k.raw": raw}.items():
        (tmp_path / name).write_bytes(content)
        assert load_public_key(tmp_path / name) == raw
    (tmp_path / "bad").write_text("not a key")
    with pytest.raises(BundleError, match="no Ed25519 public key"):
        load_public_key(tmp_path / "bad")


def test_pure_python_verify_agrees_with_cryptography(key: Ed25519PrivateKey) -> None:
    for message in (b"", b"edgeloop", bytes(1000)):
        signature = key.sign(message)
        assert verify(raw_public(key), message, signature)
        assert not verify(raw_public(key), message + b"!", signature)
        assert not verify(raw_public(key), message, signature[:-1] + bytes([signature[-1] ^ 1]))
