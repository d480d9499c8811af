r"""The trainer's signing keys can change: key ids, key-rotation records, the key log, trust sets.

A node trusts a small set of Ed25519 public keys (`TrustSet`): at first those it is configured
with (`--public-key`, one or several PEM blocks in one file), then what **key-rotation records**
signed by a trusted key say. A record announces a new key and may revoke keys; the trainer
publishes the last records, oldest first, as one retained **key log** on `{prefix}/keys/log`
(`Topics.key_log`), so that a node that missed several rotations still walks the chain. A bundle
verifies if any trusted key's signature fits it (the bundle format does not change, so older
nodes read every bundle as before); a bundle that only a revoked key's signature fits is refused
as `revoked`. Full spec: protocol/README.md, "Signing keys and their rotation".

Record, binary, version 1 (little-endian)::

    offset   size  field
    0        2     magic       b"EK"
    2        1     version     1
    3        1     flags       0
    4        2     body_len    uint16 B, 2..MAX_BODY_BYTES
    6        B     body        UTF-8 JSON: exactly site, seq, created, signer, key, revoke
    6+B      64    signature   Ed25519 by the signer (a trusted key) over bytes [0, 6+B)
    70+B     64    proof       Ed25519 by the new key over the same bytes: it is a real key
                               whose private half the trainer holds

Key log, version 1: b"EL", version 1, count n (uint8, 1..MAX_LOG_RECORDS), then n records.

>>> from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
>>> a, b = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
>>> trust = TrustSet.of([raw_public_key(a)])
>>> record = make_record(a, b, site="plant/v1", seq=1, revoke_signer=True)
>>> new, applied = trust.apply_log(encode_log([record]), "plant/v1")
>>> old_id = key_id(raw_public_key(a))
>>> [r.seq for r in applied], new.keys == (raw_public_key(b),), new.is_revoked(old_id)
([1], True, True)
>>> new.apply_log(encode_log([record]), "plant/v1")[1]  # the same log again: nothing new
[]
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._json import loads, need_int, need_number, need_str, short
from ._signature import KEY_BYTES, SIGNATURE_BYTES, check_public_key
from ._signature import verify as verify_signature
from .errors import BundleError, PayloadError

if TYPE_CHECKING:
    from .bundle import Bundle

__all__ = [
    "KEY_ID_CHARS",
    "LOG_VERSION",
    "MAX_BODY_BYTES",
    "MAX_LOG_BYTES",
    "MAX_LOG_RECORDS",
    "MAX_REVOKED",
    "MAX_TRUSTED",
    "RECORD_VERSION",
    "TRUST_VERSION",
    "KeyRecord",
    "TrustSet",
    "decode_log",
    "decode_record",
    "encode_log",
    "key_id",
    "make_record",
    "raw_public_key",
]

RECORD_MAGIC = b"EK"
LOG_MAGIC = b"EL"
RECORD_VERSION = 1
LOG_VERSION = 1
TRUST_VERSION = 1  # trust.json in a node's state dir
RECORD_HEAD = struct.Struct("<2sBBH")
LOG_HEAD = struct.Struct("<2sBB")
MAX_BODY_BYTES = 1024  # a body is ~250 bytes
MAX_LOG_RECORDS = 16
MAX_RECORD_BYTES = RECORD_HEAD.size + MAX_BODY_BYTES + 2 * SIGNATURE_BYTES
MAX_LOG_BYTES = LOG_HEAD.size + MAX_LOG_RECORDS * MAX_RECORD_BYTES
MAX_TRUSTED = 4  # keys a node trusts at once
MAX_REVOKED = 32  # revoked key ids a node remembers (oldest forgotten first)
MAX_SEQ = 2**31 - 1
KEY_ID_CHARS = 32
_FIELDS = frozenset({"site", "seq", "created", "signer", "key", "revoke"})
_KEY_ID = re.compile(r"[0-9a-f]{32}")
_KEY_HEX = re.compile(r"[0-9a-f]{64}")


def key_id(public_key: bytes) -> str:
    """A key's id: the first 16 bytes of SHA-256 of its 32 raw bytes, as 32 lowercase hex.

    >>> key_id(bytes(range(32)))
    '630dcd2966c4336691125448bbb25b4f'
    """
    return hashlib.sha256(bytes(public_key)).hexdigest()[:KEY_ID_CHARS]


def raw_public_key(private_key: Any) -> bytes:
    """The 32 raw bytes of a `cryptography` Ed25519 private key's public key."""
    from cryptography.hazmat.primitives import serialization

    raw: bytes = private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return raw


