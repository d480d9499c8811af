"""The daemon's side of the model registry: what it records, and what it does about a rollback.

`ModelHistory` wraps `registry.RegistryFile` for `serve`:

- `on_status` (intake thread): each edge node's status says which version it serves (the
  record's `deployed`) and, in `detail.rollbacks`, which versions it rolled back from: those
  are marked `bad` (with node and reason) and `changed` is set for the policy thread.
  Malformed entries are counted per node (`bad_entries()`, status error `bad_rollback_entry`)
  and ignored. A rollback is taken only of a version the trainer published and that node was
  seen serving in an *earlier* status (`Registry.rollback_refusal`); any other is refused,
  counted per node (`refused_rollbacks()`, status error `rollback_refused`) and logged once.
  The intake hands over only statuses whose topic names their node, with role `edge`.
- `adopt` (start) and `fallback` (policy thread, after a rollback): the champion is the newest
  verified bundle that is not bad; if a newer version already reached the nodes, the champion
  is re-issued under a new, higher version (`artifacts.reissue`), since a node refuses a bundle
  whose version is not above the newest it saw. The next fine-tune continues from it.
- `record_attempt`: each fine-tune, accepted (its record, gate scores, labels and model card)
  or refused by the gate.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from protocol import PayloadError, Status, decode_bundle

from ..build.artifacts import KERAS_NAME, reissue
from ..build.model_card import CARD_NAME, write_model_card
from ..errors import TrainerError
from ..versions.registry import (
    MAX_VERSION,
    REGISTRY_NAME,
    BadMark,
    ModelRecord,
    Registry,
    RegistryFile,
    parse_rollbacks,
    record_from_manifest,
)
from .champion import load_champion, next_version, public_key_of
from .retrain import Attempt, Champion

__all__ = ["ModelHistory"]

log = logging.getLogger(__name__)
MAX_LOGGED = 64  # nodes whose refused rollbacks are logged (once each); then only counted


class ModelHistory:
    """The registry file plus the rollback handling the daemon needs; thread-safe."""

    def __init__(self, store_dir: Path) -> None:
        self.file = RegistryFile(Path(store_dir) / REGISTRY_NAME)
        self.changed = threading.Event()  # set when a rollback marked a version bad
        self._lock = threading.Lock()
        self._bad_entries: dict[str, int] = {}  # node → malformed rollback entries, last status
        self._refused: dict[str, int] = {}  # node → rollbacks refused in its last status
        self._logged: set[str] = set()

    # -- reading ------------------------------------------------------------------------
    def view(self) -> Registry:
        return self.file.view()

    def bad_versions(self) -> frozenset[int]:
        return self.file.view().bad_versions()

    def bad_nodes(self) -> dict[int, tuple[str, ...]]:
        """Each bad version → the nodes that rolled back from it."""
        return self.file.view().bad_nodes()

    def bad_entries(self) -> int:
        """Malformed `detail.rollbacks` entries in the nodes' latest statuses."""
        with self._lock:
            return sum(self._bad_entries.values())

    def refused_rollbacks(self) -> int:
        """Rollbacks refused (`Registry.rollback_refusal`) in the nodes' latest statuses."""
        with self._lock:
            return sum(self._refused.values())

    def next_version(self, models_dir: Path, champion: Champion) -> int:
        """Above everything on disk, in the registry and the champion: versions only go up,
        never beyond what a manifest accepts (TrainerError then: nothing can be published)."""
        reg = self.file.view()
        version = max(next_version(models_dir), reg.highest() + 1, champion.version + 1)
        if version > MAX_VERSION:
            raise TrainerError(
                f"the next model version would be {version}, above the manifest's "
                f"{MAX_VERSION}; move the highest v*/ bundles in {models_dir} aside"
            )
        return version

    # -- intake thread ------------------------------------------------------------------
    def on_status(self, status: Status) -> None:
        """Note which version an edge node serves and the versions it rolled back from."""
        if status.role != "edge":
            return
        refused: list[PayloadError] = []
        rollbacks, bad = parse_rollbacks(status.detail, refused.append)
        bad = bad or len(refused)  # a detail of an unknown version: its rollbacks unread
        with self._lock:
            before = self._bad_entries.get(status.node, 0)
            if bad:
                self._bad_entries[status.node] = bad
            else:
                self._bad_entries.pop(status.node, None)
        if bad and bad != before:
            log.warning(
                "node %s reports %d malformed detail.rollbacks entr%s (protocol/README.md, "
                "Status); ignored",
                status.node,
                bad,
                "y" if bad == 1 else "ies",
            )
        serving = None if status.state == "offline" else status.model_version
        news: list[int] = []
        refusals: list[tuple[int, str]] = []

        def change(reg: Registry) -> Registry:
            news.clear()
            refusals.clear()
            before = reg  # a rollback needs the node seen serving the version *earlier*
            for rb in rollbacks:
                why = before.rollback_refusal(rb, status.node)
                if why is not None:
                    refusals.append((rb.from_version, why))
                    continue
                reg, new = reg.mark_bad(rb, status.node)
                if new:
                    news.append(rb.from_version)
            return reg

        if rollbacks:
            self.file.update(change)
        reg = self.file.serving(status.node, serving)  # then what it serves now: one line
        self._note_refused(status.node, refusals)
        for v in news:
            rec = reg.get(v)
            mark = rec.bad[-1] if rec is not None and rec.bad else None
            log.warning(
                "node %s rolled back from v%d (%s: %s); v%d is marked bad and never offered again",
                status.node,
                v,
                "automatically" if mark is not None and mark.auto else "operator",
                mark.reason if mark is not None else "",
                v,
            )
            self._refresh_card(rec)
        if news:
            self.changed.set()

    def _note_refused(self, node: str, refused: list[tuple[int, str]]) -> None:
        with self._lock:
            self._refused.pop(node, None)
            if refused:
                self._refused[node] = len(refused)
                while len(self._refused) > 4096:  # a flood of node ids: forget the stalest
                    del self._refused[next(iter(self._refused))]
            tell = bool(refused) and node not in self._logged and len(self._logged) < MAX_LOGGED
            if tell:
                self._logged.add(node)
        if tell:  # once per node (and for MAX_LOGGED nodes at most): a flood is only counted
            log.warning(
                "refused %d rollback(s) in node %s's status (%s): a rollback counts only for a "
                "version the trainer published and that node served in an earlier status; the "
                "versions stay as they are (status error rollback_refused counts them)",
                len(refused),
                node,
                ", ".join(f"v{v}: {why}" for v, why in refused[:8]),
            )

    # -- policy thread ------------------------------------------------------------------
    def adopt(
        self, champion: Champion | None, models_dir: Path, private_key: Path, site: str
    ) -> Champion | None:
        """At start: add the bundles on disk to the registry, and return the champion to
        offer (re-issued under a new version if a newer one already reached the nodes)."""
        self._sync(models_dir, champion)
        if champion is None:
            return None
        return self._publishable(champion, models_dir, private_key, site)

    def fallback(
        self, champion: Champion, models_dir: Path, private_key: Path, site: str
    ) -> Champion | None:
        """The champion to offer now that `champion` is bad: the newest good version on disk
        (re-issued under a new number if needed), or None if there is none."""
        key = public_key_of(private_key)
        loaded = load_champion(models_dir, key, site, exclude=self.bad_versions())
        good = loaded.champion
        if good is None:
            log.error(
                "v%d was rolled back and no other verified version is on disk in %s: nothing "
                "is offered until a new model is trained",
                champion.version,
                models_dir,
            )
            return None
        log.warning("v%d was rolled back; going back to v%d", champion.version, good.version)
        return self._publishable(good, models_dir, private_key, site)

    def published(self, champion: Champion) -> None:
        """`champion` was published retained: it is the champion, and reached the nodes. A
        version the registry does not know yet (e.g. a renewed detector reference) is added
        from its manifest."""
        path = champion.path.parent if champion.path is not None else None
        added: list[ModelRecord] = []

        def change(reg: Registry) -> Registry:
            added.clear()
            if reg.get(champion.version) is None:
                rec = record_from_manifest(
                    champion.manifest.to_dict(), None, str(path or ""), "candidate"
                )
                rec = dataclasses.replace(rec, path=str(path) if path else None)
                reg = reg.upsert(rec)
                added.append(rec)
            return reg.set_champion(champion.version, published=time.time())

        reg = self.file.update(change)
        if added and path is not None and not (path / CARD_NAME).exists():
            self._refresh_card(reg.get(champion.version))

    def record_attempt(
        self,
        version: int,
        champion: Champion,
        attempt: Attempt,
        labels: np.ndarray,
        *,
        source: str,
        data: dict[str, Any],
        senders: dict[str, dict[str, int]] | None = None,
    ) -> None:
        """Record one fine-tune: the accepted challenger as a version, else a refused attempt.
        `senders`: who gave the labels of the store range it drew on (node → source → count)."""
        d = attempt.decision
        gate = {
            "accepted": d.accepted,
            "reason": d.reason,
            "labels_used": attempt.labels_used,
            "holdout": attempt.holdout,
            "seconds": round(attempt.seconds, 2),
            "champion_drift": d.champion.drift,
            "challenger_drift": d.challenger.drift,
            "champion_original": d.champion.original,
            "challenger_original": d.challenger.original,
            "champion_anchor": d.champion.anchor,  # the original holdout in the recent regime
            "challenger_anchor": d.challenger.anchor,
        }
        y = np.asarray(labels)
        names = champion.manifest.classes  # the labels index the champion's classes
        per_class = {name: int((y == i).sum()) for i, name in enumerate(names)}
        label_info: dict[str, Any] = {"total": len(y), "per_class": per_class, "source": source}
        if senders is not None:
            label_info["senders"] = senders
        ch = attempt.challenger
        if ch is None:
            rec = ModelRecord(
                version,
                "refused",
                parent=champion.version,
                created=time.time(),
                site=str(champion.manifest.site or ""),
                arch=str(champion.manifest.arch or ""),
                quantization="int8",
                data=data,
                labels=label_info,
                gate=gate,
            )
            self.file.update(lambda r: r.add_refused(rec))
            return
        path = str(ch.path.parent) if ch.path is not None else None
        rec = record_from_manifest(ch.manifest.to_dict(), None, path or "", "candidate")
        rec = dataclasses.replace(
            rec,
            path=path,
            data={**rec.data, **data},
            labels={**rec.labels, **label_info},
            gate=gate,
        )
        reg = self.file.update(lambda r: r.upsert(rec))
        self._refresh_card(reg.get(ch.version))

    def discard(self, challenger: Champion, why: str) -> None:
        """Mark a challenger bad without ever publishing it (its parent was rolled back)."""
        mark = BadMark("trainer", why[:200], time.time(), True, None)

        def change(reg: Registry) -> Registry:
            rec = reg.get(challenger.version) or ModelRecord(challenger.version, "candidate")
            return reg.upsert(dataclasses.replace(rec, status="bad", bad=(*rec.bad, mark)))

        reg = self.file.update(change)
        self._refresh_card(reg.get(challenger.version))
        log.warning("v%d is not published: %s", challenger.version, why)

    # -- helpers --------------------------------------------------------------------------
    def _publishable(
        self, champion: Champion, models_dir: Path, private_key: Path, site: str
    ) -> Champion:
        offered = self.file.view().highest_offered()
        if champion.version >= offered:
            return champion
        version = self.next_version(models_dir, champion)
        key = public_key_of(private_key)
        old = decode_bundle(champion.bundle, key)
        keras_path = champion.path.parent / KERAS_NAME if champion.path is not None else None
        path = reissue(
            old,
            models_dir / f"v{version:04d}",
            version=version,
            private_key=private_key,
            site=site,
            keras_path=keras_path,
        )
        data = path.read_bytes()
        new = decode_bundle(data, key)
        log.warning(
            "v%d already reached the nodes, so v%d goes out again as v%d (a node refuses a "
            "version not above the newest it saw)",
            offered,
            champion.version,
            version,
        )
        base = self.file.view().get(champion.version)
        rec = record_from_manifest(new.manifest.to_dict(), None, str(path.parent), "candidate")
        if base is not None:
            rec = dataclasses.replace(rec, data=base.data, labels=base.labels, gate=base.gate)
        reg = self.file.update(lambda r: r.upsert(rec))
        self._refresh_card(reg.get(version))
        return Champion(version, data, new.model, new.manifest, champion.keras, path)

    def _sync(self, models_dir: Path, champion: Champion | None) -> None:
        """Add every `v*/manifest.json` the registry does not know; write missing cards."""
        import json

        found: list[ModelRecord] = []
        for manifest_path in sorted(Path(models_dir).glob("v*/manifest.json")):
            d = manifest_path.parent
            try:
                manifest = json.loads(manifest_path.read_text())
                report_path = d / "report.json"
                report = json.loads(report_path.read_text()) if report_path.exists() else None
                v = int(manifest["version"])
                newer = champion is not None and v > champion.version
                found.append(
                    record_from_manifest(
                        manifest, report, str(d), "candidate" if newer else "retired"
                    )
                )
            except (OSError, ValueError, TypeError, KeyError) as exc:
                log.warning("model registry: cannot read %s: %s", manifest_path, exc)

        def change(reg: Registry) -> Registry:
            for rec in found:
                if reg.get(rec.version) is None:
                    reg = reg.upsert(rec)
            if champion is not None:
                reg = reg.set_champion(champion.version)
            return reg

        reg = self.file.update(change)
        for rec in found:
            if rec.path and not (Path(rec.path) / CARD_NAME).exists():
                self._refresh_card(reg.get(rec.version))

    def _refresh_card(self, rec: ModelRecord | None) -> None:
        if rec is not None and rec.path:
            write_model_card(Path(rec.path), rec.to_dict())
