"""Serve a node's figures on `/metrics` for Prometheus, read from its snapshot at scrape time.

Nothing here is updated on the hot path: a scrape calls the role's `families()` (pi_edge's
`pi_edge/report/prometheus.py`, the trainer's `jetson_trainer/daemon/prometheus.py`), which reads
the node's existing counters once and turns them into metric families. The registry is private (no
process or platform collectors, no global default registry), and prometheus-client is imported only
by this module and those two, which a role imports only when `--metrics-port` is set.

>>> faults = {("edge-worker", "KeyError"): 1}
>>> fams = [counter("edgeloop_windows_received", "windows decoded", 3),
...         labeled("edgeloop_faults", "faults", ("where", "type"), faults, kind="counter")]
>>> print(exposition(fams).decode().replace("# HELP", "#").strip())
# edgeloop_windows_received_total windows decoded
# TYPE edgeloop_windows_received_total counter
edgeloop_windows_received_total 3.0
# edgeloop_faults_total faults
# TYPE edgeloop_faults_total counter
edgeloop_faults_total{type="KeyError",where="edge-worker"} 1.0
>>> split_fault("edge-worker:KeyError"), split_fault("odd")
(('edge-worker', 'KeyError'), ('odd', 'other'))
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from wsgiref.simple_server import WSGIServer

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest, start_http_server
from prometheus_client.registry import CollectorRegistry

from protocol.errors import ConfigError

from .guard import Faults

__all__ = [
    "MetricsServer",
    "SnapshotCollector",
    "counter",
    "exposition",
    "gauge",
    "info",
    "labeled",
    "split_fault",
]

log = logging.getLogger(__name__)

Families = Callable[[], Iterable[Metric]]


def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    """A counter without labels (`name` without `_total`; the family adds it)."""
    return CounterMetricFamily(name, doc, value=value)


def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    """A gauge without labels."""
    return GaugeMetricFamily(name, doc, value=value)


def labeled(
    name: str,
    doc: str,
    labels: tuple[str, ...],
    values: Mapping[tuple[str, ...], float],
    *,
    kind: str = "gauge",
) -> Metric:
    """A counter or gauge with one sample per label tuple (sorted, so a scrape is stable)."""
    fam: CounterMetricFamily | GaugeMetricFamily
    if kind == "counter":
        fam = CounterMetricFamily(name, doc, labels=labels)
    elif kind == "gauge":
        fam = GaugeMetricFamily(name, doc, labels=labels)
    else:
        raise ValueError(f"metric kind {kind!r}: use 'counter' or 'gauge'")
    for key, value in sorted(values.items()):
        fam.add_metric(list(key), value)
    return fam


def info(name: str, doc: str, value: Mapping[str, str]) -> InfoMetricFamily:
    """An info metric (`<name>_info 1` with `value` as labels)."""
    return InfoMetricFamily(name, doc, value=dict(value))


def split_fault(kind: str) -> tuple[str, str]:
    """`nodekit.guard.Faults` kind `where:Type` → (where, type)."""
    where, sep, typ = kind.rpartition(":")
    return (where, typ) if sep else (kind, "other")


def exposition(families: Iterable[Metric]) -> bytes:
    """The text format of `families`, as a scrape returns it (for tests and doctests)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: list(families)))
    return generate_latest(registry)


class SnapshotCollector:
    """A prometheus-client collector whose `collect()` asks `families` at each scrape.

    An exception is counted in `faults` (as `<where>:<Type>`, so the node's status shows it)
    and re-raised: the scrape gets HTTP 500 and the HTTP thread carries on.
    """

    def __init__(self, families: Families, faults: Faults | None = None, where: str = "") -> None:
        self._families = families
        self._faults = faults
        self._where = where or "metrics-http"

    def collect(self) -> Iterable[Metric]:
        try:
            return list(self._families())
        except Exception as exc:  # the HTTP thread's outermost frame of our code
            if self._faults is not None:
                self._faults.record(self._where, exc)
            raise


class MetricsServer:
    """`/metrics` on `host:port` (0: any free port; `port` is the bound one) until `close()`."""

    def __init__(
        self,
        families: Families,
        host: str,
        port: int,
        *,
        faults: Faults | None = None,
        where: str = "metrics-http",
    ) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(SnapshotCollector(families, faults, where))
        try:
            server, thread = start_http_server(port, host, registry=registry)
        except OSError as exc:
            msg = (
                f"cannot serve metrics on {host}:{port}: {exc}; pick a free port with "
                "--metrics-port (0: any free port, logged) or another --metrics-host"
            )
            raise ConfigError(msg) from exc
        self._server: WSGIServer = server
        self._thread: threading.Thread = thread
        self.host = host
        self.port: int = server.server_port
        log.info("serving Prometheus metrics on http://%s:%d/metrics", host, self.port)

    def close(self, timeout: float = 5.0) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout)
