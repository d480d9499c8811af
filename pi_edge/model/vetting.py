"""Model bundles on the Pi: vetting (signature, compatibility, golden vectors) and the state dir.

State dir layout::

    STATE_DIR/models/current.bundle    the last good bundle (what the next start runs)
    STATE_DIR/models/previous.bundle   the one before it (what `rollback` returns to)
    STATE_DIR/models/blocked.json      {"versions": [...]}: versions rolled back from, which a
                                       retained bundle may not re-install (a newer one may)
    STATE_DIR/models/versions.json     {"highest": N, "bundles": {sha256: version}}: the
                                       high-water mark (no bundle from the network below it is
                                       accepted) and the versions of bundles this node verified
    STATE_DIR/models/rollbacks.json    {"v": 1, "rollbacks": [...]}: the last 8 rollbacks
                                       ({"from", "to", "reason", "ts", "auto"}), newest last;
                                       the status shows them as `detail.rollbacks`

versions.json is written by the node only, after a verified decode, so bookkeeping (which
version is current, which to block on rollback) never parses an unverified manifest: a stored
bundle's version is looked up by the sha256 of its bytes. Every write is temp file + fsync +
os.replace + directory fsync, so a power cut leaves either the old or the new file, never half
of one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol import Bundle, BundleError, Manifest, PayloadError, decode_bundle
from protocol.status_detail import MAX_ROLLBACKS, Rollback, clip_text

from ..errors import EdgeError, ModelError
from ..intake.inbox import BatchPolicy
from .classifier import Classifier

log = logging.getLogger(__name__)

CURRENT = "current.bundle"
PREVIOUS = "previous.bundle"
BLOCKED = "blocked.json"
VERSIONS = "versions.json"
ROLLBACKS = "rollbacks.json"
ROLLBACKS_KEPT = MAX_ROLLBACKS  # rollbacks rollbacks.json (and the status) remember, newest last
REASON_MAX = 200  # characters of a rollback's reason
OPERATOR_ROLLBACK = "pi_edge rollback on the node"  # the reason of the CLI's rollback
KNOWN_BUNDLES = 8  # bundle hashes versions.json remembers (current and previous among them)


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
        >>> m = Manifest(version=1, model_sha256="0" * 64, model_bytes=0, window_length=30)
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


def check_site(manifest: Manifest, site: str) -> None:
    """ModelError(kind="site") unless the bundle was made for `site`, this node's topic prefix.

    >>> m = Manifest(version=2, model_sha256="0" * 64, model_bytes=0, site="plant-a/v1")
    >>> check_site(m, "plant-a/v1")
    >>> check_site(m, "plant-b/v1")
    Traceback (most recent call last):
    ...
    pi_edge.errors.ModelError: bundle v2 was made for site 'plant-a/v1', this node's prefix ...
    """
    if manifest.site != site:
        made_for = repr(manifest.site) if manifest.site else "no site (an older trainer)"
        raise ModelError(
            f"bundle v{manifest.version} was made for site {made_for}, this node's prefix is "
            f"{site!r}; publish a model the trainer made with --prefix {site}",
            kind="site",
        )


def check_not_replayed(manifest: Manifest, highest: int) -> None:
    """ModelError(kind="replay") if the bundle is older than `highest`, the newest accepted.

    Versions from the network only go up; going down is an operator's `pi_edge rollback`.

    >>> m = Manifest(version=2, model_sha256="0" * 64, model_bytes=0)
    >>> check_not_replayed(m, 2)
    >>> check_not_replayed(m, 3)
    Traceback (most recent call last):
    ...
    pi_edge.errors.ModelError: bundle v2 is older than v3, the newest this node accepted; ...
    """
    if manifest.version < highest:
        raise ModelError(
            f"bundle v{manifest.version} is older than v{highest}, the newest this node "
            "accepted; a replayed bundle cannot roll a node back (an operator can: `pi_edge "
            "rollback` on the node, or have the trainer re-issue the old model as a new version)",
            kind="replay",
        )


def verify_bundle(data: bytes, *, public_key: bytes | None, allow_unsigned: bool) -> Bundle:
    """Signature over the raw bytes first, then layout, manifest and sha256 (ModelError)."""
    try:
        bundle = decode_bundle(data, public_key, allow_unsigned=allow_unsigned)
    except BundleError as exc:
        raise ModelError(str(exc), kind=exc.kind) from exc
    return bundle


def build_model(
    bundle: Bundle, *, expected: Expected, threads: int = 1, policy: BatchPolicy | None = None
) -> VettedModel:
    """Check compatibility, build an interpreter, run the golden vectors (ModelError)."""
    expected.check(bundle.manifest)
    classifier = Classifier(bundle.model, bundle.manifest, threads=threads, policy=policy)
    classifier.check_golden()
    return VettedModel(bundle, classifier)


def vet_bundle(
    data: bytes,
    *,
    public_key: bytes | None,
    allow_unsigned: bool,
    expected: Expected,
    threads: int = 1,
    policy: BatchPolicy | None = None,
) -> VettedModel:
    """Verify + decode + check compatibility + build an interpreter + run the golden vectors.

    Raises ModelError whose `.kind` is the failed check (signature, checksum, truncated,
    incompatible, golden, runtime, ...).
    """
    bundle = verify_bundle(data, public_key=public_key, allow_unsigned=allow_unsigned)
    return build_model(bundle, expected=expected, threads=threads, policy=policy)


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
        """Make verified `bundle` current; the old current becomes previous (unless the same
        version); its version is remembered and raises the high-water mark."""
        self._ensure()
        new_version = bundle.manifest.version
        cur = self.current_path
        if cur.is_file():
            old = cur.read_bytes()
            if old == bundle.raw:
                self.remember(bundle)
                return
            if self.version_of(old) != new_version:
                atomic_write(self.previous_path, old)
        atomic_write(cur, bundle.raw)
        self.remember(bundle)
        self.unblock_up_to(new_version)

    def rollback(
        self, reason: str = OPERATOR_ROLLBACK, *, auto: bool = False, now: float | None = None
    ) -> tuple[int | None, int | None]:
        """Swap current and previous on disk; block the version rolled away from; record the
        rollback (`reason`, whether the node decided it by itself) in rollbacks.json.

        Returns (from_version, to_version), None where this node never recorded the version
        (a state dir from an older pi_edge; such a rollback is not recorded). EdgeError if
        there is no previous bundle.
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
        from_v = self.version_of(cur) if cur is not None else None
        to_v = self.version_of(prev)
        if from_v is not None:
            self._write_blocked(sorted(set(self.blocked()) | {from_v}))
            record = Rollback(
                from_v,
                to_v,
                clip_text(reason[:REASON_MAX], REASON_MAX),
                round(time.time() if now is None else now, 3),
                auto,
            )
            kept = [*self.rollback_entries(), record][-ROLLBACKS_KEPT:]
            body = {"v": 1, "rollbacks": [r.to_json_obj() for r in kept]}
            atomic_write(self.dir / ROLLBACKS, json.dumps(body, indent=1).encode())
        return from_v, to_v

    def rollbacks(self) -> list[dict[str, Any]]:
        """The recorded rollbacks as JSON, newest last (at most 8)."""
        return [r.to_json_obj() for r in self.rollback_entries()]

    def rollback_entries(self) -> list[Rollback]:
        """The recorded rollbacks, newest last (at most 8); an unreadable file or entry is
        skipped with a warning, never an error: it is a report, not a decision. An entry is
        what the status shows (`protocol.status_detail.Rollback`)."""
        path = self.dir / ROLLBACKS
        try:
            obj: Any = json.loads(path.read_bytes())
        except FileNotFoundError:
            return []
        except (OSError, ValueError, RecursionError) as exc:
            log.warning("%s is unreadable (%s); the rollback list starts over", path, exc)
            return []
        entries = obj.get("rollbacks") if isinstance(obj, dict) else None
        if not isinstance(entries, list):
            log.warning("%s has no rollback list; the rollback list starts over", path)
            return []
        good: list[Rollback] = []
        for entry in entries:
            try:
                good.append(Rollback.from_obj(entry))
            except PayloadError as exc:
                log.warning("%s: a malformed rollback skipped: %s", path, exc)
        return good[-ROLLBACKS_KEPT:]

    # -- versions.json: written only after a verified decode ---------------------------------
    def _versions(self) -> tuple[int, dict[str, int]]:
        path = self.dir / VERSIONS
        if not path.is_file():
            return 0, {}
        try:
            obj: Any = json.loads(path.read_bytes())
            highest = obj["highest"]
            known = obj["bundles"]
            if not (type(highest) is int and isinstance(known, dict)):
                raise TypeError("wrong types")
            return highest, {
                k: v for k, v in known.items() if isinstance(k, str) and type(v) is int
            }
        except (OSError, ValueError, TypeError, KeyError, RecursionError) as exc:
            log.warning(
                "%s is unreadable (%s); the high-water mark restarts from the bundles this "
                "node verifies now",
                path,
                exc,
            )
            return 0, {}

    def highest(self) -> int:
        """The newest version this node accepted (0: none yet): the replay high-water mark."""
        return self._versions()[0]

    def version_of(self, raw: bytes) -> int | None:
        """The version of stored bundle bytes `raw`, as this node recorded it when it verified
        them; None if it never did. Never parses the bundle."""
        return self._versions()[1].get(hashlib.sha256(raw).hexdigest())

    def remember(self, bundle: Bundle) -> None:
        """Record verified `bundle`'s version (by its bytes' sha256), raising the high-water
        mark to it."""
        highest, known = self._versions()
        digest = hashlib.sha256(bundle.raw).hexdigest()
        version = bundle.manifest.version
        if known.get(digest) == version and highest >= version:
            return
        known.pop(digest, None)
        known[digest] = version
        keep = dict(list(known.items())[-KNOWN_BUNDLES:])
        self._ensure()
        body = {"highest": max(highest, version), "bundles": keep}
        atomic_write(self.dir / VERSIONS, json.dumps(body, indent=1).encode())

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
