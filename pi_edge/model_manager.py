"""The model's life on one node: vet, store, hand over to the worker, notice a rollback on disk.

Its own thread ("edge-models") vets bundles (signature, compatibility, golden vectors) that the
paho thread queued (latest wins), saves the good ones as last good, and puts them in a hand-over
slot; the worker swaps them in between two batches (`take_pending` + `install`), so a swap never
falls inside a batch. The same thread notices `pi_edge rollback` rewriting current.bundle, and
does that rollback itself when an operator asks over MQTT (`request_rollback`, a node command).

A bundle from the network is verified over its raw bytes before any field is read; then it must
be made for this node's site and not be older than the high-water mark (`check_site`,
`check_not_replayed`); a version an operator rolled back from is ignored. The state dir
(current.bundle, including one `pi_edge rollback` wrote) and `--model` are the operator's own
and trusted below the mark: their signature is still checked, their site and version are not.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from protocol import Manifest
from protocol.guard import Faults, ThreadWatch

from .batching import BatchPolicy
from .errors import EdgeError, ModelError
from .models import (
    Expected,
    ModelStore,
    VettedModel,
    build_model,
    check_not_replayed,
    check_site,
    verify_bundle,
)
from .telemetry import ModelInfo

__all__ = ["ModelManager"]

log = logging.getLogger(__name__)


class ModelManager:
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
    ) -> None:
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
        self._on_install = on_install  # the evidence's detectors start over
        self._disk_poll_s = disk_poll_s
        self._lock = threading.Lock()
        self._model: VettedModel | None = None  # written by the worker (install) only
        self._installed_at = 0.0
        self._source = ""
        self._pending: tuple[VettedModel, str] | None = None
        self._target_version: int | None = None  # the version serving or about to
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._bundles: deque[tuple[bytes, str]] = deque(maxlen=1)
        self._cond = threading.Condition()
        self._disk_stamp: int | None = None
        self._rollbacks = 0  # requested over MQTT, done by the model thread
        self._swapped = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="edge-models", daemon=True)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def watch(self, watch: ThreadWatch) -> None:
        """Add the model thread to `watch`."""
        watch.add(self._thread)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

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
            self._bundles.append((bytes(data), source))
            self._cond.notify()

    def request_rollback(self) -> None:
        """Ask the model thread to roll back (as `pi_edge rollback` does); never blocks.

        The paho thread calls it on an operator's node command; the rollback (disk writes,
        vetting the previous bundle) runs on the model thread, the swap on the worker.
        """
        with self._cond:
            self._rollbacks += 1
            self._cond.notify()

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
    def _loop(self) -> None:
        next_disk_check = time.monotonic() + self._disk_poll_s
        guard = self._faults.loop("edge-models", self._stop)  # a bad bundle must not end it
        while not self._stop.is_set():
            with guard:
                with self._cond:
                    if not self._bundles and not self._rollbacks:
                        self._cond.wait(max(0.0, next_disk_check - time.monotonic()))
                    if self._stop.is_set():
                        return
                    item = self._bundles.popleft() if self._bundles else None
                    rollbacks, self._rollbacks = self._rollbacks, 0
                if rollbacks:
                    self._rollback(rollbacks)
                if item is not None:
                    self._handle(*item)
                if time.monotonic() >= next_disk_check:
                    next_disk_check = time.monotonic() + self._disk_poll_s
                    self._check_disk()

    def _rollback(self, requests: int) -> None:
        """Roll back once (however many requests came at once), then load current.bundle."""
        if requests > 1:
            log.info("%d rollback requests at once: rolling back once", requests)
        try:
            from_v, to_v = self.store.rollback()
        except (OSError, EdgeError) as exc:
            self._on_refused("rollback_failed")
            log.error(
                "rollback requested by an operator failed: %s; still serving %s",
                exc,
                "nothing" if self.version is None else f"v{self.version}",
            )
            return
        log.info(
            "rollback requested by an operator: current.bundle is now v%s (was v%s); v%s is "
            "blocked from the retained topic",
            "?" if to_v is None else to_v,
            "?" if from_v is None else from_v,
            "?" if from_v is None else from_v,
        )
        self._check_disk()

    def _check_disk(self) -> None:
        """current.bundle rewritten by someone else (`pi_edge rollback`): load it."""
        stamp = self.store.current_stamp()
        if stamp is None or stamp == self._disk_stamp:
            return
        self._disk_stamp = stamp
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
                check_not_replayed(bundle.manifest, self.store.highest())
            vetted = build_model(
                bundle, expected=self._expected, threads=self._threads, policy=self._policy
            )
        except ModelError as exc:
            self._refused(exc, source)
            return
        if not from_disk:
            self._persist(vetted)
        else:
            self._remember(vetted)
            self._disk_stamp = self.store.current_stamp()
        self._target_version = vetted.version
        with self._lock:
            self._pending = (vetted, source)
        self._on_pending()

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
