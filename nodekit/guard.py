"""The last-resort handler at a thread's outermost frame: count, log once per kind, carry on.

Decoders raise the protocol's typed errors and the code handles those where they happen. Anything
else that reaches the top of a paho callback or a worker loop is a bug or an input nobody foresaw;
it must neither kill the thread (paho re-raises callback exceptions and its network thread dies)
nor flood the log. `Faults` counts such exceptions per kind (`where:ExceptionType`), logs the first
of each kind with its traceback and then at most one line per interval, and `Faults.wrap` puts
that handler around a callback. `ThreadWatch` notices a thread that died anyway, so that the node
can say `degraded` and exit non-zero instead of staying a zombie that reports `online`.

This is the only place where `except Exception` is allowed to carry on: at a thread's outermost
frame, never around logic.

>>> import logging
>>> faults = Faults(logging.getLogger("doctest"), interval_s=60.0)
>>> def on_message(payload: bytes) -> int:
...     return int(payload)
>>> safe = faults.wrap("on_message", on_message)
>>> safe(b"12"), safe(b"x" * 5), safe(b"y"), faults.counts()
(12, None, None, {'on_message:ValueError': 2})
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, ParamSpec, TypeVar

__all__ = [
    "Faults",
    "LoopGuard",
    "ThreadWatch",
    "guard_client",
    "paho_thread_alive",
    "publish_retained",
]

P = ParamSpec("P")
R = TypeVar("R")

_PAHO_CALLBACKS = (
    "on_connect",
    "on_disconnect",
    "on_message",
    "on_publish",
    "on_subscribe",
    "on_unsubscribe",
    "on_connect_fail",
    "on_socket_open",
)


MAX_KINDS = 64  # distinct kinds counted; beyond, a new kind is counted as `<where>:other`


class Faults:
    """Unexpected exceptions per kind, thread-safe; logs the first of each kind in full.

    At most `max_kinds` kinds are kept apart, so a status that shows `counts()` stays bounded.
    """

    def __init__(
        self, log: logging.Logger, interval_s: float = 10.0, max_kinds: int = MAX_KINDS
    ) -> None:
        self._log = log
        self._interval_s = interval_s
        self._max_kinds = max_kinds
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._last_log: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def record(self, where: str, exc: BaseException) -> str:
        """Count `exc` caught at the top of `where`; log it if its kind is due. Returns the kind."""
        kind = f"{where}:{type(exc).__name__}"
        now = time.monotonic()
        with self._lock:
            if kind not in self._counts and len(self._counts) >= self._max_kinds:
                kind = f"{where}:other"
            self._counts[kind] = self._counts.get(kind, 0) + 1
            last = self._last_log.get(kind)
            first = last is None
            due = first or now - (last or 0.0) >= self._interval_s
            if due:
                self._last_log[kind] = now
                skipped, self._unlogged[kind] = self._unlogged.get(kind, 0), 0
            else:
                self._unlogged[kind] = self._unlogged.get(kind, 0) + 1
        if first:
            self._log.error(
                "unexpected %s in %s (the thread carries on; this is a bug, please report "
                "it with this traceback): %s",
                type(exc).__name__,
                where,
                exc,
                exc_info=exc,
            )
        elif due:
            self._log.error(
                "unexpected %s in %s again (%d more since the last line): %s",
                type(exc).__name__,
                where,
                skipped,
                exc,
            )
        return kind

    def wrap(self, where: str, fn: Callable[P, R]) -> Callable[P, R | None]:
        """`fn` with this handler around it: an exception is recorded and None returned."""

        def guarded(*args: P.args, **kwargs: P.kwargs) -> R | None:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # the thread's outermost frame: see the module docstring
                self.record(where, exc)
                return None

        guarded.__name__ = getattr(fn, "__name__", where)
        guarded.__doc__ = fn.__doc__
        return guarded

    def loop(
        self,
        where: str,
        stop: threading.Event | None = None,
        *,
        min_s: float = 0.01,
        max_s: float = 1.0,
    ) -> LoopGuard:
        """The handler for one iteration of a worker loop: `with guard: body` (see LoopGuard)."""
        return LoopGuard(self, where, stop, min_s=min_s, max_s=max_s)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._counts.items()))

    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())


class LoopGuard:
    """`with guard:` around one iteration of a worker loop: an exception is counted, the loop
    goes on with its next iteration, and a loop that keeps failing backs off.

    After the n-th failure in a row it waits min(max_s, min_s · 2^(n-2)) (none after the
    first; on `stop` if given, so stopping stays prompt), so a persistent failure cannot spin a
    core. A success resets the count. BaseExceptions that are not Exceptions (SystemExit,
    KeyboardInterrupt) pass: the thread ends, and a ThreadWatch reports it.

    >>> import logging
    >>> faults = Faults(logging.getLogger("doctest"))
    >>> guard = faults.loop("worker")
    >>> for item in (1, 0, 2, 0, 0):
    ...     with guard:
    ...         _ = 1 / item
    >>> faults.counts(), guard.failures
    ({'worker:ZeroDivisionError': 3}, 2)
    """

    def __init__(
        self,
        faults: Faults,
        where: str,
        stop: threading.Event | None = None,
        *,
        min_s: float = 0.01,
        max_s: float = 1.0,
    ) -> None:
        self.faults = faults
        self.where = where
        self.stop = stop
        self.min_s = min_s
        self.max_s = max_s
        self.failures = 0  # in a row

    def __enter__(self) -> LoopGuard:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> bool:
        if exc is None:
            self.failures = 0
            return False
        if not isinstance(exc, Exception):
            return False
        self.failures += 1
        self.faults.record(self.where, exc)
        if self.failures > 1:
            delay = min(self.max_s, self.min_s * 2 ** (self.failures - 2))
            if self.stop is not None:
                self.stop.wait(delay)
            else:
                time.sleep(delay)
        return True


def guard_client(client: Any, faults: Faults, name: str = "mqtt") -> None:
    """Wrap every callback already set on a paho client so that none can kill its thread.

    Call it after assigning the callbacks and before `loop_start()`. paho's own
    `suppress_exceptions` is switched on too, as a backstop for callbacks set later.
    """
    for attr in _PAHO_CALLBACKS:
        fn = getattr(client, attr, None)
        if fn is not None and not getattr(fn, "_edgeloop_guarded", False):
            wrapped = faults.wrap(f"{name}.{attr}", fn)
            wrapped._edgeloop_guarded = True  # type: ignore[attr-defined]
            setattr(client, attr, wrapped)
    if hasattr(client, "suppress_exceptions"):
        client.suppress_exceptions = True


class ThreadWatch:
    """Threads that must stay alive while a node runs; `dead()` names those that are not.

    >>> import threading
    >>> watch = ThreadWatch()
    >>> t = threading.Thread(target=lambda: None, name="quick")
    >>> t.start(); t.join()
    >>> watch.add(t); watch.dead()
    ['quick']
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: dict[str, Callable[[], bool]] = {}

    def add(self, thread: threading.Thread, name: str | None = None) -> None:
        """Watch `thread` (under `name`, default its own)."""
        self.add_check(name or thread.name, thread.is_alive)

    def add_paho(self, client: Any, name: str) -> None:
        """Watch paho's network thread of `client`; start it with `nodekit.mqtt.start_loop`."""
        from .mqtt import network_thread

        thread = network_thread(client)
        if thread is None:
            raise ValueError(f"{name}: start the client with nodekit.mqtt.start_loop first")
        self.add(thread, name)

    def add_check(self, name: str, is_alive: Callable[[], bool]) -> None:
        """Watch anything that can say whether it is alive (e.g. paho's network thread)."""
        with self._lock:
            self._threads[name] = is_alive

    def remove(self, names: Iterable[str]) -> None:
        with self._lock:
            for name in names:
                self._threads.pop(name, None)

    def dead(self) -> list[str]:
        """Names of the watched threads that are no longer alive, sorted."""
        with self._lock:
            checks = list(self._threads.items())
        return sorted(name for name, alive in checks if not alive())