def _bad(message: str, kind: str = "bad_field") -> PayloadError:
    return PayloadError(f"key record: {message}", kind=kind)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One key-rotation record: `signer` (a trusted key's id) announces `key` for `site` and
    revokes the key ids in `revoke` (the signer's own among them, usually)."""

    site: str
    seq: int
    created: float
    signer: str
    key: bytes
    revoke: tuple[str, ...] = ()
    raw: bytes = field(default=b"", repr=False, compare=False)  # the whole encoded record

    def __post_init__(self) -> None:
        need_str(self.site, "key record site", 256)
        if self.site.startswith("/") or self.site.endswith("/") or set("+#") & set(self.site):
            raise _bad(f"site {short(self.site)} is not a topic prefix")
        need_int(self.seq, "key record seq", 1, MAX_SEQ)
        need_number(self.created, "key record created", 0.0, 2.0**32)
        for kid in (self.signer, *self.revoke):
            if not isinstance(kid, str) or not _KEY_ID.fullmatch(kid):
                raise _bad(f"key id {short(kid)} must be {KEY_ID_CHARS} lowercase hex digits")
        if not isinstance(self.key, bytes) or len(self.key) != KEY_BYTES:
            raise _bad(f"key must be {KEY_BYTES} bytes")
        try:
            check_public_key(self.key)
        except BundleError as exc:
            raise _bad(str(exc), "bad_key") from None
        if not isinstance(self.revoke, tuple) or len(self.revoke) > MAX_TRUSTED:
            raise _bad(f"revoke must list at most {MAX_TRUSTED} key ids")
        if len(set(self.revoke)) != len(self.revoke):
            raise _bad("revoke lists a key id twice")
        if self.key_id in self.revoke or self.key_id == self.signer:
            raise _bad("the new key may neither sign its own record nor be revoked by it")

    @property
    def key_id(self) -> str:
        return key_id(self.key)

    def body(self) -> bytes:
        obj = {
            "site": self.site,
            "seq": self.seq,
            "created": self.created,
            "signer": self.signer,
            "key": self.key.hex(),
            "revoke": list(self.revoke),
        }
        return json.dumps(obj, separators=(",", ":")).encode()

    def signed_part(self) -> bytes:
        body = self.body()
        return RECORD_HEAD.pack(RECORD_MAGIC, RECORD_VERSION, 0, len(body)) + body

    def encode(self, sign: Callable[[bytes], bytes], prove: Callable[[bytes], bytes]) -> bytes:
        """The record signed by the signer (`sign`) and by the new key (`prove`)."""
        part = self.signed_part()
        signature, proof = sign(part), prove(part)
        if len(signature) != SIGNATURE_BYTES or len(proof) != SIGNATURE_BYTES:
            raise ValueError("a signer returned something else than a 64-byte signature")
        return part + signature + proof

    @property
    def digest(self) -> str:
        """SHA-256 of the encoded record (which record a node applied last)."""
        return hashlib.sha256(self.raw).hexdigest()


def make_record(
    signer: Any,
    new: Any,
    *,
    site: str,
    seq: int,
    revoke_signer: bool = True,
    revoke: Sequence[str] = (),
    created: float | None = None,
) -> bytes:
    """An encoded record: `signer` (an Ed25519 private key) announces `new`'s public key."""
    signer_id = key_id(raw_public_key(signer))
    ids = tuple(dict.fromkeys([*revoke, *([signer_id] if revoke_signer else [])]))
    record = KeyRecord(
        site,
        seq,
        round(time.time() if created is None else created, 3),
        signer_id,
        raw_public_key(new),
        ids,
    )
    return record.encode(signer.sign, new.sign)


def _record_at(data: bytes, offset: int) -> tuple[KeyRecord, bytes, bytes, bytes, int]:
    """(record, signed part, signature, proof, end offset) of the record at `offset`; the
    signatures are not checked here."""
    if len(data) - offset < RECORD_HEAD.size:
        raise _bad(f"{len(data) - offset} bytes left, shorter than a record header", "truncated")
    magic, version, flags, body_len = RECORD_HEAD.unpack_from(data, offset)
    if magic != RECORD_MAGIC:
        raise _bad(f"starts with {bytes(magic)!r}, expected {RECORD_MAGIC!r}", "bad_magic")
    if version != RECORD_VERSION:
        raise _bad(
            f"version {version}, this build reads {RECORD_VERSION}; upgrade pi_edge",
            "bad_version",
        )
    if flags:
        raise _bad(f"flags {flags:#04x} set unknown bits")
    if not 2 <= body_len <= MAX_BODY_BYTES:
        raise _bad(f"body is {body_len} bytes, allowed 2..{MAX_BODY_BYTES}", "too_large")
    body_at = offset + RECORD_HEAD.size
    end = body_at + body_len + 2 * SIGNATURE_BYTES
    if len(data) < end:
        raise _bad(
            f"is cut short: {len(data) - offset} bytes, its header says {end - offset}", "truncated"
        )
    obj: Any = loads(
        data[body_at : body_at + body_len], "key record body", max_bytes=MAX_BODY_BYTES, max_depth=2
    )
    if not isinstance(obj, dict):
        raise _bad(f"body must be a JSON object, got {short(obj)}", "bad_json")
    if set(obj) != _FIELDS:
        raise _bad(f"body has fields {short(sorted(obj))}, expected exactly {sorted(_FIELDS)}")
    key_hex, revoke = obj["key"], obj["revoke"]
    if not isinstance(key_hex, str) or not _KEY_HEX.fullmatch(key_hex):
        raise _bad(f"key must be 64 lowercase hex digits, got {short(key_hex)}")
    if not isinstance(revoke, list):
        raise _bad(f"revoke must be a list of key ids, got {short(revoke)}")
    record = KeyRecord(
        obj["site"],
        obj["seq"],
        obj["created"],
        obj["signer"],
        bytes.fromhex(key_hex),
        tuple(revoke),
        bytes(data[offset:end]),
    )
    sig_at = body_at + body_len
    part = bytes(data[offset:sig_at])
    if record.body() != part[RECORD_HEAD.size :]:
        raise _bad("body is not in its canonical form (compact JSON, fields in order)")
    signature = bytes(data[sig_at : sig_at + SIGNATURE_BYTES])
    proof = bytes(data[sig_at + SIGNATURE_BYTES : end])
    return record, part, signature, proof, end


def decode_record(data: bytes) -> KeyRecord:
    """One record, every field checked, the new key's proof verified (not the signer's
    signature: only a trust set knows the signer's key). PayloadError (with .kind) otherwise."""
    if len(data) > MAX_RECORD_BYTES:
        raise _bad(f"is {len(data)} bytes, limit {MAX_RECORD_BYTES}", "too_large")
    record, part, _, proof, end = _record_at(bytes(data), 0)
    if end != len(data):
        raise _bad(f"has {len(data) - end} bytes after its end", "trailing")
    _check_proof(record, part, proof)
    return record


def _check_proof(record: KeyRecord, part: bytes, proof: bytes) -> None:
    if not verify_signature(record.key, part, proof):
        raise _bad(
            f"seq {record.seq}: the new key {record.key_id} did not sign it (no proof that the "
            "trainer holds that key)",
            "bad_signature",
        )


@dataclass(frozen=True, slots=True)
class _Signed:
    record: KeyRecord
    part: bytes
    signature: bytes


def _decode_log(data: bytes) -> list[_Signed]:
    if len(data) > MAX_LOG_BYTES:
        raise _bad(f"log is {len(data)} bytes, limit {MAX_LOG_BYTES}", "too_large")
    if len(data) < LOG_HEAD.size:
        raise _bad(f"log is {len(data)} bytes, shorter than its header", "truncated")
    magic, version, count = LOG_HEAD.unpack_from(data)
    if magic != LOG_MAGIC:
        raise _bad(f"log starts with {bytes(magic)!r}, expected {LOG_MAGIC!r}", "bad_magic")
    if version != LOG_VERSION:
        raise _bad(
            f"log version {version}, this build reads {LOG_VERSION}; upgrade pi_edge", "bad_version"
        )
    if not 1 <= count <= MAX_LOG_RECORDS:
        raise _bad(f"log holds {count} records, allowed 1..{MAX_LOG_RECORDS}")
    out: list[_Signed] = []
    offset = LOG_HEAD.size
    for _ in range(count):
        record, part, signature, proof, offset = _record_at(data, offset)
        if out and record.seq != out[-1].record.seq + 1:
            raise _bad(f"log seq {record.seq} follows {out[-1].record.seq}; it must go up by 1")
        if out and record.site != out[-1].record.site:
            raise _bad("log mixes records of two sites")
        _check_proof(record, part, proof)
        out.append(_Signed(record, part, signature))
    if offset != len(data):
        raise _bad(f"log has {len(data) - offset} bytes after its last record", "trailing")
    return out


def decode_log(data: bytes) -> list[KeyRecord]:
    """The records of a key log, oldest first, each checked as `decode_record` does; the chain
    of signer signatures is checked by `TrustSet.apply_log`."""
    return [s.record for s in _decode_log(bytes(data))]


def encode_log(records: Iterable[bytes]) -> bytes:
    """A key log of encoded records, oldest first (the last MAX_LOG_RECORDS are kept)."""
    kept = list(records)[-MAX_LOG_RECORDS:]
    if not kept:
        raise ValueError("a key log holds at least one record")
    return LOG_HEAD.pack(LOG_MAGIC, LOG_VERSION, len(kept)) + b"".join(kept)


@dataclass(frozen=True, slots=True)
class TrustSet:
    """The keys a node trusts (oldest first), the key ids it revoked (with the key when it knew
    it), and the last record it applied (`seq`, `last`: its SHA-256)."""

    keys: tuple[bytes, ...]
    revoked: tuple[tuple[str, bytes | None], ...] = ()
    seq: int = 0
    last: str = ""

    def __post_init__(self) -> None:
        if not 1 <= len(self.keys) <= MAX_TRUSTED:
            raise BundleError(
                f"a node trusts 1..{MAX_TRUSTED} keys, got {len(self.keys)}", kind="key"
            )
        for key in self.keys:
            check_public_key(key)
        if len({key_id(k) for k in self.keys}) != len(self.keys):
            raise BundleError("a key is trusted twice", kind="key")
        if any(self.is_revoked(key_id(k)) for k in self.keys):
            raise BundleError("a revoked key cannot be trusted", kind="key")

    @classmethod
    def of(cls, keys: Iterable[bytes]) -> TrustSet:
        """The trust set of configured keys (duplicates dropped)."""
        return cls(tuple({key_id(k): bytes(k) for k in keys}.values()))

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(key_id(k) for k in self.keys)

    def is_revoked(self, kid: str) -> bool:
        return any(r == kid for r, _ in self.revoked)

    def with_keys(self, keys: Iterable[bytes]) -> tuple[TrustSet, list[str]]:
        """Add configured `keys` (an operator's): those revoked are left out, their ids
        returned (the caller warns). BundleError if more than MAX_TRUSTED would be trusted."""
        have = {key_id(k): k for k in self.keys}
        skipped = []
        for key in keys:
            kid = key_id(key)
            if self.is_revoked(kid):
                skipped.append(kid)
            else:
                have.setdefault(kid, bytes(key))
        return TrustSet(tuple(have.values()), self.revoked, self.seq, self.last), skipped

    # -- records -----------------------------------------------------------------------------
    def apply_log(self, data: bytes, site: str) -> tuple[TrustSet, list[KeyRecord]]:
        """Apply a key log's records newer than `seq`, oldest first: (new set, records applied).

        PayloadError (with .kind) for a malformed log, one for another site (`site`), a log
        whose newest record is older than this set's (`replay`) or another record under this
        set's seq (`conflict`), a record not signed by a trusted key (`untrusted`, or `revoked`
        for a revoked one), a bad signature (`bad_signature`), or one that would leave more
        than MAX_TRUSTED keys or none (`bad_field`). Records before the faulty one stay applied
        in the returned set only if the call returns; on an error nothing is applied.
        """
        chain = _decode_log(bytes(data))
        newest = chain[-1].record
        if newest.site != site:
            raise _bad(f"is for site {short(newest.site)}, this node's prefix is {site!r}", "site")
        if newest.seq < self.seq:
            raise _bad(
                f"log ends at seq {newest.seq}, this node applied seq {self.seq}: a replayed "
                "older log",
                "replay",
            )
        trust: TrustSet = self
        applied: list[KeyRecord] = []
        skipped: PayloadError | None = None
        for signed in chain:
            record = signed.record
            if record.seq < trust.seq:
                continue
            if record.seq == trust.seq:
                if trust.last and record.digest != trust.last:
                    trust._check_signer(signed)  # a stranger's record is "untrusted"
                    raise _bad(
                        f"seq {record.seq} differs from the record this node applied", "conflict"
                    )
                continue
            try:
                trust = trust._apply(signed)
            except PayloadError as exc:
                # a node that never applied a record (installed with a newer key) starts at
                # the first record its keys signed: earlier ones, by keys it never knew, are
                # skipped — but a log of which it applies nothing is refused
                if exc.kind != "untrusted" or applied or trust.seq:
                    raise
                skipped = skipped or exc
                continue
            applied.append(record)
        if skipped is not None and not applied:
            raise skipped
        return trust, applied

    def _check_signer(self, signed: _Signed) -> None:
        """The record's signer is a trusted key and its signature verifies (PayloadError)."""
        record = signed.record
        signer = next((k for k in self.keys if key_id(k) == record.signer), None)
        if signer is None:
            revoked = self.is_revoked(record.signer)
            raise _bad(
                f"seq {record.seq} is signed by key {record.signer}, which this node "
                + ("revoked" if revoked else "does not trust"),
                "revoked" if revoked else "untrusted",
            )
        if not verify_signature(signer, signed.part, signed.signature):
            raise _bad(
                f"seq {record.seq}: the signature of key {record.signer} does not verify",
                "bad_signature",
            )

    def _apply(self, signed: _Signed) -> TrustSet:
        record = signed.record
        if record.seq != self.seq + 1 and self.seq:
            raise _bad(f"seq {record.seq} does not follow this node's seq {self.seq}", "gap")
        self._check_signer(signed)
        if record.key_id in self.ids or self.is_revoked(record.key_id):
            raise _bad(
                f"seq {record.seq} announces key {record.key_id}, which this node already knows"
            )
        keys = [k for k in self.keys if key_id(k) not in record.revoke] + [record.key]
        if len(keys) > MAX_TRUSTED:
            raise _bad(
                f"seq {record.seq} would leave {len(keys)} trusted keys, at most "
                f"{MAX_TRUSTED}; revoke one in the same record"
            )
        known = {key_id(k): k for k in self.keys}
        gone = [(kid, known.get(kid)) for kid in record.revoke if not self.is_revoked(kid)]
        gone_too = (*self.revoked, *gone)[-MAX_REVOKED:]
        return TrustSet(tuple(keys), gone_too, record.seq, record.digest)

    # -- bundles -----------------------------------------------------------------------------
    def decode_bundle(self, data: bytes) -> Bundle:
        """`protocol.decode_bundle` with any trusted key; BundleError(kind="revoked") when only
        a revoked key's signature fits (that key known), SignatureError when none does."""
        from .bundle import decode_bundle
        from .errors import SignatureError

        try:
            return decode_bundle(data, self.keys)
        except SignatureError:
            known = tuple(k for _, k in self.revoked if k is not None)
            if known and _signed_by_any(data, known):
                signer = next(k for k in known if _signed_by_any(data, (k,)))
                raise BundleError(
                    f"bundle is signed by key {key_id(signer)}, which this node revoked (key "
                    "record); the trainer signs with its new key",
                    kind="revoked",
                ) from None
            raise

    # -- trust.json --------------------------------------------------------------------------
    def to_json(self, site: str) -> bytes:
        obj = {
            "v": TRUST_VERSION,
            "site": site,
            "seq": self.seq,
            "last": self.last,
            "keys": [k.hex() for k in self.keys],
            "revoked": [{"id": i, "key": None if k is None else k.hex()} for i, k in self.revoked],
        }
        return json.dumps(obj, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes, site: str) -> TrustSet:
        """A node's trust.json; PayloadError for anything but the file `to_json` writes."""
        obj: Any = loads(data, "trust.json", max_bytes=64 * 1024, max_depth=3)
        if not isinstance(obj, dict) or obj.get("v") != TRUST_VERSION:
            raise PayloadError(
                f"trust.json must be a version {TRUST_VERSION} object", "bad_version"
            )
        if set(obj) != {"v", "site", "seq", "last", "keys", "revoked"}:
            raise PayloadError(f"trust.json has fields {short(sorted(obj))}", "bad_field")
        if obj["site"] != site:
            raise PayloadError(
                f"trust.json is for site {short(obj['site'])}, this node's prefix is {site!r}",
                "site",
            )
        seq = need_int(obj["seq"], "trust.json seq", 0, MAX_SEQ)
        last = obj["last"]
        if not isinstance(last, str) or (last and not re.fullmatch(r"[0-9a-f]{64}", last)):
            raise PayloadError(f"trust.json last {short(last)} is not a SHA-256", "bad_field")
        keys, revoked = obj["keys"], obj["revoked"]
        if not isinstance(keys, list) or not isinstance(revoked, list):
            raise PayloadError("trust.json keys and revoked must be lists", "bad_field")
        if len(revoked) > MAX_REVOKED or len(keys) > MAX_TRUSTED:
            raise PayloadError("trust.json holds too many keys", "bad_field")
        try:
            return cls(
                tuple(_hex_key(k) for k in keys),
                tuple((_revoked_id(r), _revoked_key(r)) for r in revoked),
                seq,
                last,
            )
        except BundleError as exc:
            raise PayloadError(f"trust.json: {exc}", "bad_field") from None


def _signed_by_any(data: bytes, keys: Sequence[bytes]) -> bool:
    from .bundle import decode_bundle

    try:
        decode_bundle(data, tuple(keys))
    except BundleError:
        return False
    return True


def _hex_key(value: Any) -> bytes:
    if not isinstance(value, str) or not _KEY_HEX.fullmatch(value):
        raise PayloadError(f"trust.json key {short(value)} is not 64 hex digits", "bad_field")
    return bytes.fromhex(value)


def _revoked_id(value: Any) -> str:
    if not isinstance(value, dict) or set(value) != {"id", "key"}:
        raise PayloadError(f"trust.json revoked entry {short(value)}", "bad_field")
    kid = value["id"]
    if not isinstance(kid, str) or not _KEY_ID.fullmatch(kid):
        raise PayloadError(f"trust.json revoked id {short(kid)}", "bad_field")
    return kid


def _revoked_key(value: dict[str, Any]) -> bytes | None:
    key = value["key"]
    if key is None:
        return None
    raw = _hex_key(key)
    if key_id(raw) != value["id"]:
        raise PayloadError("trust.json revoked key does not match its id", "bad_field")
    return raw
