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
The Pi needs only the 32-byte public key and the standard library to verify.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ._ed25519 import verify as ed25519_verify
from .errors import BundleError, SignatureError
from .schema import CHANNELS, CLASSES, WINDOW_LENGTH

MAGIC = b"EB"
BUNDLE_VERSION = 1
MANIFEST_FORMAT = 1
HEADER = struct.Struct("<2sBBIIH")
FLAG_SIGNED = 0x01
SIGNATURE_BYTES = 64
MAX_BUNDLE_BYTES = 16 * 1024 * 1024
_SPKI_ED25519_PREFIX = bytes.fromhex("302a300506032b6570032100")


@dataclass(frozen=True, slots=True)
class Manifest:
    """What the Pi must know about a model before it runs it.

    normalisation: per-channel `mean`/`std`; the Pi feeds (x - mean) / std to the model.
    train_stats:   per-channel statistics of the training data, for drift detection.
    metrics:       validation figures, including `mean_confidence`.
    golden:        a few raw windows with the probabilities the model must reproduce.
    """

    version: int
    model_sha256: str
    model_bytes: int
    parent: int | None = None
    created: float = 0.0
    classes: tuple[str, ...] = CLASSES
    channels: tuple[str, ...] = CHANNELS
    window_length: int = WINDOW_LENGTH
    quantization: str = "int8"
    arch: str = ""
    converter: str = ""
    normalisation: dict[str, list[float]] = field(default_factory=dict)
    train_stats: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    golden: list[dict[str, Any]] = field(default_factory=list)
    golden_tolerance: float = 0.05
    format: int = MANIFEST_FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.format != MANIFEST_FORMAT:
            raise BundleError(
                f"manifest format {self.format}, this build reads {MANIFEST_FORMAT}; "
                "upgrade pi_edge",
                kind="version",
            )
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise BundleError(f"manifest version {self.version!r} must be an integer ≥ 1")
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "channels", tuple(self.channels))
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise BundleError(f"manifest classes {self.classes} must be ≥ 2 distinct names")
        if not self.channels or self.window_length < 1:
            raise BundleError("manifest needs channels and a positive window_length")
        norm = self.normalisation
        if norm:
            mean, std = norm.get("mean"), norm.get("std")
            n = len(self.channels)
            if not (
                isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) == n
            ):
                raise BundleError(f"manifest normalisation needs 'mean' and 'std' lists of {n}")
            if not all(math.isfinite(v) for v in mean) or not all(
                math.isfinite(v) and v > 0 for v in std
            ):
                raise BundleError("manifest normalisation has a non-finite mean or a std ≤ 0")

    @property
    def input_shape(self) -> tuple[int, int]:
        return (self.window_length, len(self.channels))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["classes"], d["channels"] = list(self.classes), list(self.channels)
        return d

    @classmethod
    def from_dict(cls, obj: Any) -> Manifest:
        if not isinstance(obj, dict):
            raise BundleError("manifest must be a JSON object")
        unknown = set(obj) - set(cls.__dataclass_fields__)
        if unknown:
            raise BundleError(
                f"manifest has unknown field(s) {sorted(unknown)}; newer trainer? upgrade pi_edge",
                kind="version",
            )
        try:
            return cls(**obj)
        except TypeError as exc:
            raise BundleError(f"manifest is missing a field: {exc}") from exc


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


def decode_bundle(data: bytes, public_key: bytes | None, *, allow_unsigned: bool = False) -> Bundle:
    """Parse and verify a bundle: layout, signature (unless allowed unsigned), sha256, manifest.

    Raises SignatureError for a missing/wrong signature, BundleError (with .kind) otherwise.
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
    signed = bool(flags & FLAG_SIGNED)
    if s_len != (SIGNATURE_BYTES if signed else 0):
        raise BundleError(f"bundle signature length {s_len} does not match its flags", "malformed")
    body_len = HEADER.size + m_len + n_len
    if n != body_len + s_len:
        raise BundleError(f"bundle is {n} bytes, its header says {body_len + s_len}", "truncated")
    if signed:
        if public_key is not None and not ed25519_verify(
            public_key, bytes(data[:body_len]), bytes(data[body_len:])
        ):
            raise SignatureError(
                "bundle signature does not verify with the configured public "
                "key; the bundle was altered or signed with another key"
            )
        if public_key is None and not allow_unsigned:
            raise SignatureError(
                "no public key configured to verify the bundle; pass "
                "--public-key (or --insecure-dev for development only)"
            )
    elif not allow_unsigned:
        raise SignatureError(
            "bundle is unsigned; refusing it (sign it with the trainer's key, "
            "or pass --insecure-dev for development only)"
        )
    try:
        manifest_obj = json.loads(bytes(data[HEADER.size : HEADER.size + m_len]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"bundle manifest is not valid JSON: {exc}") from exc
    manifest = Manifest.from_dict(manifest_obj)
    model = bytes(data[HEADER.size + m_len : body_len])
    if (
        len(model) != manifest.model_bytes
        or hashlib.sha256(model).hexdigest() != manifest.model_sha256
    ):
        raise BundleError(
            "bundle model bytes do not match the manifest's sha256/size; the "
            "model was corrupted in transit or storage",
            kind="checksum",
        )
    return Bundle(manifest, model, signed, bytes(data))


def load_public_key(path: str | Path) -> bytes:
    """Raw 32-byte Ed25519 public key from a PEM (SubjectPublicKeyInfo), hex or raw file."""
    raw = Path(path).read_bytes()
    text = raw.decode("ascii", errors="replace").strip()
    if "BEGIN PUBLIC KEY" in text:
        b64 = "".join(line for line in text.splitlines() if not line.startswith("-----"))
        der = base64.b64decode(b64)
        if len(der) != 44 or not der.startswith(_SPKI_ED25519_PREFIX):
            raise BundleError(
                f"{path} is a PEM public key but not Ed25519; make one with "
                "`python -m jetson_trainer keygen`",
                kind="key",
            )
        return der[len(_SPKI_ED25519_PREFIX) :]
    if len(raw) == 32:
        return raw
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise BundleError(
            f"{path} holds no Ed25519 public key (PEM, 64 hex chars or 32 raw bytes expected)",
            kind="key",
        )
    return key
