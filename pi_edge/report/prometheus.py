"""pi_edge's Prometheus metrics: a pure function from the node's status and snapshot to metric
families, read at scrape time (`pi_edge run --metrics-port`; see README "Metrics").

The worker pays nothing per window: every figure is one the node already keeps for its status
and dashboard (NodeTelemetry, Evidence, ModelManager.info, the inbox). Per-machine series are
bounded by `--max-machines`; each machine has one series per metric (its current class, drift
level and badge carry a value of 1), so a series goes when its machine is forgotten.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client.core import Metric

from nodekit.metrics_server import counter, gauge, info, labeled, split_fault
from protocol import Status
from protocol.status_detail import (
    DetailReader,
    EstimateDetail,
    FleetDetail,
    ModelHealthDetail,
    TypeLoop,
    TypeLoops,
)

from .dashboard import Snapshot, badge

__all__ = ["DRIFT_LEVELS", "NODE_STATES", "edge_families"]

NODE_STATES = ("online", "degraded")
DRIFT_LEVELS = ("ok", "suspect", "drift")


def _num(d: Mapping[str, Any], key: str) -> float:
    v = d.get(key)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0.0


def edge_families(status: Status, snap: Snapshot, received: int) -> list[Metric]:
    """Every pi_edge metric family, from one `status()`, one `snapshot()` and the inbox's
    count of windows received (decoded and queued)."""
    m, errors = status.metrics, status.errors
    publish_failed = errors.get("publish_failed", 0)
    classified = _num(m, "classified")
    node = {"node": status.node}
    fams: list[Metric] = [
        info(
            "edgeloop_build",
            "software version of this node",
            {**node, "version": status.software_version, "role": status.role},
        ),
        labeled(
            "edgeloop_node_state",
            "1 for the node's state: online, or degraded (a thread died; restart it)",
            ("state",),
            {(s,): float(status.state == s) for s in NODE_STATES},
        ),
        gauge(
            "edgeloop_broker_connected",
            "1 while the node's MQTT connection is up",
            float(snap.broker_state == "connected"),
        ),
        gauge("edgeloop_uptime_seconds", "seconds since the node started", _num(m, "uptime_s")),
        counter(
            "edgeloop_windows_received",
            "windows decoded and queued for classification",
            received,
        ),
        counter("edgeloop_windows_classified", "windows classified", classified),
        counter(
            "edgeloop_predictions_published",
            "predictions handed to the MQTT client (QoS 0)",
            max(classified - publish_failed, 0.0),
        ),
        counter(
            "edgeloop_predictions_publish_failed",
            "predictions not published: not connected, or the broker did not read them",
            publish_failed,
        ),
        labeled(
            "edgeloop_windows_dropped",
            "windows dropped after decoding: inbox_full (oldest dropped), inference_failed",
            ("kind",),
            {
                ("inbox_full",): float(snap.drops),
                ("inference_failed",): float(errors.get("inference_failed", 0)),
            },
            kind="counter",
        ),
        labeled(
            "edgeloop_payload_errors",
            "messages refused before classification, by kind (protocol.PayloadError kinds)",
            ("kind",),
            {(k,): float(v) for k, v in snap.bad_payloads.items()},
            kind="counter",
        ),
        labeled(
            "edgeloop_bundles_refused",
            "model bundles refused, by kind",
            ("kind",),
            {(k,): float(v) for k, v in errors.items() if k.startswith("bundle_")},
            kind="counter",
        ),
        labeled(
            "edgeloop_faults",
            "unexpected exceptions caught at a thread's outermost frame, by where and type",
            ("where", "type"),
            {split_fault(k): float(v) for k, v in snap.faults.items()},
            kind="counter",
        ),
        gauge("edgeloop_inbox_depth", "windows waiting in the inbox", float(snap.queue_depth)),
        gauge("edgeloop_inbox_capacity", "inbox capacity (--queue-size)", snap.queue_capacity),
        _recent_latency(m),
        gauge(
            "edgeloop_machines_tracked", "machines with per-machine state", snap.machines_tracked
        ),
        counter(
            "edgeloop_machines_evicted",
            "machines forgotten by the --max-machines cap",
            snap.machines_evicted,
        ),
        labeled(
            "edgeloop_drift_state",
            "1 for the node's overall drift level",
            ("state",),
            {(s,): float(snap.drift == s) for s in DRIFT_LEVELS},
        ),
    ]
    fams += _model(status)
    fams += _health(status)
    fams += _fleet(status)
    fams += _estimate(status)
    fams += _type_loops(status)
    fams += _machines(snap)
    fams += _evidence(snap.evidence)
    fams += _sources(status)
    return fams


SOURCE_EVENTS = ("connects", "reconnects", "connection_failures", "readings", "bad", "stale")
# (pi_edge.intake.sources._core.EVENTS: a status from any node version is read by key)


def _sources(status: Status) -> list[Metric]:
    """The OPC UA and Modbus sources (`detail.sources`), one series per source and event.

    >>> st = Status("n1", "edge", "online", "0", detail={"sources": [
    ...     {"name": "plc1", "kind": "opcua", "state": "connected", "readings": 5}]})
    >>> [(s.labels["source"], s.labels.get("event"), s.value)
    ...  for f in _sources(st) for s in f.samples if s.value]
    [('plc1', None, 1.0), ('plc1', 'readings', 5.0)]
    """
    raw = status.detail.get("sources")
    if not isinstance(raw, list):
        return []
    items = [d for d in raw if isinstance(d, dict)]
    keys = [(str(d.get("name", ""))[:64], str(d.get("kind", ""))[:16]) for d in items]
    return [
        labeled(
            "edgeloop_source_connected",
            "1 while pi_edge is connected to this OPC UA server or Modbus device",
            ("source", "kind"),
            {k: float(d.get("state") == "connected") for k, d in zip(keys, items, strict=True)},
        ),
        labeled(
            "edgeloop_source_events",
            "per source: connects, reconnects, connection failures, values fed, bad and stale "
            "values",
            ("source", "kind", "event"),
            {(*k, e): _num(d, e) for k, d in zip(keys, items, strict=True) for e in SOURCE_EVENTS},
            kind="counter",
        ),
    ]


def _model(status: Status) -> list[Metric]:
    d = status.detail
    if status.model_version is None:
        return [gauge("edgeloop_model_loaded", "1 while a model is serving", 0.0)]
    return [
        gauge("edgeloop_model_loaded", "1 while a model is serving", 1.0),
        info(
            "edgeloop_model",
            "the serving model",
            {
                "version": str(status.model_version),
                "runtime": str(d.get("runtime") or ""),
                "source": str(d.get("model_source") or ""),
            },
        ),
        gauge("edgeloop_model_version", "version of the serving model", status.model_version),
        gauge(
            "edgeloop_model_age_seconds",
            "seconds since the model was installed",
            _num(d, "model_age_s"),
        ),
    ]


def _health(status: Status) -> list[Metric]:
    """Rollbacks since the node started, by who decided, and whether a new model is watched."""
    health = DetailReader(status.detail, status.role).get(ModelHealthDetail)
    if health is None:
        return []
    return [
        labeled(
            "edgeloop_model_rollbacks",
            "model rollbacks since the node started: auto=true when the node found a newly "
            "swapped-in model clearly worse, false when an operator asked",
            ("auto",),
            {
                ("true",): float(health.auto_rollbacks),
                ("false",): float(health.operator_rollbacks),
            },
            kind="counter",
        ),
        gauge(
            "edgeloop_model_health_watching",
            "1 while the node watches a newly swapped-in model's health (--watch-s)",
            float(health.watching is not None),
        ),
    ]


def _recent_latency(m: Mapping[str, Any]) -> Metric:
    """A summary (quantiles computed on the node over its last 2048 windows, not aggregatable):
    promtool refuses a `quantile` label on any other type."""
    family = Metric(
        "edgeloop_latency_recent_seconds",
        "origin (sensor stamp, else receipt) to published, over the last 2048 windows; "
        "quantiles computed on the node (not aggregatable)",
        "summary",
    )
    name = "edgeloop_latency_recent_seconds"
    family.add_sample(name, {"quantile": "0.5"}, _num(m, "latency_p50_ms") / 1000.0)
    family.add_sample(name, {"quantile": "0.99"}, _num(m, "latency_p99_ms") / 1000.0)
    family.add_sample(name + "_count", {}, _num(m, "latency_window"))
    family.add_sample(name + "_sum", {}, _num(m, "latency_window_sum_ms") / 1000.0)
    return family


def _estimate(status: Status) -> list[Metric]:
    """The label-free accuracy estimate (pi_edge/loop/accuracy_estimate.py) and, where labels came,
    the labeled accuracy over the same recent windows; label requests sent."""
    detail = status.detail
    est = DetailReader(detail, status.role).get(EstimateDetail)
    if est is None:
        return []
    fams: list[Metric] = [
        gauge(
            "edgeloop_windows_estimated",
            "recent windows the accuracy estimate is taken over",
            float(est.windows),
        )
    ]
    if est.accuracy_est is not None:
        fams.append(
            labeled(
                "edgeloop_accuracy_estimate",
                "label-free estimate of the serving model's accuracy on recent windows, by method "
                "(atc: average thresholded confidence, doc, mean_confidence)",
                ("method",),
                {(est.method,): float(est.accuracy_est)},
            )
        )
    if est.labeled_accuracy is not None:
        fams.append(
            gauge(
                "edgeloop_labeled_accuracy_recent",
                "accuracy on the labeled windows among the estimate's recent windows",
                float(est.labeled_accuracy),
            )
        )
    labels = detail.get("labels")
    requests = labels.get("requests") if isinstance(labels, dict) else None
    if isinstance(requests, dict):
        fams.append(
            counter(
                "edgeloop_label_requests_windows",
                "held windows this node asked to have labeled (…/labels/requests/{node})",
                _num(requests, "windows"),
            )
        )
    return fams


def _type_loops(status: Status) -> list[Metric]:
    """A node serving several machine types (or another than the built-in one): each type's
    closed loop (`detail.type_loops`), labeled by `type`."""
    loops = DetailReader(status.detail, status.role).get(TypeLoops)
    if loops is None:
        return []
    by: dict[tuple[str, ...], TypeLoop] = {(e.type,): e for e in loops.entries}
    fams = [
        labeled(
            "edgeloop_type_label_events",
            "maintenance label events applied, per machine type",
            ("type",),
            {k: float(e.label_events) for k, e in by.items()},
            kind="counter",
        ),
        labeled(
            "edgeloop_type_labels_refused",
            "label events refused (a class the type has not), per machine type",
            ("type",),
            {k: float(e.labels_refused) for k, e in by.items()},
            kind="counter",
        ),
        labeled(
            "edgeloop_type_label_requests_windows",
            "held windows asked to be labeled, per machine type",
            ("type",),
            {k: float(e.windows_asked) for k, e in by.items()},
            kind="counter",
        ),
        labeled(
            "edgeloop_type_kept_windows_waiting",
            "kept windows in the buffer waiting for the type's trainer, per machine type",
            ("type",),
            {k: float(e.waiting) for k, e in by.items()},
        ),
    ]
    estimates: dict[tuple[str, ...], float] = {
        k: float(e.accuracy_est) for k, e in by.items() if e.accuracy_est is not None
    }
    if estimates:
        fams.append(
            labeled(
                "edgeloop_type_accuracy_estimate",
                "label-free estimate of each type's serving model's accuracy on recent windows",
                ("type",),
                estimates,
            )
        )
    return fams


def _fleet(status: Status) -> list[Metric]:
    """`--fleet` only: the members this node sees, its share, the windows it left to others."""
    fleet = DetailReader(status.detail, status.role).get(FleetDetail)
    if fleet is None:
        return []
    return [
        gauge(
            "edgeloop_fleet_members",
            "live members of this node's fleet group as it sees them (itself included)",
            float(len(fleet.members)),
        ),
        gauge(
            "edgeloop_fleet_machines_owned",
            "machines this node classifies, of those it has seen",
            float(fleet.owned),
        ),
        counter(
            "edgeloop_fleet_windows_skipped",
            "windows and readings left to the fleet member that owns their machine",
            float(fleet.skipped),
        ),
        counter(
            "edgeloop_fleet_member_changes",
            "changes of the member set this node has seen",
            float(fleet.generation),
        ),
    ]


def _machines(snap: Snapshot) -> list[Metric]:
    rows = snap.machines
    return [
        labeled(
            "edgeloop_machine_class",
            "1 for each machine's last predicted class",
            ("machine", "class"),
            {(r.machine, r.last_class): 1.0 for r in rows},
        ),
        labeled(
            "edgeloop_machine_confidence",
            "confidence of each machine's last prediction",
            ("machine",),
            {(r.machine,): r.confidence for r in rows},
        ),
        labeled(
            "edgeloop_machine_state",
            "1 for each machine's badge: OK, FAULT, LOW-CONF or STALE",
            ("machine", "state"),
            {(r.machine, badge(r, snap)): 1.0 for r in rows},
        ),
        labeled(
            "edgeloop_machine_drift",
            "1 for each machine's drift level (ok, suspect, drift)",
            ("machine", "state"),
            {(r.machine, r.drift): 1.0 for r in rows},
        ),
        labeled(
            "edgeloop_machine_windows",
            "windows classified per machine (since it was last tracked)",
            ("machine",),
            {(r.machine,): float(r.windows) for r in rows},
            kind="counter",
        ),
        labeled(
            "edgeloop_machine_idle_seconds",
            "seconds since each machine's last window",
            ("machine",),
            {(r.machine,): r.idle_s for r in rows},
        ),
    ]


def _evidence(ev: Mapping[str, Any]) -> list[Metric]:
    buffer = ev.get("buffer") or {}
    shipper = ev.get("shipper") or {}
    storage = ev.get("storage_errors") or {}
    return [
        labeled(
            "edgeloop_buffer_windows",
            "kept windows on disk: pending (to ship), inflight (sent, not acknowledged), labeled",
            ("state",),
            {(k,): _num(buffer, k) for k in ("pending", "inflight", "labeled")},
        ),
        labeled(
            "edgeloop_buffer_evicted_windows",
            "kept windows dropped to make room, by whether they were labeled",
            ("labeled",),
            {
                ("false",): _num(buffer, "evicted_unlabeled"),
                ("true",): _num(buffer, "evicted_labeled"),
            },
            kind="counter",
        ),
        counter(
            "edgeloop_buffer_acknowledged_windows",
            "kept windows the trainer acknowledged as stored",
            _num(buffer, "acknowledged"),
        ),
        labeled(
            "edgeloop_drift_batches",
            "drift batches to the trainer: sent, delivered (PUBACK), acked (stored), resent",
            ("event",),
            {(k,): _num(shipper, f"batches_{k}") for k in ("sent", "delivered", "acked", "resent")},
            kind="counter",
        ),
        gauge(
            "edgeloop_drift_batches_awaiting_ack",
            "drift batches sent and not yet acknowledged",
            _num(shipper, "awaiting_ack"),
        ),
        labeled(
            "edgeloop_storage_errors",
            "failed writes of the buffer or history, by kind",
            ("kind",),
            {(k,): float(v) for k, v in storage.items()},
            kind="counter",
        ),
        counter(
            "edgeloop_history_dropped",
            "prediction history rows dropped (the recorder fell behind)",
            _num(ev, "history_dropped"),
        ),
    ]
