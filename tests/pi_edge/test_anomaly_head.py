"""A classifier with an anomaly head (issue 24): the manifest that announces it, and how a node
turns the head's [u, r] into `anomaly` — pure pieces, no runtime, no broker."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pi_edge.model.anomaly_head import head_flags, headed_probabilities
from protocol import BundleError, Manifest

GOLDEN = [
    {"x": [[0.0] * 4] * 60, "probs": [0.9, 0.1]},
    {"x": [[1.0] * 4] * 60, "probs": [0.2, 0.8]},
]


def _headed(**anomaly: object) -> Manifest:
    return Manifest(
        version=2,
        model_sha256="0" * 64,
        model_bytes=1,
        classes=("normal", "bearing_fault"),
        golden=GOLDEN,
        anomaly={"threshold": 4.0, "method": "mahalanobis-direction", **anomaly},
    )


def test_a_headed_manifest_round_trips_and_says_so() -> None:
    m = _headed(golden=[[0.1, -1.0], [0.9, 0.2]])
    back = Manifest.from_dict(m.to_dict())
    assert back == m and back.has_head and back.task == "classify"
    plain = dataclasses.replace(m, anomaly=None)
    assert not plain.has_head and "anomaly" not in plain.to_dict()


@pytest.mark.parametrize(
    "golden",
    [None, [[0.1, -1.0]], [[0.1, -1.0], [0.9]], [[0.1, -1.0], [0.9, float("nan")]]],
)
def test_a_headed_manifest_needs_the_head_s_golden_output_for_each_golden_vector(
    golden: object,
) -> None:
    with pytest.raises(BundleError, match="golden"):
        _headed(**({} if golden is None else {"golden": golden}))


def test_an_anomaly_model_s_manifest_takes_no_head_golden() -> None:
    with pytest.raises(BundleError, match="anomaly must have the fields"):
        Manifest(
            version=1,
            model_sha256="0" * 64,
            model_bytes=1,
            classes=("normal",),
            task="anomaly",
            anomaly={"threshold": 1.0, "method": "mahalanobis", "golden": []},
        )


def test_anomaly_is_unlike_normal_and_not_recognised_and_only_that() -> None:
    head = np.array(
        [
            [0.49, -1.0],  # just under the threshold, healthy: normal
            [0.51, -1.0],  # just over, the classifier said healthy: anomaly
            [0.99, 0.0],  # far, but on its class's direction (r = 0 is recognised)
            [0.99, -0.01],  # far, just off its class's direction: anomaly
        ],
        np.float32,
    )
    assert head_flags(head).tolist() == [False, True, False, True]


def test_headed_probabilities_put_anomaly_on_top_and_keep_the_rest() -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=200).astype(np.float32)
    head = np.stack([rng.uniform(0, 1, 200), rng.uniform(-2, 1, 200)], axis=1).astype(np.float32)
    out, ratio = headed_probabilities(probs, head)
    flagged = head_flags(head)
    assert out.shape == (200, 4) and np.allclose(out.sum(axis=1), 1.0, atol=1e-5)
    assert (out.argmax(axis=1) == 3).tolist() == flagged.tolist()
    assert np.array_equal(out[~flagged, :3], probs[~flagged]) and not out[~flagged, 3].any()
    assert np.allclose(ratio, head[:, 0] / (1 - head[:, 0]), rtol=1e-5)
    assert np.allclose(out[flagged, 3], np.minimum(1.0, ratio[flagged] / 2), atol=1e-6)
