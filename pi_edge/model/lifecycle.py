"""The model's life on one node: vet, store, hand over to the worker, notice a rollback on disk.

Its own thread ("edge-models") vets bundles (signature, compatibility, golden vectors) that the
paho thread queued (latest per topic wins: a rollout group's node hears its group's topic and
model/current and ends on the highest version offered), saves the good ones as last good, and
puts them in a hand-over slot; the worker swaps them in between two batches (`take_pending` +
`install`), so a swap never falls inside a batch. The same thread notices `pi_edge rollback`
rewriting current.bundle, and does that rollback itself when an operator asks over MQTT
(`request_rollback`, an addressed node command: done only while the node serves the version it
names, once per command id; a repeat, a duplicate or a stale one does nothing and says so).
A version rolled back from is never served again: not from the network, not from the state dir
or --model at start (`load_startup`).

After a swap to a newer model the worker feeds each batch's figures to `observe`;
model/health_watch.py judges them against the previous model's figures from just before the swap,
and when the new model is clearly worse within `watch_s` the model thread rolls back by itself, the
same way as the node command (previous becomes current, the bad version blocked), recording why
(rollbacks.json, status `detail.rollbacks` and `detail.model_health`).

Trust: the node verifies bundles with its trust set (protocol/keys.py): the configured
`--public-key` key(s), changed by the trainer's key-rotation records, which arrive as the retained
key log (`submit_keys`, `{prefix}/keys/log`) and are applied here; the set is kept in the state
dir (trust.json), and after a change the latest bundle of each topic is vetted again, so a bundle
signed by the new key that came before its record is served, and a same-version bundle re-signed
by the new key replaces one signed by a revoked key. A bundle signed only by a revoked key is
refused (`bundle_revoked`), from the network or from disk.

A bundle from the network is verified over its raw bytes before any field is read; then it must
be made for this node's site and not be older than the high-water mark (`check_site`,
`check_not_replayed`); a version an operator rolled back from is ignored. The state dir
(current.bundle, including one `pi_edge rollback` wrote) and `--model` are the operator's own
and trusted below the mark: their signature is still checked, their site and version are not.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from nodekit.guard import Faults
from nodekit.lifecycle import Worker
from protocol import Bundle, BundleError, Manifest, PayloadError
from protocol.keys import TrustSet
from protocol.status_detail import Rollback, Rollbacks

from ..errors import EdgeError, ModelError
from ..intake.inbox import BatchPolicy
from ..report.telemetry import ModelInfo
from .health_watch import Figures, HealthPolicy, HealthState, ModelHealth, Verdict
from .state_dir import ModelStore, RollbackRefusedError
from .vetting import (
    Expected,
    VettedModel,
    build_model,
    check_not_replayed,
    check_site,
    verify_bundle,
)

__all__ = ["ModelManager"]

log = logging.getLogger(__name__)

OPERATOR_COMMAND = "node command from the operator"  # a rollback request's default reason
COMMAND_IDS_KEPT = 256  # command ids remembered: a repeat or QoS 1 duplicate of one does nothing
MAX_QUEUED_ROLLBACKS = 16  # rollback requests waiting for the model thread; more are refused
COMMAND_RESULTS_KEPT = 8  # the last results the status shows (detail.commands.last)
# what a node command came to: done, or why it did nothing (status errors: command_<result>,
# but "failed", counted as rollback_failed as before)
RESULTS = ("done", "duplicate", "stale", "blocked", "failed", "unaddressed", "queue_full")


@dataclass(frozen=True, slots=True)
class _RollbackRequest:
    """An operator's addressed rollback: from `from_version`, command `id`."""

    from_version: int
    id: str
    reason: str


