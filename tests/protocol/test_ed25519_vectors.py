"""Bundle signature verification against RFC 8032 §7.1 and Project Wycheproof, and key checks.

`protocol.bundle.verify_signature` must agree with every published verdict, through the
process's own libcrypto and through `cryptography` alike, and refuse the 14
small-order public key encodings (libsodium's blocklist, sign bit either way) before checking
any signature: with the identity key, OpenSSL itself accepts one forged signature for every
message, which the last tests show.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol import BundleError, Manifest, decode_bundle, encode_bundle, load_public_key
from protocol.bundle import check_public_key, verify_signature

DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True, params=["openssl", "cryptography"])
def signature_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs through both ways to OpenSSL (protocol/_signature.py)."""
    from protocol._signature import backend

    if request.param == "cryptography":
        monkeypatch.setenv("EDGELOOP_SIGNATURE_BACKEND", "cryptography")
    else:
        monkeypatch.delenv("EDGELOOP_SIGNATURE_BACKEND", raising=False)
    assert backend() == request.param
    return str(request.param)


P = 2**255 - 19

# RFC 8032 §7.1: (secret seed, public key, message, signature) of TEST 1, 2, 3 and SHA(abc).
RFC8032 = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555f"
        "b8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da0"
        "85ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
        "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
    (
        "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
        "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
        "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b589"
        "09351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704",
    ),
]


def _y(value: int, sign: int = 0) -> bytes:
    return (value | (sign << 255)).to_bytes(32, "little")


# The y values of the 8 points of order 1, 2, 4 and 8, and the non-canonical spellings y = p
# (of 0) and y = p + 1 (of 1); each with the sign bit of x clear and set: 14 encodings.
SMALL_ORDER_Y = {
    "order 4 (y = 0)": 0,
    "identity (y = 1)": 1,
    "order 8 (y = 0x05fc…e826)": 0x05FC536D880238B13933C6D305ACDFD5F098EFF289F4C345B027B2C28F95E826,
    "order 8 (y = 0x7a03…17c7)": 0x7A03AC9277FDC74EC6CC392CFA53202A0F67100D760B3CBA4FD84D3D706A17C7,
    "order 2 (y = p - 1)": P - 1,
    "order 4, non-canonical (y = p)": P,
    "identity, non-canonical (y = p + 1)": P + 1,
}
SMALL_ORDER = {
    f"{name}, x sign {sign}": _y(y, sign) for name, y in SMALL_ORDER_Y.items() for sign in (0, 1)
}


def _wycheproof() -> list[tuple[str, bytes, bytes, bytes, bool]]:
    doc = json.loads((DATA / "wycheproof_ed25519_test.json").read_text())
    cases = []
    for group in doc["testGroups"]:
        key = bytes.fromhex(group["publicKey"]["pk"])
        for t in group["tests"]:
            assert t["result"] in ("valid", "invalid"), t  # the file has no "acceptable"
            cases.append(
                (
                    f"tc{t['tcId']}-{'-'.join(t['flags'])}",
                    key,
                    bytes.fromhex(t["msg"]),
                    bytes.fromhex(t["sig"]),
                    t["result"] == "valid",
                )
            )
    assert len(cases) == doc["numberOfTests"] == 151
    return cases


WYCHEPROOF = _wycheproof()


@pytest.mark.parametrize(("seed", "public", "message", "signature"), RFC8032)
def test_rfc8032_vectors_verify_and_any_change_does_not(
    seed: str, public: str, message: str, signature: str
) -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed))
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    pub, msg, sig = bytes.fromhex(public), bytes.fromhex(message), bytes.fromhex(signature)
    assert raw == pub and key.sign(msg) == sig  # the vector is what the RFC says
    assert verify_signature(pub, msg, sig)
    assert not verify_signature(pub, msg + b"!", sig)
    assert not verify_signature(pub, msg, sig[:-1] + bytes([sig[-1] ^ 1]))
    assert not verify_signature(pub, msg, sig[:63])
    s = int.from_bytes(sig[32:], "little")
    order = 2**252 + 27742317777372353535851937790883648493
    malleated = sig[:32] + (s + order).to_bytes(32, "little")  # same point, S ≥ L
    assert not verify_signature(pub, msg, malleated)


