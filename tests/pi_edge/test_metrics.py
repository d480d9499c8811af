"""pi_edge --metrics-port: scraped over HTTP and parsed with prometheus-client's own parser."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pi_edge import EdgeService
from protocol import Topics, encode_window
from tests.integrations._products import promtool_check_metrics

from ._model import EdgeModels
from .conftest import Publisher
from .test_service import _online, _wait_preds, _window, service_factory  # noqa: F401

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _scrape(port: int) -> tuple[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.headers["Content-Type"], resp.read().decode()


def _samples(text: str) -> tuple[Samples, dict[str, str]]:
    """(value per (sample name, labels), type per family) via the library's parser."""
    samples: Samples = {}
    types: dict[str, str] = {}
    for fam in text_string_to_metric_families(text):
        types[fam.name] = fam.type
        for s in fam.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, types


def _get(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


@pytest.mark.broker
def test_metrics_port_serves_what_the_node_counted(
    service_factory: Callable[..., EdgeService],  # noqa: F811
    publisher: Publisher,
    listen: Any,
    topics: Topics,
    models: EdgeModels,
) -> None:
    lst = listen(topics.predictions(), topics.statuses())
    svc = service_factory(model=models.bundle_path, metrics_port=0)
    port = svc.metrics_port
    assert port is not None and port > 0
    _online(lst, topics, svc.config.node, version=1)
    for seq in range(30):
        machine = "m01" if seq < 20 else "m02"
        publisher.publish(topics.window(machine), encode_window(_window(models, machine, seq)), 0)
    for bad in (b"{not json", b"{not json", b"XX" + bytes(60)):
        publisher.publish(topics.window("m01"), bad, qos=0)
    _wait_preds(lst, topics, "m01", 20)
    _wait_preds(lst, topics, "m02", 10)
    deadline = time.monotonic() + 10
    while svc.status().metrics["classified"] < 30 or sum(svc.status().errors.values()) < 3:
        assert time.monotonic() < deadline, "the node did not count every window"
        time.sleep(0.05)

    content_type, text = _scrape(port)
    assert content_type.startswith("text/plain")
    samples, types = _samples(text)
    assert _get(samples, "edgeloop_windows_received_total") == 30
    assert _get(samples, "edgeloop_windows_classified_total") == 30
    assert _get(samples, "edgeloop_predictions_published_total") == 30
    assert _get(samples, "edgeloop_windows_dropped_total", kind="inbox_full") == 0
    assert _get(samples, "edgeloop_payload_errors_total", kind="bad_json") == 2
    assert _get(samples, "edgeloop_payload_errors_total", kind="bad_magic") == 1
    assert _get(samples, "edgeloop_inbox_capacity") == svc.config.intake.queue_size
    assert _get(samples, "edgeloop_inbox_depth") == 0
    assert _get(samples, "edgeloop_node_state", state="online") == 1
    assert _get(samples, "edgeloop_node_state", state="degraded") == 0
    assert _get(samples, "edgeloop_model_version") == 1
    mi = svc.models.info()
    model = {"version": "1", "runtime": mi.runtime or "", "source": mi.source or ""}
    assert _get(samples, "edgeloop_model_info", **model) == 1
    p50 = _get(samples, "edgeloop_latency_recent_seconds", quantile="0.5")
    assert 0 < p50 <= _get(samples, "edgeloop_latency_recent_seconds", quantile="0.99") < 10
    assert _get(samples, "edgeloop_machine_windows_total", machine="m01") == 20
    assert _get(samples, "edgeloop_machine_windows_total", machine="m02") == 10
    row = {r.machine: r for r in svc.snapshot().machines}["m02"]
    assert _get(samples, "edgeloop_machine_class", machine="m02", **{"class": row.last_class}) == 1
    assert _get(samples, "edgeloop_machine_confidence", machine="m02") == pytest.approx(
        row.confidence
    )
    assert _get(samples, "edgeloop_machine_drift", machine="m02", state="ok") == 1
    assert ("edgeloop_buffer_windows", frozenset({("state", "pending")})) in samples
    assert _get(samples, "edgeloop_drift_batches_total", event="sent") >= 0
    assert types["edgeloop_windows_received"] == "counter"
    assert types["edgeloop_model_info"] == "gauge"  # an info metric, in the 0.0.4 text format
    assert types["edgeloop_inbox_depth"] == "gauge"
    assert all(n.startswith("edgeloop_") for n, _ in samples)
    assert not any(n.startswith(("process_", "python_")) for n, _ in samples)  # private registry

    promtool_check_metrics(text)  # Debian's Prometheus 2.42, from the tools cache

    svc.stop()
    with pytest.raises(OSError):
        _scrape(port)  # the port is closed with the node


def test_metrics_are_off_by_default_and_prometheus_client_is_not_imported() -> None:
    code = (
        "import sys, pi_edge, pi_edge.service\n"
        "from pi_edge.__main__ import main\n"
        "try:\n    main(['run', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('prometheus_client' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
    assert "--metrics-port" in out.stdout and "--metrics-host" in out.stdout
