"""The signed model bundle: manifest + .tflite bytes + Ed25519 signature, in one message.

Binary layout, format version 1 (all little-endian) — see protocol/README.md:

    offset   size  field
    0        2     magic          b"EB"
    2        1     version        1
    3        1     flags          bit 0 = signed
    4        4     manifest_len   uint32 M
    8        4     model_len      uint32 N
    12       2     sig_len        uint16 S (64 if signed, else 0)
    14       M     manifest       UTF-8 JSON object (see Manifest)
    14+M     N     model          the .tflite flatbuffer
    14+M+N   S     signature      Ed25519 over bytes [0, 14+M+N)

The signature covers the header too, so no field can be changed without breaking it.

Verify, then parse: `decode_bundle` checks the layout and the sizes from the header (a manifest
over MAX_MANIFEST_BYTES is refused there), then the signature over the raw bytes, and only then
reads one byte of the manifest. With a public key given, an unsigned bundle is always refused.
Verification uses OpenSSL's Ed25519 — the process's own libcrypto, else `cryptography` — (imported
when a bundle is verified, not with `protocol`) and refuses small-order and non-canonical public
keys (`_signature.py`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ._signature import SIGNATURE_BYTES, check_public_key
from ._signature import verify as verify_signature
from .errors import BundleError, SignatureError
from .manifest import MANIFEST_FORMAT, MAX_MANIFEST_BYTES, Manifest, parse_manifest

__all__ = [
    "BUNDLE_VERSION",
    "HEADER",
    "MANIFEST_FORMAT",
    "MAX_BUNDLE_BYTES",
    "MAX_MANIFEST_BYTES",
    "Bundle",
    "Manifest",
    "check_public_key",
    "decode_bundle",
    "encode_bundle",
    "load_public_key",
    "load_public_keys",
    "verify_signature",
]

MAGIC = b"EB"
BUNDLE_VERSION = 1
HEADER = struct.Struct("<2sBBIIH")
FLAG_SIGNED = 0x01
MAX_BUNDLE_BYTES = 16 * 1024 * 1024
_SPKI_ED25519_PREFIX = bytes.fromhex("302a300506032b6570032100")
MAX_KEYS = 4  # protocol.keys.MAX_TRUSTED: keys a node verifies a bundle with


@dataclass(frozen=True, slots=True)
class Bundle:
    """A decoded, verified bundle."""

    manifest: Manifest
    model: bytes = field(repr=False)
    signed: bool
    raw: bytes = field(repr=False, default=b"")


def encode_bundle(
    manifest: Manifest, model: bytes, sign: Callable[[bytes], bytes] | None = None
) -> bytes:
    """Serialise; `sign(data) -> 64-byte signature` (e.g. a private key's .sign) if signing."""
    if hashlib.sha256(model).hexdigest() != manifest.model_sha256:
        raise BundleError("manifest model_sha256 does not match the model bytes", kind="checksum")
    manifest_bytes = json.dumps(manifest.to_dict(), separators=(",", ":")).encode()
    sig_len = SIGNATURE_BYTES if sign else 0
    header = HEADER.pack(
        MAGIC, BUNDLE_VERSION, FLAG_SIGNED if sign else 0, len(manifest_bytes), len(model), sig_len
    )
    body = header + manifest_bytes + model
    if sign is None:
        return body
    signature = sign(body)
    if len(signature) != SIGNATURE_BYTES:
        raise BundleError(f"signer returned {len(signature)} bytes, expected {SIGNATURE_BYTES}")
    return body + signature


def decode_bundle(
    data: bytes,
    public_key: bytes | Sequence[bytes] | None,
    *,
    allow_unsigned: bool = False,
) -> Bundle:
    """Check the layout, verify the signature over the raw bytes, then parse the manifest.

    `public_key`: the trainer's 32-byte key, or the keys a node trusts (at most
    protocol.keys.MAX_TRUSTED; the signature must verify with one of them; protocol/keys.py);
    every bundle must carry its valid signature (an
    unsigned one is refused even with `allow_unsigned`). Without a key, `allow_unsigned` (a
    development node) accepts any bundle unverified; otherwise every bundle is refused.
    Raises SignatureError for a missing/wrong signature, BundleError (with .kind) otherwise —
    and nothing else, whatever the bytes.
    """
    n = len(data)
    if n > MAX_BUNDLE_BYTES:
        raise BundleError(f"bundle is {n} bytes, limit is {MAX_BUNDLE_BYTES}", kind="too_large")
    if n < HEADER.size:
        raise BundleError(
            f"bundle is {n} bytes, shorter than its {HEADER.size}-byte header", kind="truncated"
        )
    magic, version, flags, m_len, n_len, s_len = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise BundleError(f"bundle starts with {bytes(magic)!r}, expected {MAGIC!r}", "bad_magic")
    if version != BUNDLE_VERSION:
        raise BundleError(
            f"bundle version {version}, this build reads {BUNDLE_VERSION}; "
            "upgrade pi_edge or publish with a matching trainer",
            kind="version",
        )
    if flags & ~FLAG_SIGNED:
        raise BundleError(f"bundle flags {flags:#04x} set unknown bits", "malformed")
    signed = bool(flags & FLAG_SIGNED)
    if s_len != (SIGNATURE_BYTES if signed else 0):
        raise BundleError(f"bundle signature length {s_len} does not match its flags", "malformed")
    if m_len > MAX_MANIFEST_BYTES:
        raise BundleError(
            f"bundle manifest is {m_len} bytes, limit is {MAX_MANIFEST_BYTES}; a trainer's "
            "manifest is tens of KB, so this bundle was not made by jetson_trainer",
            kind="too_large",
        )
    body_len = HEADER.size + m_len + n_len
    if n != body_len + s_len:
        raise BundleError(f"bundle is {n} bytes, its header says {body_len + s_len}", "truncated")
    raw = bytes(data)
    if public_key is not None:
        if not signed:
            raise SignatureError(
                "bundle is unsigned; a node with a public key refuses every unsigned bundle "
                "(sign it with the trainer's key: jetson_trainer --private-key)"
            )
        keys = [public_key] if isinstance(public_key, bytes | bytearray) else list(public_key)
        if not keys or len(keys) > MAX_KEYS:
            raise BundleError(f"verify with 1..{MAX_KEYS} keys, not {len(keys)}", kind="key")
        body, signature = raw[:body_len], raw[body_len:]
        if not any(verify_signature(bytes(k), body, signature) for k in keys):
            raise SignatureError(
                "bundle signature does not verify with the configured public "
                f"key{'s' if len(keys) > 1 else ''}; the bundle was altered or signed with "
                "another key"
            )
    elif not allow_unsigned:
        raise SignatureError(
            "no public key configured to verify the bundle; pass "
            "--public-key (or --insecure-dev for development only)"
            if signed
            else "bundle is unsigned; refusing it (sign it with the trainer's key, "
            "or pass --insecure-dev for development only)"
        )
    manifest = parse_manifest(raw[HEADER.size : HEADER.size + m_len])
    model = raw[HEADER.size + m_len : body_len]
    if (
        len(model) != manifest.model_bytes
        or hashlib.sha256(model).hexdigest() != manifest.model_sha256
    ):
        raise BundleError(
            "bundle model bytes do not match the manifest's sha256/size; the "
            "model was corrupted in transit or storage",
            kind="checksum",
        )
    return Bundle(manifest, model, signed, raw)


def load_public_key(path: str | Path) -> bytes:
    """Raw 32-byte Ed25519 public key from a PEM (SubjectPublicKeyInfo), hex or raw file.

    BundleError(kind="key") for an unreadable file, another key type, or a small-order or
    non-canonical key (with which forged signatures verify).
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise BundleError(f"cannot read public key {path}: {exc}", kind="key") from exc
    text = raw.decode("ascii", errors="replace").strip()
    if "BEGIN PUBLIC KEY" in text:
        b64 = "".join(line for line in text.splitlines() if not line.startswith("-----"))
        try:
            der = base64.b64decode(b64)
        except ValueError:
            der = b""
        if len(der) != 44 or not der.startswith(_SPKI_ED25519_PREFIX):
            raise BundleError(
                f"{path} is a PEM public key but not Ed25519; make one with "
                "`python -m jetson_trainer keygen`",
                kind="key",
            )
        return _usable(der[len(_SPKI_ED25519_PREFIX) :], path)
    if len(raw) == 32:
        return _usable(raw, path)
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise BundleError(
            f"{path} holds no Ed25519 public key (PEM, 64 hex chars or 32 raw bytes expected)",
            kind="key",
        )
    return _usable(key, path)


def _usable(key: bytes, path: str | Path) -> bytes:
    try:
        return check_public_key(key)
    except BundleError as exc:
        raise BundleError(f"{path}: {exc}", kind="key") from None


def load_public_keys(path: str | Path) -> tuple[bytes, ...]:
    """The keys of a trust file: one key as `load_public_key` reads it, or 2..MAX_KEYS
    concatenated PEM public keys (a node trusting several of the trainer's keys at once).

    BundleError(kind="key") as `load_public_key`, and for a key given twice or too many keys.
    """
    try:
        text = Path(path).read_bytes().decode("ascii", errors="replace")
    except OSError as exc:
        raise BundleError(f"cannot read public key {path}: {exc}", kind="key") from exc
    blocks = text.count("-----BEGIN PUBLIC KEY-----")
    if blocks <= 1:
        return (load_public_key(path),)
    if blocks > MAX_KEYS:
        raise BundleError(
            f"{path} holds {blocks} public keys; a node trusts at most {MAX_KEYS}", kind="key"
        )
    keys: list[bytes] = []
    for block in text.split("-----BEGIN PUBLIC KEY-----")[1:]:
        b64 = block.split("-----END PUBLIC KEY-----")[0]
        try:
            der = base64.b64decode("".join(b64.split()), validate=True)
        except ValueError:
            der = b""
        if len(der) != 44 or not der.startswith(_SPKI_ED25519_PREFIX):
            raise BundleError(
                f"{path}: public key {len(keys) + 1} is not an Ed25519 PEM public key", kind="key"
            )
        keys.append(_usable(der[len(_SPKI_ED25519_PREFIX) :], path))
    if len(set(keys)) != len(keys):
        raise BundleError(f"{path} lists a public key twice", kind="key")
    return tuple(keys)
