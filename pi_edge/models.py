"""Model bundles on the Pi: vetting (signature, compatibility, golden vectors) and the state dir.

State dir layout::

    STATE_DIR/models/current.bundle    the last good bundle (what the next start runs)
    STATE_DIR/models/previous.bundle   the one before it (what `rollback` returns to)
    STATE_DIR/models/blocked.json      {"versions": [...]}: versions rolled back from, which a
                                       retained bundle may not re-install (a newer one may)

Every write is temp file + fsync + os.replace + directory fsync, so a power cut leaves either
the old or the new file, never half of one.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from protocol import Bundle, BundleError, Manifest, decode_bundle

from .batching import BatchPolicy
from .errors import EdgeError, ModelError
from .runtime import Classifier

log = logging.getLogger(__name__)

CURRENT = "current.bundle"
PREVIOUS = "previous.bundle"
BLOCKED = "blocked.json"


@dataclass(frozen=True, slots=True)
class Expected:
    """What the running config can feed a model: classes, channels and window length."""

    classes: tuple[str, ...]
    channels: tuple[str, ...]
    window_length: int

    def check(self, manifest: Manifest) -> None:
        """ModelError(kind="incompatible") naming the first mismatch.

        >>> from protocol import CLASSES, CHANNELS
        >>> e = Expected(CLASSES, CHANNELS, 60)
        >>> m = Manifest(version=1, model_sha256="", model_bytes=0, window_length=30)
        >>> e.check(m)
        Traceback (most recent call last):
        ...
        pi_edge.errors.ModelError: bundle v1 has window_length 30, this node expects 60; ...
        """
        for name, want, got in (
            ("classes", self.classes, manifest.classes),
            ("channels", self.channels, manifest.channels),
            ("window_length", self.window_length, manifest.window_length),
        ):
            if want != got:
                raise ModelError(
                    f"bundle v{manifest.version} has {name} {got}, this node expects {want}; "
                    "publish a model trained for this node's sensors or change the node's config",
                    kind="incompatible",
                )


@dataclass(frozen=True, slots=True)
class VettedModel:
    """A bundle that passed every check, with its ready-to-run classifier."""

    bundle: Bundle
    classifier: Classifier

    @property
    def version(self) -> int:
        return self.bundle.manifest.version


def vet_bundle(
    data: bytes,
    *,
    public_key: bytes | None,
    allow_unsigned: bool,
    expected: Expected,
    threads: int = 1,
    policy: BatchPolicy | None = None,
) -> VettedModel:
    """Decode + verify + check compatibility + build an interpreter + run the golden vectors.

    Raises ModelError whose `.kind` is the failed check (signature, checksum, truncated,
    incompatible, golden, runtime, ...).
    """
    try:
        bundle = decode_bundle(data, public_key, allow_unsigned=allow_unsigned)
    except BundleError as exc:
        raise ModelError(str(exc), kind=exc.kind) from exc
    expected.check(bundle.manifest)
    classifier = Classifier(bundle.model, bundle.manifest, threads=threads, policy=policy)
    classifier.check_golden()
    if not bundle.raw:
        bundle = Bundle(bundle.manifest, bundle.model, bundle.signed, bytes(data))
    return VettedModel(bundle, classifier)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old or the new file, never a part."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class ModelStore:
    """The state dir's models: last good, the one before, and versions blocked by a rollback."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir) / "models"

    @property
    def current_path(self) -> Path:
        return self.dir / CURRENT

    @property
    def previous_path(self) -> Path:
        return self.dir / PREVIOUS

    def _ensure(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EdgeError(
                f"cannot create state dir {self.dir}: {exc}; pass a writable "
                "--state-dir (or EDGELOOP_STATE_DIR)"
            ) from exc

    def candidates(self) -> list[tuple[str, bytes]]:
        """(name, bytes) of the stored bundles to try at startup, current first."""
        found = []
        for path in (self.current_path, self.previous_path):
            if path.is_file():
                found.append((path.name, path.read_bytes()))
        return found

    def current_stamp(self) -> int | None:
        """mtime_ns of current.bundle (None if absent): lets a running node see a rollback."""
        try:
            return self.current_path.stat().st_mtime_ns
        except OSError:
            return None

    def save(self, bundle: Bundle) -> None:
        """Make `bundle` current; the old current becomes previous (unless it is the same)."""
        self._ensure()
        new_version = bundle.manifest.version
        cur = self.current_path
        if cur.is_file():
            old = cur.read_bytes()
            if old == bundle.raw:
                return
            if _version_of(old) != new_version:
                atomic_write(self.previous_path, old)
        atomic_write(cur, bundle.raw)
        self.unblock_up_to(new_version)

    def rollback(self) -> tuple[int | None, int | None]:
        """Swap current and previous on disk; block the version rolled away from.

        Returns (from_version, to_version). EdgeError if there is no previous bundle.
        """
        if not self.previous_path.is_file():
            raise EdgeError(
                f"no previous model in {self.dir} to roll back to; a node keeps one "
                "after it has run two model versions"
            )
        prev = self.previous_path.read_bytes()
        cur = self.current_path.read_bytes() if self.current_path.is_file() else None
        if cur is not None:
            atomic_write(self.previous_path, cur)
        atomic_write(self.current_path, prev)
        from_v = _version_of(cur) if cur is not None else None
        to_v = _version_of(prev)
        if from_v is not None:
            self._write_blocked(sorted(set(self.blocked()) | {from_v}))
        return from_v, to_v

    def blocked(self) -> list[int]:
        path = self.dir / BLOCKED
        try:
            obj = json.loads(path.read_text())
            return [int(v) for v in obj.get("versions", [])]
        except (OSError, ValueError, TypeError, AttributeError):
            return []

    def _write_blocked(self, versions: list[int]) -> None:
        self._ensure()
        atomic_write(self.dir / BLOCKED, json.dumps({"versions": versions}).encode())

    def unblock_up_to(self, version: int) -> None:
        """A version the node accepted clears blocks on it and on older versions."""
        blocked = self.blocked()
        keep = [v for v in blocked if v > version]
        if keep != blocked:
            self._write_blocked(keep)


def _version_of(raw: bytes) -> int | None:
    """Manifest version of a stored bundle without verifying it (for bookkeeping only)."""
    try:
        return decode_bundle(raw, None, allow_unsigned=True).manifest.version
    except BundleError:
        return None
