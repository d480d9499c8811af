"""A thread's life and a node's end, written once: `Worker`, `Watchdog` and `run_node`.

Every class that owns a thread is a `Worker`: it implements `_run` (its loop, which returns once
`stopping` is true) and, if its loop waits on something other than the stop event, `_wake`;
`start`, `stop` and `watch` are here. Every node (pi_edge, the trainer daemon, the simulator)
has one `Watchdog`: the threads it cannot go on without, and the one way it ends when one of them
dies — an error line, a retained status `degraded` naming the dead threads (published by the
node's own callback), `failed` set — and `run_node` is the main thread's part: watch until told
to stop, then stop the node and turn what happened into the exit code (1 for a dead thread, the
broker's refusal raised as itself, 0 otherwise).

>>> import logging
>>> class Once(Worker):
...     def _run(self) -> None:
...         return  # a loop that ends while the node still runs
>>> seen = []
>>> dog = Watchdog("demo", seen.append, log=logging.getLogger("doctest.quiet"))
>>> dog.check()
False
>>> worker = Once("once").start()
>>> worker.watch(dog.threads); worker.stop()
>>> dog.check(), dog.dead, seen, dog.failed.is_set()
(True, ('once',), [('once',)], True)
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol, Self

from .cli import EXIT_FAILED, EXIT_OK
from .errors import BrokerRefusedError
from .guard import ThreadWatch

__all__ = ["DEGRADED", "Loop", "Node", "Watchdog", "Worker", "run_node"]

DEGRADED = "degraded"  # the status state of a node that found one of its threads dead


class Worker:
    """An object that owns one thread: `start()`, `stop()` and `watch()`, the same everywhere.

    Subclasses implement `_run()` — the thread's loop, which must return soon after `_stop` is
    set (wait on `self._stop`, or override `_wake()` to interrupt another wait) — and call
    `super().__init__(thread_name)`. An MQTT client the worker owns is watched with it
    (`_watch_client`), so a dead network thread is noticed like a dead loop.
    """

    def __init__(self, thread_name: str) -> None:
        self.thread_name = thread_name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._also: list[tuple[str, Callable[[], bool]]] = []

    def start(self) -> Self:
        """Start the thread (once)."""
        if self._thread is not None:
            raise RuntimeError(f"{self.thread_name} was started already")
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the loop to end, wake it, and wait up to `timeout` s for the thread."""
        self._stop.set()
        self._wake()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout)

    def watch(self, watch: ThreadWatch) -> None:
        """Add this worker's thread (and the network threads of its clients) to `watch`."""
        if self._thread is None:
            raise RuntimeError(f"{self.thread_name}: call watch() after start()")
        watch.add(self._thread, self.thread_name)
        for name, alive in self._also:
            watch.add_check(name, alive)

    @property
    def stopping(self) -> bool:
        """True once `stop()` was called."""
        return self._stop.is_set()

    @property
    def alive(self) -> bool:
        """Whether the thread is running now."""
        return self._thread is not None and self._thread.is_alive()

    def _watch_client(self, name: str, alive: Callable[[], bool]) -> None:
        """Watch something else this worker owns (an MQTT network thread) under `name`."""
        self._also.append((name, alive))

    def _run(self) -> None:  # pragma: no cover - every subclass has its own
        raise NotImplementedError

    def _wake(self) -> None:
        """Interrupt the loop's wait so that it sees the stop at once (default: nothing)."""


class Loop(Worker):
    """A Worker whose loop is a function of its owner: `run()` must return once the owner
    stops (it reads the owner's own stop event); `wake()` interrupts its wait on stop."""

    def __init__(
        self, thread_name: str, run: Callable[[], None], wake: Callable[[], None] | None = None
    ) -> None:
        super().__init__(thread_name)
        self._body = run
        self._waker = wake

    def _run(self) -> None:
        self._body()

    def _wake(self) -> None:
        if self._waker is not None:
            self._waker()


class Watchdog:
    """The threads a node cannot go on without, and the one way it ends when one of them dies.

    `check()` (the status thread and the main thread call it) returns True once a watched thread
    is dead: the first time it logs an error naming the threads, records them in `dead`, sets
    `failed` and calls `degraded(dead)` — the node's own way of publishing a retained status
    "degraded" — under `lock`, which the node also holds for its final status on stop, so the
    two never cross. A node that is stopping (`stopping=True`) is not degraded by threads that
    end because it stops.
    """

    def __init__(
        self,
        what: str,
        degraded: Callable[[tuple[str, ...]], Any],
        *,
        log: logging.Logger,
        advice: str = "run it under a service manager that restarts it (systemd "
        "Restart=on-failure); the log above says why the thread ended",
    ) -> None:
        self.what = what
        self.threads = ThreadWatch()
        self.failed = threading.Event()
        self.dead: tuple[str, ...] = ()
        self.lock = threading.Lock()
        self._degraded = degraded
        self._log = log
        self._advice = advice

    def check(self, *, stopping: bool = False) -> bool:
        """Whether a watched thread died; the first time, go degraded (see the class)."""
        if self.failed.is_set():
            return True
        dead = tuple(self.threads.dead())
        if not dead or stopping:
            return False
        with self.lock:
            if self.failed.is_set():
                return True
            self.dead = dead
            self._log.error(
                "thread(s) %s of %s died; it cannot go on and reports %r: %s",
                ", ".join(dead),
                self.what,
                DEGRADED,
                self._advice,
            )
            self.failed.set()
            self._degraded(dead)
        return True


class Node(Protocol):
    """What `run_node` needs of a running node."""

    @property
    def dead_threads(self) -> tuple[str, ...]: ...

    def watchdog(self) -> bool: ...

    def connection_failure(self) -> BrokerRefusedError | None: ...

    def stop(self) -> None: ...


def run_node(
    node: Node,
    stop: threading.Event,
    *,
    name: str,
    log: logging.Logger,
    every_s: float = 0.25,
    live: AbstractContextManager[Any] | None = None,
) -> int:
    """The main thread of a running node: watch until `stop` is set, a thread dies or the broker
    refuses the node for good; then stop the node and return its exit code.

    A broker refusal is raised (the caller's CLI turns it into exit 1 with what to check); a
    dead thread is exit 1 with an error line; a requested stop is exit 0. `live` (a rich Live
    dashboard) is entered around the watching.
    """
    try:
        with live if live is not None else contextlib.nullcontext():
            while (
                not stop.wait(every_s) and not node.watchdog() and node.connection_failure() is None
            ):
                pass
    finally:
        node.stop()
    failure = node.connection_failure()
    if failure is not None:
        raise failure  # the broker will not let this node in: exit 1, saying what to check
    if node.dead_threads:
        log.error(
            "%s exits %d: thread(s) %s died (degraded); a service manager should restart it",
            name,
            EXIT_FAILED,
            ", ".join(node.dead_threads),
        )
        return EXIT_FAILED
    return EXIT_OK