class ModelManager(Worker):
    """Serving model, pending hand-over and refusals of one node; thread-safe."""

    def __init__(
        self,
        state_dir: Path,
        *,
        public_key: bytes | tuple[bytes, ...] | None,
        allow_unsigned: bool,
        site: str,
        expected: Expected,
        threads: int,
        policy: BatchPolicy,
        on_pending: Callable[[], None],
        on_refused: Callable[[str], object],
        on_install: Callable[[Manifest], None],
        disk_poll_s: float = 2.0,
        faults: Faults | None = None,
        watch_s: float = 0.0,
        health_policy: HealthPolicy | None = None,
        name: str = "edge-models",
    ) -> None:
        super().__init__(name)
        self.store = ModelStore(state_dir)
        self._faults = faults or Faults(log)
        configured = (public_key,) if isinstance(public_key, bytes) else (public_key or ())
        self._trust = self._initial_trust(configured, site)  # None: --insecure-dev
        self._key_log: bytes | None = None  # the latest key log from MQTT, not yet applied
        self._seen: dict[str, bytes] = {}  # the latest bundle per source: vetted again on a
        # change of trust (a few topics: bounded like _bundles)
        self._allow_unsigned = allow_unsigned
        self._site = site  # the topic prefix a bundle from the network must be made for
        self._expected = expected
        self._threads = threads
        self._policy = policy
        self._on_pending = on_pending  # wake the worker
        self._on_refused = on_refused  # count the refusal (kind)
        self._on_install = on_install  # the drift detector starts over
        self._disk_poll_s = disk_poll_s
        self._lock = threading.Lock()
        self._model: VettedModel | None = None  # written by the worker (install) only
        self._installed_at = 0.0
        self._source = ""
        self._pending: tuple[VettedModel, str] | None = None
        self._target_version: int | None = None  # the version serving or about to
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        # the latest bundle per source (model/current, a rollout group's topic): bounded by the
        # node's few topics; a group's offer never pushes out model/current's or vice versa
        self._bundles: dict[str, bytes] = {}
        self._offered: dict[str, int] = {}  # source → newest installable version it offered
        self._cond = threading.Condition()
        self._disk_stamp: int | None = None
        # operator rollbacks requested over MQTT (node commands), done by the model thread in
        # order; the ids seen (bounded) make a repeat or a QoS 1 duplicate do nothing
        self._rollbacks: deque[_RollbackRequest] = deque()
        self._command_ids: OrderedDict[str, None] = OrderedDict()
        self._command_counts = dict.fromkeys(RESULTS, 0)  # under _lock
        self._command_last: deque[dict[str, Any]] = deque(maxlen=COMMAND_RESULTS_KEPT)
        self._auto: tuple[int, Verdict] | None = None  # (clearly worse version, why): roll back
        self._health = ModelHealth(watch_s, health_policy)  # under _health_lock
        self._health_lock = threading.Lock()
        self._rollback_list: list[Rollback] = []  # rollbacks.json, under _lock
        self._rollback_counts = {"auto": 0, "operator": 0}  # seen since start, under _lock
        self._refresh_rollbacks(initial=True)
        self._swapped = threading.Condition()

    # -- lifecycle (start, stop, watch: nodekit.lifecycle.Worker) ---------------------------
    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def load_startup(self, model_file: Path | None) -> None:
        """Last good from the state dir, else `model_file` (--model), else wait for MQTT.

        A version an operator or the node rolled back from (blocked.json) is never served, from
        current.bundle, previous.bundle or --model (counted `bundle_blocked`). When
        current.bundle is refused and previous.bundle serves, previous becomes current on disk.
        """
        for i, (name, data) in enumerate(self.store.candidates()):
            try:
                vetted = self._vet(data)
                self._check_unblocked(vetted.version, f"state dir {name}")
            except ModelError as exc:
                self._refused(exc, f"state dir {name}")
                continue
            self._remember(vetted)
            if i > 0:  # current.bundle was refused: the disk says what serves again
                try:
                    self.store.promote_previous()
                except OSError as exc:
                    log.error("cannot make %s current in %s: %s", name, self.store.dir, exc)
            self.install(vetted, f"state dir ({name})")
            self._disk_stamp = self.store.current_stamp()
            return
        if model_file is not None:
            try:
                data = model_file.read_bytes()
            except OSError as exc:
                raise EdgeError(f"cannot read --model {model_file}: {exc}") from exc
            try:
                vetted = self._vet(data)
                self._check_unblocked(vetted.version, f"--model {model_file}")
            except ModelError as exc:
                self._refused(exc, f"--model {model_file}")
            else:
                self._persist(vetted)
                self.install(vetted, f"--model {model_file}")
                return
        log.info("no usable model on disk; waiting for the retained bundle")

    def _check_unblocked(self, version: int, source: str) -> None:
        """ModelError(kind="blocked") if `version` was rolled back from on this node."""
        if version in self.store.blocked():
            raise ModelError(
                f"bundle v{version} from {source} was rolled back from on this node "
                "(blocked.json); it is not served again (a newer version is)",
                kind="blocked",
            )

    # -- any thread -------------------------------------------------------------------------
    @property
    def model(self) -> VettedModel | None:
        return self._model

    @property
    def version(self) -> int | None:
        model = self._model
        return None if model is None else model.version

    def submit(self, data: bytes, source: str = "mqtt") -> None:
        """Queue a bundle for vetting (latest wins); never blocks (the paho thread calls it)."""
        with self._cond:
            self._bundles.pop(source, None)  # re-inserted last: handled in arrival order
            self._bundles[source] = bytes(data)
            self._seen[source] = self._bundles[source]
            self._cond.notify()

    def submit_keys(self, data: bytes) -> None:
        """Queue the trainer's key log (protocol.keys) for the model thread (latest wins)."""
        with self._cond:
            self._key_log = bytes(data)
            self._cond.notify()

    @property
    def trust(self) -> TrustSet | None:
        """The keys this node trusts now (None: --insecure-dev, nothing is verified)."""
        return self._trust

    def request_rollback(self, from_version: int, command_id: str, reason: str = "") -> str:
        """Queue an operator's rollback from `from_version` (a node command with id
        `command_id`) for the model thread; never blocks (the paho thread calls it).

        Returns "queued", or why nothing will happen: "duplicate" (this id was seen: a repeat or
        a QoS 1 duplicate) or "queue_full". The model thread does it only if the node still
        serves `from_version` ("stale" otherwise), never onto a blocked version. `reason` goes
        into the rollback's record (default: a node command).
        """
        with self._cond:
            if command_id in self._command_ids:
                self._command_ids.move_to_end(command_id)
                result = "duplicate"
            elif len(self._rollbacks) >= MAX_QUEUED_ROLLBACKS:
                result = "queue_full"
            else:
                self._command_ids[command_id] = None
                while len(self._command_ids) > COMMAND_IDS_KEPT:
                    self._command_ids.popitem(last=False)
                request = _RollbackRequest(from_version, command_id, reason or OPERATOR_COMMAND)
                self._rollbacks.append(request)
                self._cond.notify()
                return "queued"
        self.command_result("rollback", command_id, from_version, result)
        return result

    def command_result(
        self, cmd: str, command_id: str | None, from_version: int | None, result: str, why: str = ""
    ) -> None:
        """What a node command came to: counted (status `errors` for all but done), logged, and
        the last few shown in the status (`detail.commands`)."""
        serving = self.version
        text = why or {
            "done": "done",
            "duplicate": "this command id was seen already (a repeat or a QoS 1 duplicate)",
            "queue_full": f"{MAX_QUEUED_ROLLBACKS} rollback commands wait already",
            "unaddressed": "a rollback must name the version it rolls back from (a version 2 "
            "node command with from and id); upgrade the console",
        }.get(result, result)
        with self._lock:
            self._command_counts[result] += 1
            self._command_last.append(
                {
                    "cmd": cmd,
                    "id": command_id,
                    "from": from_version,
                    "result": result,
                    "why": text[:200],
                    "serving": serving,
                    "ts": round(time.time(), 3),
                }
            )
        if result != "done":
            self._on_refused("rollback_failed" if result == "failed" else f"command_{result}")
        log.log(
            logging.INFO if result == "done" else logging.WARNING,
            "node command %s%s%s: %s%s; serving %s",
            cmd,
            f" {command_id}" if command_id else "",
            "" if from_version is None else f" from v{from_version}",
            result,
            "" if result == "done" or not text else f" ({text}), nothing done",
            "nothing" if serving is None else f"v{serving}",
        )

    def command_detail(self) -> dict[str, Any]:
        """The status's `detail.commands`: counts per result and the last few results."""
        with self._lock:
            return {**self._command_counts, "last": list(self._command_last)}

    def observe(
        self,
        version: int,
        probabilities: npt.NDArray[np.float32],
        predicted: npt.NDArray[np.int64],
        ood: npt.NDArray[np.bool_],
        labels: list[int | None],
    ) -> None:
        """A batch classified by model `version` (the worker calls this): its figures go to
        the health watch; a clearly worse new model is rolled back by the model thread."""
        batch = Figures.of_batch(probabilities, predicted, ood, labels)
        with self._health_lock:
            verdict = self._health.observe(version, batch, time.monotonic())
        if verdict is not None:
            self._settled(version, verdict)

    def health_detail(self) -> dict[str, Any]:
        """The status's `detail.rollbacks` (newest last, at most 8) and `detail.model_health`,
        as JSON (protocol.status_detail)."""
        with self._health_lock:
            health = self._health.detail(time.monotonic(), time.time())
        with self._lock:
            rollbacks = Rollbacks(tuple(self._rollback_list))
            health = dataclasses.replace(
                health,
                auto_rollbacks=self._rollback_counts["auto"],
                operator_rollbacks=self._rollback_counts["operator"],
            )
        return {Rollbacks.KEY: rollbacks.to_json_obj(), health.KEY: health.to_json_obj()}

    def wait_for(self, version: int | None = None, timeout: float = 10.0) -> bool:
        """Block until a model (of `version`, if given) is serving; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._swapped:
            while True:
                v = self.version
                if v is not None and (version is None or v == version):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._swapped.wait(left)

    def info(self) -> ModelInfo:
        model = self._model
        with self._lock:
            error, error_at, source = self._last_error, self._last_error_at, self._source
        if model is None:
            return ModelInfo(last_error=error, last_error_at=error_at)
        return ModelInfo(
            version=model.version,
            runtime=model.classifier.runtime,
            reallocations=model.classifier.reallocations,
            source=source or None,
            age_s=time.monotonic() - self._installed_at,
            created=model.bundle.manifest.created,
            last_error=error,
            last_error_at=error_at,
        )

    # -- worker side ------------------------------------------------------------------------
    def take_pending(self) -> tuple[VettedModel, str] | None:
        """The vetted model waiting to be swapped in, if any (the worker calls this)."""
        with self._lock:
            pending, self._pending = self._pending, None
        return pending

    def install(self, vetted: VettedModel, source: str) -> None:
        """Make `vetted` the serving model: by the worker between batches, or at start."""
        old = self._model
        self._on_install(vetted.bundle.manifest)
        with self._health_lock:  # a newer version (not a rollback) is watched
            self._health.installed(
                None if old is None else old.version,
                vetted.version,
                time.monotonic(),
                watch=source != "rollback",
            )
        self._model = vetted
        with self._lock:
            self._installed_at = time.monotonic()
            self._source = source
        with self._swapped:
            self._swapped.notify_all()
        log.info(
            "serving model v%d from %s%s (runtime %s)",
            vetted.version,
            source,
            "" if old is None else f", replacing v{old.version}",
            vetted.classifier.runtime,
        )

    # -- model thread -----------------------------------------------------------------------
    def _run(self) -> None:
        next_disk_check = time.monotonic() + self._disk_poll_s
        guard = self._faults.loop(self.thread_name, self._stop)  # a bad bundle must not end it
        while not self._stop.is_set():
            with guard:
                with self._cond:
                    idle = self._key_log is None and not self._bundles
                    if idle and not self._rollbacks and self._auto is None:
                        self._cond.wait(max(0.0, next_disk_check - time.monotonic()))
                    if self._stop.is_set():
                        return
                    keys, self._key_log = self._key_log, None
                    item = None
                    if self._bundles and keys is None:  # a key log first: it may let it in
                        source = next(iter(self._bundles))
                        item = (self._bundles.pop(source), source)
                    rollbacks = list(self._rollbacks)
                    self._rollbacks.clear()
                    auto, self._auto = self._auto, None
                if keys is not None:
                    self._apply_keys(keys)
                for request in rollbacks:  # in order: the second of two from v3 is stale
                    self._operator_rollback(request)
                if auto is not None:
                    self._auto_rollback(*auto)
                if item is not None:
                    self._handle(*item)
                if time.monotonic() >= next_disk_check:
                    next_disk_check = time.monotonic() + self._disk_poll_s
                    self._check_disk()
                    self._tick()

    def _tick(self) -> None:
        """End a watch whose time is up even when no window comes."""
        version = self.version
        with self._health_lock:
            verdict = self._health.tick(time.monotonic())
        if verdict is not None and version is not None:
            self._settled(version, verdict)

    def _settled(self, version: int, verdict: Verdict) -> None:
        """A watch of `version` ended (worker or model thread): log it; if the model is
        clearly worse, have the model thread roll it back."""
        if verdict.state is not HealthState.WORSE:
            log.info("model v%d: health watch %s: %s", version, verdict.state.value, verdict.reason)
            return
        log.warning("model v%d is clearly worse than the one before: %s", version, verdict.reason)
        with self._cond:
            self._auto = (version, verdict)
            self._cond.notify()

    def _auto_rollback(self, version: int, verdict: Verdict) -> None:
        """Roll back from `version`, found clearly worse, unless it no longer serves."""
        current = self.store.current_path
        try:
            on_disk = self.store.version_of(current.read_bytes()) if current.is_file() else None
        except OSError:
            on_disk = None
        target = self._target_version
        if self.version != version or target not in (None, version) or on_disk != version:
            log.info(
                "model v%d was found clearly worse but is no longer the current model (serving "
                "%s, current.bundle v%s); no automatic rollback",
                version,
                "nothing" if self.version is None else f"v{self.version}",
                "?" if on_disk is None else on_disk,
            )
            return
        self._rollback(verdict.reason, auto=True, expect_from=version)

    def _operator_rollback(self, request: _RollbackRequest) -> None:
        """An operator's rollback from `request.from_version`: done only if the node serves
        that version (and current.bundle is it); else stale, and nothing changes."""
        serving = self._target_version if self._target_version is not None else self.version
        if serving != request.from_version:
            self.command_result(
                "rollback",
                request.id,
                request.from_version,
                "stale",
                f"this node serves {'nothing' if serving is None else f'v{serving}'}, not "
                f"v{request.from_version} (rolled back already, or a newer model came)",
            )
            return
        reason = f"{request.reason} ({request.id})"
        result, why = self._rollback(reason, auto=False, expect_from=request.from_version)
        self.command_result("rollback", request.id, request.from_version, result, why)

    def _rollback(self, reason: str, *, auto: bool, expect_from: int) -> tuple[str, str]:
        """Roll back once from `expect_from` (as `pi_edge rollback`, but never onto a blocked
        version), record why, then load current.bundle. Returns (result, why): "done",
        "stale", "blocked" or "failed" (RESULTS)."""
        who = "automatic rollback" if auto else "rollback requested by an operator"
        try:
            from_v, to_v = self.store.rollback(reason, auto=auto, expect_from=expect_from)
        except RollbackRefusedError as exc:
            if auto:
                self._on_refused(f"rollback_{exc.kind}")
            log.warning("%s refused: %s", who, exc)
            return exc.kind, str(exc)
        except (OSError, EdgeError) as exc:
            if auto:  # an operator's is counted with its command's result
                self._on_refused("rollback_failed")
            log.error(
                "%s failed: %s; still serving %s",
                who,
                exc,
                "nothing" if self.version is None else f"v{self.version}",
            )
            return "failed", str(exc)
        log.log(
            logging.WARNING if auto else logging.INFO,
            "%s: current.bundle is now v%s (was v%s); v%s is blocked from the retained topic "
            "(why: %s)",
            who,
            "?" if to_v is None else to_v,
            "?" if from_v is None else from_v,
            "?" if from_v is None else from_v,
            reason,
        )
        self._refresh_rollbacks()
        self._check_disk()
        return "done", ""

    def _refresh_rollbacks(self, initial: bool = False) -> None:
        """Re-read rollbacks.json; count the rollbacks new to this process by kind."""
        try:
            records = self.store.rollback_entries()
        except OSError as exc:
            log.warning("cannot read the rollback list in %s: %s", self.store.dir, exc)
            return
        with self._lock:
            if not initial:
                known = {(r.from_version, r.ts) for r in self._rollback_list}
                for r in records:
                    if (r.from_version, r.ts) not in known:
                        self._rollback_counts["auto" if r.auto else "operator"] += 1
            self._rollback_list = records

    def _check_disk(self) -> None:
        """current.bundle rewritten by someone else (`pi_edge rollback`): load it."""
        stamp = self.store.current_stamp()
        if stamp is None or stamp == self._disk_stamp:
            return
        self._disk_stamp = stamp
        self._refresh_rollbacks()  # `pi_edge rollback` recorded one
        try:
            data = self.store.current_path.read_bytes()
        except OSError:
            return
        if data:
            log.info("current.bundle changed on disk (rollback?); loading it")
            self._handle(data, "rollback")

    def _handle(self, data: bytes, source: str) -> None:
        serving = self._model
        if serving is not None and data == serving.bundle.raw:
            log.debug("bundle from %s is the serving one; ignored", source)
            return
        from_disk = source == "rollback"  # written by `pi_edge rollback`: the operator's choice
        try:
            bundle = self._verify(data)
            version = bundle.manifest.version
            if not from_disk:
                check_site(bundle.manifest, self._site)
            current = self._target_version if self._target_version is not None else self.version
            if version == current and not self._serving_revoked(version):
                log.debug("bundle v%d from %s is already serving; ignored", version, source)
                if not from_disk:
                    self._offered[source] = version
                return
            if version in self.store.blocked():
                if from_disk:  # someone wrote a blocked version to current.bundle: refused
                    self._check_unblocked(version, "current.bundle")
                log.info(
                    "bundle v%d from %s ignored: this node rolled back from it (a newer "
                    "version will be accepted)",
                    version,
                    source,
                )
                return
            if not from_disk:
                try:
                    check_not_replayed(bundle.manifest, self.store.highest())
                except ModelError:
                    if self._superseded(version, source):
                        return
                    raise
            vetted = build_model(
                bundle, expected=self._expected, threads=self._threads, policy=self._policy
            )
        except ModelError as exc:
            self._refused(exc, source)
            return
        if not from_disk:
            self._offered[source] = vetted.version
            self._persist(vetted)
        else:
            self._remember(vetted)
            self._disk_stamp = self.store.current_stamp()
        self._target_version = vetted.version
        with self._lock:
            self._pending = (vetted, source)
        self._on_pending()

    def _superseded(self, version: int, source: str) -> bool:
        """A rollout group's node hears two offers (its group's topic and model/current): an
        older bundle on one while the other offers a newer one is expected, not a replay, so
        it is ignored without counting a refusal (it is never installed either way)."""
        higher = max((v for s, v in self._offered.items() if s != source), default=None)
        if higher is None or version >= higher:
            return False
        log.debug("bundle v%d from %s ignored: v%d is offered elsewhere", version, source, higher)
        return True

    def _verify(self, data: bytes) -> Bundle:
        """Verify `data` with the trust set (ModelError): any trusted key's signature; one only a
        revoked key's fits is refused as `revoked`."""
        if self._trust is None:
            return verify_bundle(data, public_key=None, allow_unsigned=self._allow_unsigned)
        try:
            return self._trust.decode_bundle(data)
        except BundleError as exc:
            raise ModelError(str(exc), kind=exc.kind) from exc

    # -- trust: the keys bundles verify with, and the trainer's key log --------------------------
    def _initial_trust(self, configured: tuple[bytes, ...], site: str) -> TrustSet | None:
        """The state dir's trust set (trust.json: what key records made of it) with the
        configured keys added, except those a record revoked; None without keys."""
        if not configured:  # --insecure-dev: nothing is verified, trust.json is not read
            return None
        saved = self.store.load_trust(site)  # EdgeError for a damaged file: fail closed
        if saved is None:
            return TrustSet.of(configured)
        try:
            trust, skipped = saved.with_keys(configured)
        except BundleError as exc:
            raise EdgeError(f"{self.store.trust_path} and --public-key: {exc}") from exc
        for kid in skipped:
            log.warning(
                "configured public key %s was revoked by the trainer's key record (seq ≤ %d, "
                "%s): not trusted; take it out of --public-key",
                kid,
                trust.seq,
                self.store.trust_path,
            )
        log.info("trusting keys %s (key record seq %d)", ", ".join(trust.ids), trust.seq)
        return trust

    def _apply_keys(self, data: bytes) -> None:
        """Apply the trainer's key log: new records change the trust set, which is saved before
        it is used; a refused log is counted (`key_<kind>`) and changes nothing."""
        trust = self._trust
        if trust is None:
            log.debug("key log ignored: --insecure-dev verifies nothing")
            return
        try:
            new, applied = trust.apply_log(data, self._site)
        except PayloadError as exc:
            with self._lock:
                self._last_error = f"key log: {exc.kind}: {exc}"
                self._last_error_at = time.time()
            self._on_refused(f"key_{exc.kind}")
            log.error("refused key log (%s): %s; still trusting %s", exc.kind, exc, trust.ids)
            return
        if not applied:
            log.debug("key log: nothing newer than seq %d", trust.seq)
            return
        try:
            self.store.save_trust(new, self._site)
        except (OSError, EdgeError) as exc:  # applied all the same: the log is retained
            self._on_refused("key_unsaved")
            log.error("cannot save the trust set in %s: %s", self.store.trust_path, exc)
        self._trust = new
        for record in applied:
            log.warning(
                "key record seq %d from key %s: now trusting key %s%s",
                record.seq,
                record.signer,
                record.key_id,
                f", revoked {', '.join(record.revoke)}" if record.revoke else "",
            )
        serving = self._model
        if serving is not None and self._serving_revoked(serving.version):
            log.warning(
                "the serving model v%d is signed by a key this node no longer trusts; it serves "
                "until the trainer's bundle signed by a trusted key replaces it, and will not be "
                "loaded again from disk",
                serving.version,
            )
        with self._cond:  # bundles refused before the record (or re-signed): vet them again
            for source, bundle in self._seen.items():
                self._bundles.setdefault(source, bundle)

    def _serving_revoked(self, version: int) -> bool:
        """Whether the serving model is `version` and no trusted key signed it (a re-signed
        bundle of the same version may then replace it)."""
        model, trust = self._model, self._trust
        if model is None or trust is None or model.version != version:
            return False
        try:
            trust.decode_bundle(model.bundle.raw)
        except BundleError:
            return True
        return False

    def _vet(self, data: bytes) -> VettedModel:
        bundle = self._verify(data)
        return build_model(
            bundle, expected=self._expected, threads=self._threads, policy=self._policy
        )

    def _remember(self, vetted: VettedModel) -> None:
        """Record a verified bundle's version from the state dir (raises the high-water mark)."""
        try:
            self.store.remember(vetted.bundle)
        except (OSError, EdgeError) as exc:
            log.error("cannot record model v%d in %s: %s", vetted.version, self.store.dir, exc)

    def _persist(self, vetted: VettedModel) -> None:
        try:
            self.store.save(vetted.bundle)
            self._disk_stamp = self.store.current_stamp()
        except (OSError, EdgeError) as exc:
            log.error(
                "model v%d is serving but could not be saved as last good: %s", vetted.version, exc
            )

    def _refused(self, exc: ModelError, source: str) -> None:
        with self._lock:
            self._last_error = f"{source}: {exc.kind}: {exc}"
            self._last_error_at = time.time()
        self._on_refused(f"bundle_{exc.kind}")
        log.error(
            "refused model bundle from %s (%s): %s; still serving %s",
            source,
            exc.kind,
            exc,
            "nothing" if self.version is None else f"v{self.version}",
        )
