"""The TFLite runtime and bundle vetting with a real trained model; no broker."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pi_edge import BatchPolicy, Classifier, Expected, ModelError, vet_bundle
from protocol import CHANNELS, CLASSES, Manifest, encode_bundle

from ._model import EdgeModels

EXPECTED = Expected(CLASSES, CHANNELS, 60)
REPO = Path(__file__).resolve().parents[2]


def _vet(models: EdgeModels, data: bytes, allow_unsigned: bool = False) -> object:
    return vet_bundle(
        data, public_key=models.public_key, allow_unsigned=allow_unsigned, expected=EXPECTED
    )


@pytest.mark.parametrize("int8", [False, True], ids=["float32-input", "int8-input"])
def test_classifier_matches_labels_and_is_batch_size_independent(
    models: EdgeModels, int8: bool
) -> None:
    vetted = _vet(models, models.bundle(1, int8=int8))
    clf = vetted.classifier  # type: ignore[attr-defined]
    assert clf.input_dtype == (np.int8 if int8 else np.float32)
    probs = clf.predict(models.x_test)
    assert probs.shape == (len(models.x_test), 4) and probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-2)  # int8 softmax: 1/256 steps
    assert (probs.argmax(axis=1) == models.y_test).mean() > 0.8
    one_by_one = np.concatenate([clf.predict(models.x_test[i : i + 1]) for i in range(20)])
    assert np.allclose(one_by_one, probs[:20], atol=1e-5)


def test_classifier_reuses_interpreters_for_repeated_batch_sizes(models: EdgeModels) -> None:
    vetted = _vet(models, models.bundle(1))
    clf = Classifier(
        vetted.bundle.model,
        vetted.bundle.manifest,  # type: ignore[attr-defined]
        policy=BatchPolicy(32, 0.001),
        cache_sizes=3,
    )
    for n in (1, 32, 1, 32, 5, 1, 32):
        clf.predict(models.x_test[:n])
    assert clf.reallocations == 3 and clf.interpreters == 3
    clf.predict(models.x_test[:7])  # a fourth size re-uses the least recently used one
    assert clf.reallocations == 4 and clf.interpreters == 3
    assert clf.predict(models.x_test[:100]).shape == (100, 4)  # chunked by batch max


def test_unsigned_bundle_is_refused_unless_insecure_dev(models: EdgeModels) -> None:
    with pytest.raises(ModelError, match="unsigned") as err:
        _vet(models, models.bundle(2, signed=False))
    assert err.value.kind == "signature"
    with pytest.raises(ModelError, match="unsigned"):  # a key is configured: never unsigned
        _vet(models, models.bundle(2, signed=False), allow_unsigned=True)
    unsigned = models.bundle(2, signed=False)
    assert vet_bundle(unsigned, public_key=None, allow_unsigned=True, expected=EXPECTED)


def test_tampered_bundle_is_refused(models: EdgeModels) -> None:
    data = bytearray(models.bundle(2))
    data[len(data) // 2] ^= 0x01
    with pytest.raises(ModelError, match="signature") as err:
        _vet(models, bytes(data))
    assert err.value.kind == "signature"


def test_bundle_failing_its_golden_vectors_is_refused(models: EdgeModels) -> None:
    golden = [{"x": g["x"], "probs": g["probs"][::-1]} for g in models.manifest.golden]
    with pytest.raises(ModelError, match="golden vectors fail") as err:
        _vet(models, models.bundle(2, golden=golden))
    assert err.value.kind == "golden"


def test_incompatible_bundle_is_refused(models: EdgeModels) -> None:
    with pytest.raises(ModelError, match="classes") as err:
        # (train_stats describe the trainer's classes; a manifest must describe its own)
        _vet(models, models.bundle(2, classes=("a", "b", "c", "d"), train_stats={}))
    assert err.value.kind == "incompatible"
    with pytest.raises(ModelError, match="window_length"):
        vet_bundle(
            models.bundle(2),
            public_key=models.public_key,
            allow_unsigned=False,
            expected=Expected(CLASSES, CHANNELS, 30),
        )


def test_manifest_that_lies_about_the_model_shape_is_refused(models: EdgeModels) -> None:
    m = replace(models.manifest, version=2, window_length=30, golden=[])
    data = encode_bundle(m, models.model, models.private_key.sign)
    with pytest.raises(ModelError, match="input shape") as err:
        vet_bundle(
            data,
            public_key=models.public_key,
            allow_unsigned=False,
            expected=Expected(CLASSES, CHANNELS, 30),
        )
    assert err.value.kind == "incompatible"


@pytest.mark.parametrize(
    "data", [b"", b"EB\x01", b"XX" + bytes(40)], ids=["empty", "short", "magic"]
)
def test_malformed_bundles_are_refused_by_kind(models: EdgeModels, data: bytes) -> None:
    with pytest.raises(ModelError) as err:
        _vet(models, data)
    assert err.value.kind in {"truncated", "bad_magic"}


def test_pi_edge_never_imports_tensorflow_sklearn_or_pandas(models: EdgeModels) -> None:
    code = f"""
import json, sys
import numpy as np
import pi_edge
from pi_edge import Expected, vet_bundle
from pi_edge.__main__ import main
from pi_edge.service import EdgeService
from protocol import CHANNELS, CLASSES, load_public_key
v = vet_bundle(open({str(models.bundle_path)!r}, "rb").read(),
               public_key=load_public_key({str(models.public_key_path)!r}),
               allow_unsigned=False, expected=Expected(CLASSES, CHANNELS, 60))
p = v.classifier.predict(np.load({str(models.x_test_path)!r})[:8])
banned = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "sklearn", "pandas",
                                                               "keras", "matplotlib"))
print(json.dumps({{"banned": banned, "shape": list(p.shape), "runtime": v.classifier.runtime}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"banned": [], "shape": [8, 4], "runtime": "ai_edge_litert.interpreter"}


def test_manifest_roundtrip_sanity(models: EdgeModels) -> None:
    assert Manifest.from_dict(models.manifest.to_dict()) == models.manifest
