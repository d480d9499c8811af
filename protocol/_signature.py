"""Ed25519 verification of model bundles with OpenSSL, strict about keys.

Two ways to OpenSSL's Ed25519: the libcrypto this Python process already maps for `ssl` and
`hashlib` (protocol/_openssl.py, via ctypes: no extra resident memory), else `cryptography`
(its wheels bring their own OpenSSL, for aarch64 and armv7 too; 6.3 MB resident on the Pi, so
it is the fallback). `EDGELOOP_SIGNATURE_BACKEND=cryptography` forces the latter. Both are
imported inside `verify`, so `import protocol` stays light; both give the same verdicts on
RFC 8032 and Wycheproof (tests/protocol/test_ed25519_vectors.py).

A public key must be a canonical encoding (y < p) of a point that is not of small order. With a
small-order key (the identity, above all) one forged signature verifies every message — OpenSSL
does not refuse such keys itself — so they are refused here before any signature is checked. The
list is libsodium's blocklist (`ge25519_has_small_order` in `ed25519_ref10.c`), compared with the
sign bit cleared, as libsodium does: the 8 points of order 1, 2, 4 and 8 and their non-canonical
spellings y = p, p + 1, 14 encodings in all (Chalkias et al., "Taming the many EdDSAs", 2020).

>>> check_public_key(bytes([1]) + bytes(31))  # the identity point
Traceback (most recent call last):
...
protocol.errors.BundleError: public key 0100…0000 is a small-order point (order ≤ 8): ...
"""

from __future__ import annotations

from .errors import BundleError

__all__ = ["KEY_BYTES", "SIGNATURE_BYTES", "backend", "check_public_key", "verify"]

KEY_BYTES = 32
SIGNATURE_BYTES = 64
_P = 2**255 - 19
# y-coordinates (little-endian, sign bit of x cleared) of the small-order points and of their
# non-canonical spellings: libsodium's blocklist.
_SMALL_ORDER_Y = frozenset(
    int.to_bytes(y, 32, "little")
    for y in (
        0,  # order 4: (±sqrt(-1), 0)
        1,  # order 1: the identity (0, 1)
        0x05FC536D880238B13933C6D305ACDFD5F098EFF289F4C345B027B2C28F95E826,  # order 8
        0x7A03AC9277FDC74EC6CC392CFA53202A0F67100D760B3CBA4FD84D3D706A17C7,  # order 8
        _P - 1,  # order 2: (0, -1)
        _P,  # non-canonical 0 (order 4)
        _P + 1,  # non-canonical 1 (the identity)
    )
)


def _short(key: bytes) -> str:
    return f"{key[:2].hex()}…{key[-2:].hex()}"


def check_public_key(key: bytes) -> bytes:
    """`key` if it is a usable Ed25519 public key; BundleError(kind="key") saying why not."""
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
        size = len(key) if isinstance(key, bytes | bytearray) else type(key).__name__
        raise BundleError(
            f"an Ed25519 public key is {KEY_BYTES} bytes, got {size}; pass the trainer's "
            "trainer_ed25519.pub.pem",
            kind="key",
        )
    key = bytes(key)
    y = key[:31] + bytes([key[31] & 0x7F])
    if y in _SMALL_ORDER_Y:
        raise BundleError(
            f"public key {_short(key)} is a small-order point (order ≤ 8): with it a forged "
            "signature verifies any bundle; configure the trainer's real public key "
            "(`python -m jetson_trainer keygen` writes one)",
            kind="key",
        )
    if int.from_bytes(y, "little") >= _P:
        raise BundleError(
            f"public key {_short(key)} is not a canonical point encoding (y ≥ 2^255 − 19); "
            "no Ed25519 library writes such a key, so it was altered: configure the trainer's "
            "trainer_ed25519.pub.pem",
            kind="key",
        )
    return key


def backend() -> str:
    """ "openssl" (the process's own libcrypto) or "cryptography", per the rules above."""
    import os

    if os.environ.get("EDGELOOP_SIGNATURE_BACKEND", "") == "cryptography":
        return "cryptography"
    from . import _openssl

    return "openssl" if _openssl.available() else "cryptography"


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True if `signature` is `public_key`'s Ed25519 signature (RFC 8032) of `message`.

    BundleError(kind="key") for a key `check_public_key` refuses; False for any other failure,
    a signature of the wrong length included.
    """
    key = check_public_key(public_key)
    if len(signature) != SIGNATURE_BYTES:
        return False
    if backend() == "openssl":
        from . import _openssl

        return _openssl.verify(key, bytes(message), bytes(signature))
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    except ImportError as exc:  # pragma: no cover - the edge extra installs it
        raise BundleError(
            f"cannot verify bundle signatures: {exc}; install pi_edge with its extra "
            "(pip install 'edgeloop[edge]'), which brings cryptography",
            kind="unverifiable",
        ) from exc
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(bytes(signature), bytes(message))
    except (InvalidSignature, ValueError):
        return False
    return True