@pytest.mark.parametrize(
    ("key", "message", "signature", "valid"),
    [case[1:] for case in WYCHEPROOF],
    ids=[case[0] for case in WYCHEPROOF],
)
def test_wycheproof_verdicts(key: bytes, message: bytes, signature: bytes, valid: bool) -> None:
    assert verify_signature(key, message, signature) is valid


def test_wycheproof_covers_both_verdicts() -> None:
    verdicts = [case[4] for case in WYCHEPROOF]
    assert verdicts.count(True) == 88 and verdicts.count(False) == 63


@pytest.mark.parametrize("encoding", list(SMALL_ORDER.values()), ids=list(SMALL_ORDER))
def test_small_order_public_keys_are_refused_everywhere(encoding: bytes, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="small-order") as info:
        check_public_key(encoding)
    assert info.value.kind == "key"
    with pytest.raises(BundleError) as info:
        verify_signature(encoding, b"any bundle", bytes([1]) + bytes(63))
    assert info.value.kind == "key"
    for name, content in {"k.raw": encoding, "k.hex": encoding.hex().encode()}.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(BundleError, match="small-order") as info:
            load_public_key(tmp_path / name)
        assert info.value.kind == "key"
    pem = Ed25519PublicKey.from_public_bytes(encoding).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "k.pem").write_bytes(pem)
    with pytest.raises(BundleError, match="small-order"):
        load_public_key(tmp_path / "k.pem")


def test_there_are_fourteen_distinct_small_order_encodings() -> None:
    assert len(set(SMALL_ORDER.values())) == 14


@pytest.mark.parametrize("y", range(2, 19))
def test_other_non_canonical_keys_are_refused(y: int) -> None:
    with pytest.raises(BundleError, match="canonical") as info:
        check_public_key(_y(P + y))
    assert info.value.kind == "key"


def test_a_real_key_passes_the_key_check() -> None:
    for _, public, _, _ in RFC8032:
        assert check_public_key(bytes.fromhex(public)) == bytes.fromhex(public)


def _forged_bundle() -> bytes:
    """A bundle 'signed' with R = identity, S = 0: valid for the identity key, for any bytes."""
    model = b"not a model at all"
    manifest = Manifest(
        version=999, model_sha256=hashlib.sha256(model).hexdigest(), model_bytes=len(model)
    )
    return encode_bundle(manifest, model, sign=lambda body: bytes([1]) + bytes(63))


def test_the_identity_key_would_accept_a_forgery_so_it_is_refused() -> None:
    identity = bytes([1]) + bytes(31)
    data = _forged_bundle()
    body, signature = data[:-64], data[-64:]
    # OpenSSL (via cryptography) verifies the forgery: the check must be ours.
    Ed25519PublicKey.from_public_bytes(identity).verify(signature, body)
    with pytest.raises(BundleError) as info:
        decode_bundle(data, identity)
    assert info.value.kind == "key"


def test_the_forgery_does_not_verify_with_a_real_key() -> None:
    real = Ed25519PrivateKey.generate().public_key()
    data = _forged_bundle()
    with pytest.raises(InvalidSignature):
        real.verify(data[-64:], data[:-64])
    raw = real.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    with pytest.raises(BundleError, match="does not verify"):
        decode_bundle(data, raw)


def test_a_pi_verifies_without_loading_cryptography(signature_backend: str) -> None:
    """The Pi's resident set: verifying through the process's libcrypto loads no `cryptography`
    (its Rust extension costs 6.3 MB of the 64 MB budget)."""
    import subprocess
    import sys

    if signature_backend != "openssl":
        pytest.skip("the cryptography backend is the one that loads it, by design")
    _, key, msg, sig = RFC8032[1]
    code = (
        "import sys; from protocol.bundle import verify_signature; "
        f"assert verify_signature(bytes.fromhex('{key}'), bytes.fromhex('{msg}'), "
        f"bytes.fromhex('{sig}')); "
        "print(sorted(m for m in sys.modules if m.startswith('cryptography')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
