"""The node's state dir of models: the last good bundle, the one before, what is blocked.

State dir layout::

    STATE_DIR/models/current.bundle    the last good bundle (what the next start runs)
    STATE_DIR/models/previous.bundle   the one before it (what `rollback` returns to; removed
                                       by a rollback: a second one has nothing to go to)
    STATE_DIR/models/blocked.json      {"versions": [...]}: versions rolled back from, which a
                                       retained bundle may not re-install (a newer one may)
    STATE_DIR/models/versions.json     {"highest": N, "bundles": {sha256: version}}: the
                                       high-water mark (no bundle from the network below it is
                                       accepted) and the versions of bundles this node verified
    STATE_DIR/models/rollbacks.json    {"v": 1, "rollbacks": [...]}: the last 8 rollbacks
                                       ({"from", "to", "reason", "ts", "auto"}), newest last;
                                       the status shows them as `detail.rollbacks`
    STATE_DIR/models/trust.json        the keys bundles must verify with, as the trainer's key
                                       records left them (protocol.keys.TrustSet; written only
                                       after a record verified; a damaged file stops the node:
                                       it never falls back to a key a record revoked)

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
import time
from pathlib import Path
from typing import Any

from nodekit.storage import atomic_write, fsync_dir
from protocol import Bundle, PayloadError
from protocol.keys import TrustSet
from protocol.status_detail import MAX_ROLLBACKS, Rollback, clip_text

from ..errors import EdgeError

log = logging.getLogger(__name__)

CURRENT = "current.bundle"
PREVIOUS = "previous.bundle"
BLOCKED = "blocked.json"
VERSIONS = "versions.json"
ROLLBACKS = "rollbacks.json"
TRUST = "trust.json"
ROLLBACKS_KEPT = MAX_ROLLBACKS  # rollbacks rollbacks.json (and the status) remember, newest last
REASON_MAX = 200  # characters of a rollback's reason
OPERATOR_ROLLBACK = "pi_edge rollback on the node"  # the reason of the CLI's rollback
KNOWN_BUNDLES = 8  # bundle hashes versions.json remembers (current and previous among them)


class RollbackRefusedError(EdgeError):
    """A rollback that would do harm, refused with nothing changed; `kind`: "stale" (current is
    not the version it names) or "blocked" (it would make a blocked version current)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


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

    @property
    def trust_path(self) -> Path:
        return self.dir / TRUST

    def load_trust(self, site: str) -> TrustSet | None:
        """The saved trust set, None if there is none; EdgeError for a damaged or foreign file
        (the node must not fall back to keys a record revoked)."""
        try:
            data = self.trust_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise EdgeError(f"cannot read {self.trust_path}: {exc}") from exc
        try:
            return TrustSet.from_json(data, site)
        except PayloadError as exc:
            raise EdgeError(
                f"{self.trust_path} is damaged or not this site's ({exc}); this node will not "
                "guess which keys to trust: restore it, or delete it to trust --public-key "
                "again (then the trainer's key log is applied anew)"
            ) from exc

    def save_trust(self, trust: TrustSet, site: str) -> None:
        """Write the trust set atomically (temp file, fsync, rename, directory fsync)."""
        self._ensure()
        atomic_write(self.trust_path, trust.to_json(site))

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

    def promote_previous(self) -> None:
        """current.bundle failed its check at start and previous.bundle passed: previous becomes
        current (the refused one is kept as current.bundle.refused for a look), so that the
        node's bookkeeping (what serves, what a rollback names) matches its disk again."""
        if not self.previous_path.is_file():
            return
        if self.current_path.is_file():
            self.current_path.replace(self.dir / f"{CURRENT}.refused")
        self.previous_path.replace(self.current_path)
        fsync_dir(self.dir)

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
        self,
        reason: str = OPERATOR_ROLLBACK,
        *,
        auto: bool = False,
        now: float | None = None,
        expect_from: int | None = None,
    ) -> tuple[int | None, int | None]:
        """Roll back once: previous.bundle becomes current, the version rolled away from is
        blocked, and previous.bundle is removed (nothing is left to roll back to until a new
        model comes, so a repeated rollback can never bring the blocked version back); the
        rollback (`reason`, whether the node decided it by itself) goes into rollbacks.json.

        `expect_from`: roll back only if current.bundle is that version (a node command names
        the version it rolls back from): RollbackRefusedError(kind="stale") otherwise. A previous
        bundle whose version is blocked, or the same as current's, is never made current
        (RollbackRefusedError(kind="blocked")).

        Returns (from_version, to_version), None where this node never recorded the version
        (a state dir from an older pi_edge; such a rollback is not recorded). EdgeError if
        there is no previous bundle.
        """
        cur = self.current_path.read_bytes() if self.current_path.is_file() else None
        from_v = self.version_of(cur) if cur is not None else None
        if expect_from is not None and from_v != expect_from:
            found = "an unrecorded version" if from_v is None else f"v{from_v}"
            raise RollbackRefusedError(
                f"current.bundle in {self.dir} is {found}, not v{expect_from}: the rollback "
                f"from v{expect_from} is stale (done already, "
                "or a newer model came since); nothing changed",
                kind="stale",
            )
        if not self.previous_path.is_file():
            raise EdgeError(
                f"no previous model in {self.dir} to roll back to; a node keeps one "
                "after it has run two model versions (and none right after a rollback)"
            )
        prev = self.previous_path.read_bytes()
        to_v = self.version_of(prev)
        blocked = set(self.blocked())
        if to_v is not None and (to_v in blocked or to_v == from_v or prev == cur):
            raise RollbackRefusedError(
                f"previous.bundle in {self.dir} is v{to_v}, "
                + ("which is blocked" if to_v in blocked else "the version serving now")
                + "; a rollback never makes a blocked version current; nothing changed",
                kind="blocked",
            )
        if from_v is not None:  # blocked first: a power cut later never serves it again
            self._write_blocked(sorted(blocked | {from_v}))
        atomic_write(self.current_path, prev)
        self.previous_path.unlink(missing_ok=True)
        fsync_dir(self.dir)
        if from_v is not None:
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
