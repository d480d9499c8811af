"""The Pi and the trainer hand the model bit-identical input for the same windows.

Both loaders run as they do in production (pi_edge's `Classifier`, the trainer's `LiteModel`),
on the real converted test models (float32 input, and int8 input with the converter's own
scale and zero point); only the interpreter class is swapped for a subclass that records every
array `set_tensor` receives.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from jetson_trainer.build import interpreter as trainer_interpreter
from jetson_trainer.build.artifacts import golden_vectors
from jetson_trainer.build.interpreter import LiteModel
from pi_edge import Classifier
from pi_edge.model import classifier as pi_classifier
from protocol import Manifest

from ._model import EdgeModels

REPO = Path(__file__).resolve().parents[2]


def _recording(real: type, seen: list[np.ndarray]) -> type:
    """The Interpreter class `real`, recording a copy of every `set_tensor` value in `seen`."""

    class Recording(real):  # type: ignore[misc, valid-type]
        def set_tensor(self, tensor_index: int, value: np.ndarray) -> None:
            seen.append(np.array(value, copy=True))
            super().set_tensor(tensor_index, value)

    return Recording


def _windows(models: EdgeModels, manifest: Manifest, n: int, seed: int) -> np.ndarray:
    """Real test windows, random noise on them, and windows far outside the training range."""
    rng = np.random.default_rng(seed)
    x = models.x_test[rng.choice(len(models.x_test), n)].astype(np.float64)
    std = np.asarray(manifest.normalisation["std"])
    x += rng.normal(0.0, 1.0, size=x.shape) * std * rng.uniform(0, 3, size=(n, 1, 1))
    x[0, :20:2] = 1e4  # z ≫ the int8 input range: clips to 127
    x[0, 1:20:2] = -1e4  # and to −128
    if n > 2:
        x[1] = rng.uniform(-1e3, 1e3, size=x.shape[1:])
    return x.astype(np.float32)


def _both_sides(
    model: bytes, manifest: Manifest, x: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, np.ndarray]:
    """(arrays the Pi set, arrays the trainer set, the Pi's probabilities, the trainer's)."""
    pi_seen: list[np.ndarray] = []
    trainer_seen: list[np.ndarray] = []
    real, runtime = pi_classifier.interpreter_class()
    assert real is trainer_interpreter._interpreter_class()  # the same runtime on both sides
    monkeypatch.setattr(pi_classifier, "_loaded", (_recording(real, pi_seen), runtime))
    rec: Callable[[], type] = lambda: _recording(real, trainer_seen)  # noqa: E731
    monkeypatch.setattr(trainer_interpreter, "_interpreter_class", rec)
    clf = Classifier(model, manifest)
    lite = LiteModel(model, manifest.normalisation)
    pi_probs = clf.predict(x)
    trainer_probs = lite.predict(x, batch_size=clf.policy.max_size)
    return pi_seen, trainer_seen, pi_probs, trainer_probs


@pytest.mark.parametrize("int8", [False, True], ids=["float32-input", "int8-input"])
@pytest.mark.parametrize("n", [1, 32, 100])
def test_pi_and_trainer_feed_the_model_bit_identical_input(
    models: EdgeModels, monkeypatch: pytest.MonkeyPatch, int8: bool, n: int
) -> None:
    model = models.int8_model if int8 else models.model
    manifest = models.int8_manifest if int8 else models.manifest
    x = _windows(models, manifest, n, seed=n)
    pi_seen, trainer_seen, pi_probs, trainer_probs = _both_sides(model, manifest, x, monkeypatch)
    assert len(pi_seen) == len(trainer_seen) == -(-n // 64)  # one set_tensor per 64 windows
    want = np.int8 if int8 else np.float32
    for pi_in, trainer_in in zip(pi_seen, trainer_seen, strict=True):
        assert pi_in.dtype == trainer_in.dtype == want
        assert pi_in.shape == trainer_in.shape and pi_in.shape[1:] == manifest.input_shape
        assert np.array_equal(pi_in, trainer_in)
    fed = np.concatenate(pi_seen)
    assert len(fed) == n
    if int8:
        assert fed.min() == -128 and fed.max() == 127  # the extreme windows clip
        assert len(np.unique(fed)) > 20  # and the rest is spread over the int8 range
    # the same input to the same runtime: the same probabilities, to the bit
    assert np.array_equal(pi_probs, trainer_probs)


@pytest.mark.parametrize("int8", [False, True], ids=["float32-input", "int8-input"])
def test_the_pi_reproduces_the_trainers_golden_vectors_exactly(
    models: EdgeModels, int8: bool
) -> None:
    model = models.int8_model if int8 else models.model
    manifest = models.int8_manifest if int8 else models.manifest
    golden = golden_vectors(model, models.x_test, models.y_test, manifest.normalisation)
    clf = Classifier(model, replace(manifest, golden=golden, golden_tolerance=0.0))
    assert clf.check_golden() == len(golden) == 8  # max |Δp| is 0: tolerance 0 passes


def _runtime_imports(path: Path) -> list[str]:
    """Names of the TFLite runtimes `path` imports or reaches (`tf.lite.Interpreter`)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found += [node.module] if node.module.split(".")[0] in _RUNTIMES else []
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in _RUNTIMES]
        elif isinstance(node, ast.Attribute) and node.attr == "Interpreter":
            found.append(ast.unparse(node))
        elif isinstance(node, ast.Constant) and node.value in {
            f"{r}.interpreter" for r in _RUNTIMES
        }:
            found.append(str(node.value))
    return found


_RUNTIMES = {"ai_edge_litert", "tflite_runtime"}


@pytest.mark.parametrize(
    ("package", "loader"),
    [
        ("pi_edge", "pi_edge/model/classifier.py"),
        ("jetson_trainer", "jetson_trainer/build/interpreter.py"),
    ],
)
def test_each_role_loads_tflite_interpreters_in_one_module(package: str, loader: str) -> None:
    loaders = {
        str(p.relative_to(REPO)): names
        for p in sorted((REPO / package).rglob("*.py"))
        if (names := _runtime_imports(p))
    }
    assert list(loaders) == [loader], loaders
