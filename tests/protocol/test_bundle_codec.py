"""Model bundle: round trip, signature checks, tamper detection, public-key formats, and a
manifest that is checked field by field only after the signature verified."""

from __future__ import annotations

import hashlib
import json
import resource
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol import BundleError, Manifest, SignatureError, decode_bundle, encode_bundle
from protocol.bundle import HEADER, MAX_MANIFEST_BYTES, load_public_key

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
        "site": "plant-a/v1",
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


def test_unsigned_bundle_is_refused_with_a_key_even_when_unsigned_is_allowed(
    key: Ed25519PrivateKey,
) -> None:
    data = encode_bundle(manifest(), MODEL)
    for allow in (False, True):
        with pytest.raises(SignatureError, match="unsigned"):
            decode_bundle(data, raw_public(key), allow_unsigned=allow)
    with pytest.raises(SignatureError, match="unsigned"):
        decode_bundle(data, None)
    assert not decode_bundle(data, None, allow_unsigned=True).signed  # a development node


def test_without_a_key_a_signed_bundle_needs_the_development_flag(key: Ed25519PrivateKey) -> None:
    data = encode_bundle(manifest(), MODEL, sign=key.sign)
    with pytest.raises(SignatureError, match="no public key"):
        decode_bundle(data, None)
    assert decode_bundle(data, None, allow_unsigned=True).signed


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


def test_manifest_checks_the_confidence_per_class() -> None:
    good = manifest().to_dict()
    metrics = {**good["metrics"], "mean_confidence_per_class": {"normal": 0.99, "drive_wear": 0.7}}
    assert Manifest.from_dict({**good, "metrics": metrics}).metrics == metrics
    for bad, words in (
        ({"gearbox": 0.9}, "unknown class"),
        ({"normal": 1.5}, "mean_confidence_per_class.normal"),
        ({"normal": "high"}, "mean_confidence_per_class.normal"),
        ([0.9, 0.8], "mean_confidence_per_class"),
    ):
        with pytest.raises(BundleError, match=words):
            Manifest.from_dict(
                {**good, "metrics": {**good["metrics"], "mean_confidence_per_class": bad}}
            )


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


# -- verify, then parse --------------------------------------------------------------------


def _with_manifest(raw_manifest: bytes, sign: Any = None, model: bytes = MODEL) -> bytes:
    """A bundle around arbitrary manifest bytes, signed with `sign` if given."""
    flags, s_len = (1, 64) if sign else (0, 0)
    body = HEADER.pack(b"EB", 1, flags, len(raw_manifest), len(model), s_len) + raw_manifest
    body += model
    return body + sign(body) if sign else body


def _bad_manifests() -> dict[str, Any]:
    good = manifest().to_dict()
    return {
        "normalisation is a list": {**good, "normalisation": [1]},
        "normalisation mean of strings": {
            **good,
            "normalisation": {"mean": ["a"] * 4, "std": [1.0] * 4},
        },
        "normalisation with a giant number": {
            **good,
            "normalisation": {"mean": [10**400] + [0.0] * 3, "std": [1.0] * 4},
        },
        "normalisation with inf": {
            **good,
            "normalisation": {"mean": [1e308 * 10] + [0.0] * 3, "std": [1.0] * 4},
        },
        "version is a string": {**good, "version": "3"},
        "version is a bool": {**good, "version": True},
        "version is giant": {**good, "version": 10**40},
        "parent is a list": {**good, "parent": [2]},
        "model_bytes is a float": {**good, "model_bytes": 1.5},
        "classes is a string": {**good, "classes": "abc"},
        "classes of numbers": {**good, "classes": [1, 2, 3, 4]},
        "channels is empty": {**good, "channels": []},
        "window_length is a string": {**good, "window_length": "60"},
        "window_length is giant": {**good, "window_length": 10**30},
        "quantization is a dict": {**good, "quantization": {}},
        "created is NaN": {**good, "created": float("nan")},
        "golden is a dict": {**good, "golden": {"x": 1}},
        "golden of numbers": {**good, "golden": [1, 2]},
        "golden with a short window": {**good, "golden": [{"x": [[0.0] * 4], "probs": [1.0] * 4}]},
        "golden with text probs": {
            **good,
            "golden": [{"x": [[0.0] * 4] * 60, "probs": ["a", "b", "c", "d"]}],
        },
        "golden is huge": {**good, "golden": [good["golden"][0]] * 65},
        "golden_tolerance is a list": {**good, "golden_tolerance": [0.1]},
        "metrics is a list": {**good, "metrics": [1]},
        "metrics accuracy is text": {**good, "metrics": {"accuracy": "high"}},
        "metrics with a giant int": {**good, "metrics": {"n": 10**100}},
        "train_stats is a string": {**good, "train_stats": "x"},
        "train_stats features per_class is a list": {
            **good,
            "train_stats": {"features": {"per_class": [1]}},
        },
        "train_stats features lack a class": {
            **good,
            "train_stats": {"features": {"per_class": {}}},
        },
        "extra nested 40 deep": {**good, "extra": {"a": json.loads("[" * 40 + "]" * 40)}},
        "site is a number": {**good, "site": 7},
        "site is a wildcard": {**good, "site": "plant/#"},
        "format is 2": {**good, "format": 2},
        "missing version": {k: v for k, v in good.items() if k != "version"},
        "a JSON list": [good],
        "a JSON number": 3,
    }


