"""The trainer's /metrics: a real daemon (no model, so no TensorFlow) fed drift batches over a
real broker, scraped over HTTP and parsed with prometheus-client's own parser."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jetson_trainer.__main__ import _parser, _settings
from jetson_trainer.build.keys import generate_keypair
from jetson_trainer.config import ServeConfig
from jetson_trainer.daemon.prometheus import daemon_families
from jetson_trainer.daemon.serve import TrainerDaemon
from jetson_trainer.daemon.store import WindowStore
from nodekit.metrics_server import MetricsServer
from nodekit.mqtt import connect, make_client
from protocol import Topics, Window
from protocol.drift_batch import DriftBatch, Kept, encode_batch
from protocol.errors import ConfigError
from tests.integrations._products import promtool_check_metrics

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _batch(seqs: range, batch_id: bytes) -> DriftBatch:
    records = tuple(
        Kept(Window("m01", s, s, np.full((60, 4), s, np.float32), label=s % 4), "labeled", 0, 1.0)
        for s in seqs
    )
    return DriftBatch(batch_id, "pi-1", 1, records)


def _scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    promtool_check_metrics(text)  # Debian's Prometheus 2.42, from the tools cache
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def _get(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


@pytest.mark.broker
def test_trainer_metrics_count_batches_windows_duplicates_and_gate_decisions(
    broker: Any, topics: Topics, tmp_path: Path
) -> None:
    private, _ = generate_keypair(tmp_path / "keys")
    config = ServeConfig(
        store=tmp_path / "store",
        private_key=private,
        broker=broker.address,
        prefix=topics.prefix,
        client_id=f"trainer-{time.time_ns()}",
        dashboard=False,
        metrics_port=0,
    )
    daemon = TrainerDaemon(config).start()  # no --data, no model: waits, imports no TensorFlow
    assert config.metrics_port is not None
    server = MetricsServer(
        lambda: daemon_families(daemon), config.metrics_host, config.metrics_port
    )
    pub = make_client(f"pi-{time.time_ns()}")
    try:
        deadline = time.monotonic() + 10
        while not daemon.state.connected:
            assert time.monotonic() < deadline, "the trainer did not connect"
            time.sleep(0.05)
        connect(pub, broker.address)
        pub.loop_start()
        for seqs, bid in ((range(0, 10), b"a" * 16), (range(5, 15), b"b" * 16)):
            pub.publish(topics.drift_batches("pi-1"), encode_batch(_batch(seqs, bid)), qos=1)
        while daemon.state.batches < 2:
            assert time.monotonic() < deadline, "the trainer did not store both batches"
            time.sleep(0.05)
        daemon.store.record_model(2, 1, accepted=True, reason="better", labels_used=8, scores=None)
        daemon.store.record_model(3, 2, accepted=False, reason="worse", labels_used=8, scores=None)

        samples = _scrape(server.port)
        assert _get(samples, "edgeloop_trainer_batches_received_total") == 2
        assert _get(samples, "edgeloop_trainer_windows_stored_total") == 15
        assert _get(samples, "edgeloop_trainer_duplicate_windows_total") == 5
        assert _get(samples, "edgeloop_trainer_batch_acks_total") == 2
        assert _get(samples, "edgeloop_trainer_store_windows", labeled="true") == 15
        assert _get(samples, "edgeloop_trainer_store_windows", labeled="false") == 0
        assert _get(samples, "edgeloop_trainer_finetunes_total") == 2
        assert _get(samples, "edgeloop_trainer_gate_decisions_total", outcome="accepted") == 1
        assert _get(samples, "edgeloop_trainer_gate_decisions_total", outcome="rejected") == 1
        assert _get(samples, "edgeloop_node_state", state="online") == 1
        assert _get(samples, "edgeloop_broker_connected") == 1
        assert not any(n.startswith("edgeloop_trainer_champion") for n, _ in samples)  # none yet
        assert not any(n.startswith(("process_", "python_")) for n, _ in samples)
    finally:
        pub.loop_stop()
        pub.disconnect()
        server.close()
        daemon.stop()


def test_attempt_counts_survive_reopening_the_store(tmp_path: Path) -> None:
    store = WindowStore(tmp_path / "w.sqlite")
    assert store.attempt_counts() == {"accepted": 0, "rejected": 0}
    for version, ok in ((2, True), (3, False), (4, False)):
        store.record_model(version, 1, accepted=ok, reason="r", labels_used=4, scores=None)
    store.close()
    assert WindowStore(tmp_path / "w.sqlite").attempt_counts() == {"accepted": 1, "rejected": 2}


def test_a_metrics_port_in_use_is_a_config_error_saying_what_to_do() -> None:
    first = MetricsServer(list, "127.0.0.1", 0)
    try:
        with pytest.raises(ConfigError, match="pick a free port with --metrics-port"):
            MetricsServer(list, "127.0.0.1", first.port)
    finally:
        first.close()


def test_serve_takes_metrics_flags_and_help_does_not_import_prometheus_client(
    tmp_path: Path,
) -> None:
    metrics = ["--metrics-port", "9101", "--metrics-host", "0.0.0.0"]
    args = _parser().parse_args(
        ["serve", "--store", str(tmp_path), "--private-key", str(tmp_path / "k.pem"), *metrics]
    )
    c: ServeConfig = _settings(args, ServeConfig)
    assert (c.metrics_port, c.metrics_host) == (9101, "0.0.0.0")
    code = (
        "import sys\nfrom jetson_trainer.__main__ import main\n"
        "try:\n    main(['serve', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('prometheus_client' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
    assert "--metrics-port" in out.stdout
