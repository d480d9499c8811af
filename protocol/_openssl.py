"""Ed25519 verification through the OpenSSL that Python's own `ssl`/`hashlib` already load.

Why not `cryptography` on the Pi: its Rust extension keeps 6.3 MB resident (measured in
pi_edge's smaps), a tenth of the node's 64 MB budget, to verify a few bundles a day — while
the system's libcrypto is mapped into every Python process anyway. This is not our own
cryptography: it calls OpenSSL's `EVP_DigestVerify` (RFC 8032 Ed25519, OpenSSL ≥ 1.1.1) through
ctypes, five functions, and is checked against RFC 8032 and Project Wycheproof like the
`cryptography` path (tests/protocol/test_ed25519_vectors.py runs both). Where no usable
libcrypto is found, `available()` is False and protocol._signature uses `cryptography`.

>>> available()
True
>>> key = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
>>> sig = bytes.fromhex("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555f"
...                     "b8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")
>>> verify(key, b"", sig), verify(key, b"x", sig)
(True, False)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from pathlib import Path
from typing import Any

__all__ = ["available", "verify"]

NID_ED25519 = 1087  # OpenSSL's EVP_PKEY_ED25519


def _loaded_libcrypto() -> str | None:
    """The path of the libcrypto this process already mapped (via `_hashlib`), if any."""
    try:
        import _hashlib  # noqa: F401  (maps libcrypto; part of every CPython build with ssl)
    except ImportError:
        return None
    try:
        for line in Path("/proc/self/maps").read_text().splitlines():
            path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
            if "libcrypto.so" in Path(path).name:
                return path
    except OSError:
        pass
    return ctypes.util.find_library("crypto")


@functools.cache  # once per process (two threads racing here both load the same library)
def _load() -> Any:
    path = _loaded_libcrypto()
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(path)
        lib.EVP_PKEY_new_raw_public_key.argtypes = [
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_size_t,
        ]
        lib.EVP_PKEY_new_raw_public_key.restype = ctypes.c_void_p
        lib.EVP_PKEY_free.argtypes = [ctypes.c_void_p]
        lib.EVP_PKEY_free.restype = None
        lib.EVP_MD_CTX_new.argtypes = []
        lib.EVP_MD_CTX_new.restype = ctypes.c_void_p
        lib.EVP_MD_CTX_free.argtypes = [ctypes.c_void_p]
        lib.EVP_MD_CTX_free.restype = None
        lib.EVP_DigestVerifyInit.argtypes = [ctypes.c_void_p] * 5
        lib.EVP_DigestVerifyInit.restype = ctypes.c_int
        lib.EVP_DigestVerify.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_char_p,
            ctypes.c_size_t,
        ]
        lib.EVP_DigestVerify.restype = ctypes.c_int
        lib.ERR_clear_error.argtypes = []
        lib.ERR_clear_error.restype = None
    except (OSError, AttributeError):  # no such library, or an OpenSSL before 1.1.1
        return None
    return lib


# RFC 8032 §7.1 TEST 1: the known answer `available()` checks before trusting the library
_KAT_KEY = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
_KAT_SIG = (
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555f"
    "b8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)


@functools.cache
def available() -> bool:
    """Whether this process can verify Ed25519 through its own libcrypto: the library loads and
    gives RFC 8032's verdicts on a known answer (an OpenSSL without Ed25519, e.g. a FIPS-only
    build, would refuse every bundle; then `cryptography` verifies instead)."""
    if _load() is None:
        return False
    key, sig = bytes.fromhex(_KAT_KEY), bytes.fromhex(_KAT_SIG)
    return verify(key, b"", sig) and not verify(key, b"\x00", sig)


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """OpenSSL's verdict on an Ed25519 `signature` of `message` by the 32-byte `public_key`.

    The caller checks the key (protocol._signature.check_public_key) and the lengths first.
    RuntimeError if the library is unavailable (`available()` says so beforehand).
    """
    lib = _load()
    if lib is None:
        raise RuntimeError("no libcrypto with Ed25519 in this process")
    pkey = lib.EVP_PKEY_new_raw_public_key(NID_ED25519, None, bytes(public_key), len(public_key))
    if not pkey:
        lib.ERR_clear_error()
        return False
    ctx = lib.EVP_MD_CTX_new()
    try:
        if not ctx or lib.EVP_DigestVerifyInit(ctx, None, None, None, pkey) != 1:
            return False
        sig, msg = bytes(signature), bytes(message)
        return bool(lib.EVP_DigestVerify(ctx, sig, len(sig), msg, len(msg)) == 1)
    finally:
        if ctx:
            lib.EVP_MD_CTX_free(ctx)
        lib.EVP_PKEY_free(pkey)
        lib.ERR_clear_error()  # a failed verify leaves errors on this thread's queue