@pytest.mark.parametrize("case", list(_bad_manifests()))
def test_a_bad_manifest_in_a_validly_signed_bundle_raises_only_bundle_error(
    key: Ed25519PrivateKey, case: str
) -> None:
    raw = json.dumps(_bad_manifests()[case]).encode()
    with pytest.raises(BundleError):
        decode_bundle(_with_manifest(raw, key.sign), raw_public(key))


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"\xff\xfe",
        b'{"version": NaN}',
        b'{"version": Infinity}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"version": ' + b"9" * 5000 + b"}",
        b'{"version": 1e999}',
    ],
    ids=["cut", "not utf-8", "NaN", "Infinity", "deep", "5000 digits", "1e999"],
)
def test_manifest_bytes_that_are_not_a_manifest_raise_bundle_error(
    key: Ed25519PrivateKey, raw: bytes
) -> None:
    with pytest.raises(BundleError):
        decode_bundle(_with_manifest(raw, key.sign), raw_public(key))


def test_an_unsigned_bad_manifest_is_refused_before_it_is_parsed(key: Ed25519PrivateKey) -> None:
    raw = json.dumps({**manifest().to_dict(), "normalisation": [1]}).encode()
    with pytest.raises(SignatureError, match="unsigned"):  # not a manifest error: never parsed
        decode_bundle(_with_manifest(raw), raw_public(key))
    with pytest.raises(BundleError, match="normalisation"):  # a development node parses it
        decode_bundle(_with_manifest(raw), None, allow_unsigned=True)


def _rss_kb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def test_a_16_mib_manifest_is_refused_from_the_header_cheaply(key: Ed25519PrivateKey) -> None:
    size = 16 * 1024 * 1024 - HEADER.size - 64 - len(MODEL)
    raw = b'{"extra":{"x":"' + b"a" * (size - 19) + b'"}}'
    data = _with_manifest(raw, key.sign)
    assert len(data) <= 16 * 1024 * 1024 and len(raw) > MAX_MANIFEST_BYTES
    before = _rss_kb()
    start = time.perf_counter()
    for _ in range(10):
        with pytest.raises(BundleError, match=r"manifest is \d+ bytes, limit") as info:
            decode_bundle(data, raw_public(key))
    spent = (time.perf_counter() - start) / 10
    grown_mb = (_rss_kb() - before) / 1024
    assert info.value.kind == "too_large"
    assert spent < 0.005, f"refusing took {spent * 1e3:.2f} ms"  # measured: ~0.01 ms
    assert grown_mb < 5, f"refusing grew RSS by {grown_mb:.1f} MB"  # measured: 0 MB


def test_a_manifest_at_the_cap_is_still_read(key: Ed25519PrivateKey) -> None:
    good = manifest().to_dict()
    pad = MAX_MANIFEST_BYTES - len(json.dumps({**good, "extra": {"pad": ""}}).encode())
    raw = json.dumps({**good, "extra": {"pad": "a" * pad}}).encode()
    assert len(raw) == MAX_MANIFEST_BYTES
    assert decode_bundle(_with_manifest(raw, key.sign), raw_public(key)).manifest.version == 3


def test_unknown_flag_bits_are_refused(key: Ed25519PrivateKey) -> None:
    data = bytearray(encode_bundle(manifest(), MODEL))
    data[3] = 0x02
    with pytest.raises(BundleError, match="unknown bits"):
        decode_bundle(bytes(data), None, allow_unsigned=True)


def test_the_manifest_names_its_site_and_round_trips_it(key: Ed25519PrivateKey) -> None:
    data = encode_bundle(manifest(site="plant-b/v1"), MODEL, sign=key.sign)
    assert decode_bundle(data, raw_public(key)).manifest.site == "plant-b/v1"
    unbound = {k: v for k, v in manifest().to_dict().items() if k != "site"}
    assert Manifest.from_dict(unbound).site == ""  # an older trainer's manifest: no site


def test_header_sizes_are_checked_before_the_signature(key: Ed25519PrivateKey) -> None:
    data = bytearray(encode_bundle(manifest(), MODEL, sign=key.sign))
    struct.pack_into("<I", data, 4, MAX_MANIFEST_BYTES + 1)
    with pytest.raises(BundleError) as info:
        decode_bundle(bytes(data), raw_public(key))
    assert info.value.kind == "too_large"