def paho_thread_alive(client: Any) -> bool:
    """Whether the network thread `nodekit.mqtt.start_loop` started for `client` is running.

    False before it was started, after `loop_stop`, and once the thread died.
    """
    from .mqtt import network_thread

    thread = network_thread(client)
    return thread is not None and thread.is_alive()


def publish_retained(client: Any, topic: str, payload: bytes, timeout: float = 2.0) -> bool:
    """Publish a retained QoS 1 message and wait for the broker's ack; True if it was acked.

    Works also when paho's network thread has died (a degraded node's last status): paho then
    writes and reads on the calling thread, with `on_message` detached first, so that incoming
    messages are dropped rather than handled on this thread (the client is going down; with
    manual acks they stay unacknowledged and come again). Never raises for a lost connection.
    """
    try:
        if paho_thread_alive(client):
            info = client.publish(topic, payload, qos=1, retain=True)
            info.wait_for_publish(timeout)
            return bool(info.is_published())
        client.loop_stop()  # joins the dead thread; paho then does its I/O on this thread
        client.on_message = None
        info = client.publish(topic, payload, qos=1, retain=True)
        deadline = time.monotonic() + timeout
        while not info.is_published() and time.monotonic() < deadline:
            client.loop(0.05)
        return bool(info.is_published())
    except (RuntimeError, ValueError, OSError):
        return False
