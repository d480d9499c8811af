"""From one classified micro-batch to what leaves the worker: prediction payloads, history rows
and the latencies the node's statistics take. Pure: the clock readings come in, nothing is sent.

>>> import numpy as np
>>> from protocol import CLASSES, Window
>>> from pi_edge.loop.drift import Verdicts
>>> w = Window("m01", 7, 1_000_000, np.zeros((60, 4), np.float32), label=0)
>>> probs = np.array([[0.9, 0.05, 0.03, 0.02]], np.float32)
>>> out = batch_outputs(
...     [w], [3_000_000], probs, np.array([0]), Verdicts.quiet(1), CLASSES, 4,
...     Clock(start_ns=4_000_000, inferred_ns=5_000_000, published_ns=6_000_000),
...     lambda m: f"p/{m}",
... )
>>> out.messages[0][0], out.history[0].label, out.history[0].truth, out.latencies_ms
('p/m01', 'normal', 'normal', [5.0])
>>> import json; json.loads(out.messages[0][1])["latency_ms"]
{'queue': 1.0, 'inference': 1.0, 'publish': 1.0, 'total': 5.0, 'transport': 2.0}
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from protocol import Window
from protocol.messages import prediction_json

from ..loop.drift import DriftState, Verdicts

__all__ = ["BatchOutputs", "Clock", "HistoryRow", "batch_outputs"]

_STATE_LABELS = tuple(state.label for state in DriftState)


class HistoryRow(NamedTuple):
    """One prediction in the local history (the order of history.COLUMNS)."""

    ts: float
    machine: str
    seq: int
    label: str
    confidence: float
    truth: str | None
    model_version: int
    drift: str
    ood: bool
    latency_ms: float


@dataclass(frozen=True, slots=True)
class Clock:
    """Wall-clock readings (ns) around one batch: taken, inferred, handed to paho."""

    start_ns: int
    inferred_ns: int
    published_ns: int


@dataclass(frozen=True, slots=True)
class BatchOutputs:
    """The batch's (topic, payload) predictions, its history rows and end-to-end latencies."""

    messages: list[tuple[str, bytes]]
    history: list[HistoryRow]
    latencies_ms: list[float]


def batch_outputs(
    windows: Sequence[Window],
    received_ns: Sequence[int],
    probs: npt.NDArray[np.float32],
    top: npt.NDArray[np.int64],
    verdicts: Verdicts,
    classes: tuple[str, ...],
    version: int,
    clock: Clock,
    topic_of: Callable[[str], str],
    machine_type: str | None = None,
) -> BatchOutputs:
    """Prediction JSON, history row and total latency per window of one classified batch.

    The windows are of one machine type: `classes` are its model's; `machine_type` names it in
    each prediction (None, left out: the built-in type).

    Latency spans per window: transport (sensor → received, if the sensor stamped its time),
    queue (received → batch taken), inference and publish (per batch), total (origin → paho).
    """
    n = len(windows)
    received = np.fromiter(received_ns, np.int64, n)
    sensor = np.fromiter((w.timestamp_ns for w in windows), np.int64, n)
    origin = np.where(sensor > 0, sensor, received)
    totals = np.round((clock.published_ns - origin) / 1e6, 3).tolist()
    queued = np.round((clock.start_ns - received) / 1e6, 3).tolist()
    transport = np.round((received - sensor) / 1e6, 3).tolist()
    inference_ms = round((clock.inferred_ns - clock.start_ns) / 1e6, 3)
    publish_ms = round((clock.published_ns - clock.inferred_ns) / 1e6, 3)
    stamps = {"inferred": clock.inferred_ns, "published": clock.published_ns}
    published_s = clock.published_ns / 1e9
    drift_states = [_STATE_LABELS[v] for v in verdicts.states.tolist()]
    messages: list[tuple[str, bytes]] = []
    history: list[HistoryRow] = []
    per_window = zip(
        windows,
        received.tolist(),
        probs.tolist(),
        top.tolist(),
        drift_states,
        verdicts.flags.tolist(),
        verdicts.ood_score.tolist(),
        totals,
        queued,
        transport,
        strict=True,
    )
    for w, got_ns, p, k, drift, flag, ood_score, total, queued_ms, transport_ms in per_window:
        sensor_ns = w.timestamp_ns
        lat = {"queue": queued_ms, "inference": inference_ms, "publish": publish_ms, "total": total}
        if sensor_ns > 0:
            lat["transport"] = transport_ms
        label, conf = classes[k], p[k]
        truth = None if w.label is None else classes[int(w.label)]  # resolved at intake
        ood = flag == 1
        payload = prediction_json(
            w.machine,
            w.seq,
            label,
            conf,
            p,
            version,
            classes,
            truth,
            drift,
            ood,
            round(ood_score, 3),
            {"sensor": sensor_ns, "received": got_ns, **stamps},
            lat,
            machine_type,
        )
        messages.append((topic_of(w.machine), payload))
        history.append(
            HistoryRow(
                published_s, w.machine, w.seq, label, conf, truth, version, drift, ood, total
            )
        )
    return BatchOutputs(messages, history, totals)
