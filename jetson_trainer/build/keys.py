"""Ed25519 key pairs for signing model bundles (the Pi holds only the public key).

Files written by `generate_keypair(out_dir)`:

- ``trainer_ed25519.pem``: private key, PKCS#8 PEM, unencrypted, mode 0600;
- ``trainer_ed25519.pub.pem``: public key, SubjectPublicKeyInfo PEM, which
  `protocol.load_public_key` reads.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..errors import TrainerError

__all__ = ["PRIVATE_NAME", "PUBLIC_NAME", "generate_keypair", "load_private_key"]

PRIVATE_NAME = "trainer_ed25519.pem"
PUBLIC_NAME = "trainer_ed25519.pub.pem"


def generate_keypair(out_dir: Path, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair into `out_dir`; return (private_path, public_path)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    priv_path, pub_path = out_dir / PRIVATE_NAME, out_dir / PUBLIC_NAME
    if not overwrite and (priv_path.exists() or pub_path.exists()):
        raise TrainerError(
            f"{priv_path} or {pub_path} already exists; refusing to overwrite a "
            "signing key (pick another --out, or delete the old pair on purpose)"
        )
    key = Ed25519PrivateKey.generate()
    priv_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pub_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if priv_path.exists():
        priv_path.unlink()
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(priv_pem)
    os.chmod(priv_path, 0o600)
    pub_path.write_bytes(pub_pem)
    return priv_path, pub_path


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in PEM file `path` (as written by `generate_keypair`)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TrainerError(
            f"cannot read private key {path}: {exc}; make one with "
            "`python -m jetson_trainer keygen --out DIR`"
        ) from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise TrainerError(f"{path} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise TrainerError(
            f"{path} holds a {type(key).__name__}, not an Ed25519 key; make one "
            "with `python -m jetson_trainer keygen --out DIR`"
        )
    return key
