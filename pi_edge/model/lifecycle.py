"""The model's life on one node: vet, store, hand over to the worker, notice a rollback on disk.

Its own thread ("edge-models") vets bundles (signature, compatibility, golden vectors) that the
paho thread queued (latest per topic wins: a rollout group's node hears its group's topic and
model/current and ends on the highest version offered), saves the good ones as last good, and
puts them in a hand-over slot; the worker swaps them in between two batches (`take_pending` +
`install`), so a swap never falls inside a batch. The same thread notices `pi_edge rollback`
rewriting current.bundle, and does that rollback itself when an operator asks over MQTT
(`request_rollback`, a node command).

After a swap to a newer model the worker feeds each batch's figures to `observe`;
model/health_watch.py judges them against the previous model's figures from just before the swap,
and when the new model is clearly worse within `watch_s` the model thread rolls back by itself, the
same way as the node command (previous becomes current, the bad version blocked), recording why
(rollbacks.json, status `detail.rollbacks` and `detail.model_health`).

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from nodekit.guard import Faults
from nodekit.lifecycle import Worker
from protocol import Manifest
from protocol.status_detail import Rollback, Rollbacks

from ..errors import EdgeError, ModelError
from ..intake.inbox import BatchPolicy
from ..report.telemetry import ModelInfo
from .health_watch import Figures, HealthPolicy, HealthState, ModelHealth, Verdict
from .state_dir import ModelStore
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


class ModelManager(Worker):
    """Serving model, pending hand-over and refusals of one node; thread-safe."""

    def __init__(
        self,
        state_dir: Path,
        *,
        public_key: bytes | None,
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
        self._public_key = public_key
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
        self._rollbacks = 0  # requested over MQTT, done by the model thread
        self._rollback_reason = OPERATOR_COMMAND
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
        """Last good from the state dir, else `model_file` (--model), else wait for MQTT."""
        for name, data in self.store.candidates():
            try:
                vetted = self._vet(data)
            except ModelError as exc:
                self._refused(exc, f"state dir {name}")
                continue
            self._remember(vetted)
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
            except ModelError as exc:
                self._refused(exc, f"--model {model_file}")
            else:
                self._persist(vetted)
                self.install(vetted, f"--model {model_file}")
                return
        log.info("no usable model on disk; waiting for the retained bundle")

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
            self._cond.notify()

    def request_rollback(self, reason: str = "") -> None:
        """Ask the model thread to roll back (as `pi_edge rollback` does); never blocks.

        The paho thread calls it on an operator's node command; the rollback (disk writes,
        vetting the previous bundle) runs on the model thread, the swap on the worker.
        `reason` goes into the rollback's record (default: a node command).
        """
        with self._cond:
            self._rollbacks += 1
            self._rollback_reason = reason or OPERATOR_COMMAND
            self._cond.notify()

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
                    if not self._bundles and not self._rollbacks and self._auto is None:
                        self._cond.wait(max(0.0, next_disk_check - time.monotonic()))
                    if self._stop.is_set():
                        return
                    item = None
                    if self._bundles:
                        source = next(iter(self._bundles))
                        item = (self._bundles.pop(source), source)
                    rollbacks, self._rollbacks = self._rollbacks, 0
                    reason = self._rollback_reason
                    auto, self._auto = self._auto, None
                if rollbacks:
                    if rollbacks > 1:
                        log.info("%d rollback requests at once: rolling back once", rollbacks)
                    self._rollback(reason, auto=False)
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
        self._rollback(verdict.reason, auto=True)

    def _rollback(self, reason: str, *, auto: bool) -> None:
        """Roll back once (as `pi_edge rollback`), record why, then load current.bundle."""
        who = "automatic rollback" if auto else "rollback requested by an operator"
        try:
            from_v, to_v = self.store.rollback(reason, auto=auto)
        except (OSError, EdgeError) as exc:
            self._on_refused("rollback_failed")
            log.error(
                "%s failed: %s; still serving %s",
                who,
                exc,
                "nothing" if self.version is None else f"v{self.version}",
            )
            return
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
            bundle = verify_bundle(
                data, public_key=self._public_key, allow_unsigned=self._allow_unsigned
            )
            version = bundle.manifest.version
            if not from_disk:
                check_site(bundle.manifest, self._site)
            current = self._target_version if self._target_version is not None else self.version
            if version == current:
                log.debug("bundle v%d from %s is already serving; ignored", version, source)
                if not from_disk:
                    self._offered[source] = version
                return
            if not from_disk and version in self.store.blocked():
                log.info(
                    "bundle v%d from %s ignored: an operator rolled back from it (a newer "
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

    def _vet(self, data: bytes) -> VettedModel:
        bundle = verify_bundle(
            data, public_key=self._public_key, allow_unsigned=self._allow_unsigned
        )
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
