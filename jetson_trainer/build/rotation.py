"""Rotate the trainer's signing key: a new key pair, a key-rotation record signed by the old key
(protocol/keys.py), the key log the Pis read, and the trainer's bundles re-signed.

`rotate_key` (the `rotate-key` command):

1. makes a new Ed25519 pair in `out_dir` (as `keygen`; never over an existing pair);
2. appends a record to the key log file (`key_log`, default `keys.log` beside the old private
   key): seq = the last record's + 1, signed by the old key, proven by the new one, revoking the
   old key unless `keep_old` (then both verify until a later record revokes one);
3. re-signs every `v*/model.bundle` under `models_dir` (the daemon's `--store …/models`) with
   the new key, in place, so that `serve --private-key NEW` finds its champion and publishes it
   signed by a key the Pis trust (a node replaces a serving model signed by a revoked key with
   the same version re-signed);
4. the caller publishes the log retained on `{prefix}/keys/log` (`Topics.key_log`).

Publish the log before any bundle signed by the new key: a node that sees the bundle first
refuses it once (`bundle_signature`) and vets it again when the record arrives.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from nodekit.storage import atomic_write
from protocol import BundleError, PayloadError
from protocol.bundle import HEADER
from protocol.keys import (
    MAX_LOG_RECORDS,
    decode_log,
    encode_log,
    key_id,
    make_record,
    raw_public_key,
)

from ..errors import TrainerError
from .keys import generate_keypair, load_private_key

__all__ = ["KEY_LOG_NAME", "Rotation", "resign_bundle", "rotate_key"]

log = logging.getLogger(__name__)

KEY_LOG_NAME = "keys.log"


@dataclass(frozen=True, slots=True)
class Rotation:
    """What `rotate_key` did."""

    seq: int
    old_id: str
    new_id: str
    revoked: tuple[str, ...]
    private_key: Path
    public_key: Path
    key_log: Path
    log_bytes: bytes
    resigned: tuple[Path, ...]


def resign_bundle(data: bytes, sign: object) -> bytes:
    """The bundle `data` with its signature made again by `sign` (the bytes it covers are kept:
    header, manifest, model). BundleError for a bundle that is not signed or not one."""
    if len(data) < HEADER.size:
        raise BundleError("not a bundle: shorter than its header", kind="truncated")
    _, _, flags, m_len, n_len, s_len = HEADER.unpack_from(data)
    body_len = HEADER.size + m_len + n_len
    if not flags & 1 or s_len != 64 or len(data) != body_len + s_len:
        raise BundleError("only a signed bundle of the right length is re-signed", "malformed")
    body = data[:body_len]
    signature = sign(body)  # type: ignore[operator]
    return bytes(body) + bytes(signature)


def rotate_key(
    private_key: Path,
    out_dir: Path,
    *,
    site: str,
    key_log: Path | None = None,
    models_dir: Path | None = None,
    keep_old: bool = False,
) -> Rotation:
    """Steps 1-3 above; TrainerError (nothing changed) when the log or the old key is wrong."""
    old = load_private_key(private_key)
    old_id = key_id(raw_public_key(old))
    log_path = key_log or private_key.parent / KEY_LOG_NAME
    records: list[bytes] = []
    seq = 1
    if log_path.exists():
        try:
            chain = decode_log(log_path.read_bytes())
        except (OSError, PayloadError) as exc:
            raise TrainerError(f"cannot read the key log {log_path}: {exc}") from exc
        last = chain[-1]
        if last.site != site:
            raise TrainerError(f"{log_path} is the key log of site {last.site!r}, not {site!r}")
        if any(old_id in r.revoke for r in chain):
            raise TrainerError(
                f"key {old_id} ({private_key}) was revoked by a record in {log_path}; sign the "
                "record with the newest key"
            )
        if old_id not in {r.key_id for r in chain} and old_id not in {r.signer for r in chain}:
            raise TrainerError(
                f"key {old_id} ({private_key}) appears nowhere in {log_path}; the Pis that "
                "followed that log do not trust it"
            )
        records, seq = [r.raw for r in chain], last.seq + 1
    priv_path, pub_path = generate_keypair(out_dir)
    new = load_private_key(priv_path)
    record = make_record(old, new, site=site, seq=seq, revoke_signer=not keep_old)
    log_bytes = encode_log([*records, record][-MAX_LOG_RECORDS:])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(log_path, log_bytes)  # first: a bundle signed by the new key needs its record
    resigned: list[Path] = []
    for path in sorted(models_dir.glob("v*/model.bundle")) if models_dir else []:
        try:
            atomic_write(path, resign_bundle(path.read_bytes(), new.sign))
        except (OSError, BundleError) as exc:
            log.warning("not re-signed: %s: %s", path, exc)
            continue
        resigned.append(path)
    new_id = key_id(raw_public_key(new))
    return Rotation(
        seq,
        old_id,
        new_id,
        () if keep_old else (old_id,),
        priv_path,
        pub_path,
        log_path,
        log_bytes,
        tuple(resigned),
    )
