"""The model-input transform: the rule of protocol/README.md "Model input", to the last bit."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from protocol.errors import EdgeloopError, ModelInputError
from protocol.model_input import ModelInput, normalise

NORM = {"mean": [20.0, 0.5, -3.0, 1e3], "std": [5.0, 0.3, 7.0, 0.1]}
SHAPE = (60, 4)


def _rule(x: np.ndarray, dtype: str = "float32", scale: float = 0.0, zero: int = 0) -> np.ndarray:
    """protocol/README.md "Model input", written out step by step."""
    mean = np.asarray(NORM["mean"], np.float32)
    inv = np.float32(1.0) / np.asarray(NORM["std"], np.float32)
    z = (np.asarray(x, np.float32) - mean) * inv
    if dtype == "float32":
        return z
    info = np.iinfo(dtype)
    q = np.clip(np.rint(z / np.float32(scale)) + np.float32(zero), info.min, info.max)
    return q.astype(dtype)


def _windows(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(np.asarray(NORM["mean"]), np.asarray(NORM["std"]) * 4, size=(n, *SHAPE))
    x[0, :5] = [1e6, -1e6, 1e6, -1e6]  # clips in int8 and uint8
    x[0, 5:10] = [-1e6, 1e6, -1e6, 1e6]
    return x.astype(np.float32)


@pytest.mark.parametrize(
    ("dtype", "scale", "zero"),
    [("float32", 0.0, 0), ("int8", 0.0473, -7), ("int8", 1.0, 0), ("uint8", 0.031, 128)],
)
@pytest.mark.parametrize("n", [1, 32])
def test_the_transform_is_the_documented_rule_bit_for_bit(
    dtype: str, scale: float, zero: int, n: int
) -> None:
    mi = ModelInput.of(NORM, SHAPE, dtype=dtype, quantization=(scale, zero))
    x = _windows(n)
    got = mi(x)
    want = _rule(x, dtype, scale, zero)
    assert got.dtype == np.dtype(dtype) and got.shape == (n, *SHAPE)
    assert got.flags.c_contiguous
    assert np.array_equal(got, want)
    if dtype != "float32":
        info = np.iinfo(dtype)
        assert got.min() == info.min and got.max() == info.max  # the extremes clip


def test_float64_and_list_input_give_the_float32_answer() -> None:
    mi = ModelInput.of(NORM, SHAPE)
    x = _windows(3).astype(np.float64) + 1e-9  # below float32 resolution at these magnitudes
    assert np.array_equal(mi(x), mi(x.astype(np.float32)))
    assert np.array_equal(mi(x.tolist()), mi(x.astype(np.float32)))


def test_the_input_array_is_left_alone() -> None:
    x = _windows(2)
    before = x.copy()
    ModelInput.of(NORM, SHAPE, dtype="int8", quantization=(0.05, 3))(x)
    ModelInput.of(NORM, SHAPE)(x)
    assert np.array_equal(x, before)


def test_rint_rounds_halves_to_even() -> None:
    mi = ModelInput.of({"mean": [0.0], "std": [1.0]}, (4, 1), dtype="int8", quantization=(1.0, 0))
    x = np.array([0.5, 1.5, 2.5, -0.5], np.float32).reshape(1, 4, 1)
    assert mi(x).ravel().tolist() == [0, 2, 2, 0]


def test_empty_normalisation_is_mean_zero_std_one() -> None:
    x = _windows(2)
    assert np.array_equal(ModelInput.of({}, SHAPE)(x), x)


def test_for_tensor_reads_the_interpreters_input_details() -> None:
    details: dict[str, Any] = {
        "shape": np.array([1, 60, 4], np.int32),
        "dtype": np.int8,
        "quantization": (np.float32(0.0473), np.int64(-7)),
    }
    mi = ModelInput.for_tensor(NORM, details)
    assert (mi.dtype, mi.shape, mi.zero_point) == ("int8", SHAPE, -7)
    x = _windows(4)
    assert np.array_equal(mi(x), _rule(x, "int8", float(np.float32(0.0473)), -7))
    float_details = {"shape": [1, 60, 4], "dtype": np.float32, "quantization": (0.0, 0)}
    assert ModelInput.for_tensor(NORM, float_details).dtype == "float32"


def test_normalise_is_the_float32_input() -> None:
    x = _windows(5)
    assert np.array_equal(normalise(x, NORM), ModelInput.of(NORM, SHAPE)(x))
    assert normalise(x, NORM).dtype == np.float32


@pytest.mark.parametrize(
    ("kwargs", "kind", "match"),
    [
        (
            {"normalisation": {"mean": [0.0] * 4, "std": [1.0, 0.0, 1.0, 1.0]}},
            "normalisation",
            "≤ 0",
        ),
        ({"normalisation": {"mean": [0.0] * 4, "std": [1.0, -2, 1, 1]}}, "normalisation", "≤ 0"),
        ({"normalisation": {"mean": [0.0] * 4, "std": [1.0, 1e-46, 1, 1]}}, "normalisation", "≤ 0"),
        ({"normalisation": {"mean": [0.0] * 4, "std": [1, 1, 1, 1e-39]}}, "normalisation", "≤ 0"),
        (
            {"normalisation": {"mean": [float("nan")] * 4, "std": [1] * 4}},
            "normalisation",
            "finite",
        ),
        (
            {"normalisation": {"mean": [0.0] * 4, "std": [float("inf")] * 4}},
            "normalisation",
            "finite",
        ),
        ({"normalisation": {"mean": [1e39] * 4, "std": [1] * 4}}, "normalisation", "finite"),
        ({"normalisation": {"mean": [0.0] * 3, "std": [1] * 3}}, "normalisation", "3 values for 4"),
        ({"normalisation": {"mean": [0.0] * 4, "std": [1] * 5}}, "normalisation", "5 values for 4"),
        ({"normalisation": {"mean": [0.0] * 4}}, "normalisation", "keys"),
        ({"normalisation": {"mean": "0000", "std": [1] * 4}}, "normalisation", "str"),
        ({"normalisation": {"mean": [True] * 4, "std": [1] * 4}}, "normalisation", "numbers"),
        ({"normalisation": [[0.0] * 4, [1.0] * 4]}, "normalisation", "expected"),
        ({"dtype": "int16", "quantization": (0.1, 0)}, "dtype", "int16"),
        ({"dtype": np.float16}, "dtype", "float16"),
        ({"dtype": "not-a-dtype"}, "dtype", "not a dtype"),
        ({"dtype": "int8", "quantization": (0.0, 0)}, "quantization", "scale"),
        ({"dtype": "int8", "quantization": (-0.1, 0)}, "quantization", "scale"),
        ({"dtype": "int8", "quantization": (float("nan"), 0)}, "quantization", "scale"),
        ({"dtype": "int8", "quantization": (1e-50, 0)}, "quantization", "scale"),
        ({"dtype": "int8", "quantization": (0.1, 128)}, "quantization", "zero point"),
        ({"dtype": "uint8", "quantization": (0.1, -1)}, "quantization", "zero point"),
        ({"dtype": "int8", "quantization": (0.1, 0.5)}, "quantization", "zero point"),
        ({"dtype": "int8", "quantization": (0.1,)}, "quantization", "pair"),
        ({"shape": (60,)}, "shape", "not"),
        ({"shape": (0, 4)}, "shape", "empty"),
        ({"shape": (60.0, 4)}, "shape", "not"),
    ],
)
def test_a_model_that_cannot_be_fed_is_refused_with_the_reason(
    kwargs: dict[str, Any], kind: str, match: str
) -> None:
    args: dict[str, Any] = {"normalisation": NORM, "shape": SHAPE, **kwargs}
    with pytest.raises(ModelInputError, match=match) as err:
        ModelInput.of(args.pop("normalisation"), args.pop("shape"), **args)
    assert err.value.kind == kind
    assert isinstance(err.value, EdgeloopError) and isinstance(err.value, ValueError)


@pytest.mark.parametrize("shape", [(60, 4), (1, 59, 4), (1, 60, 3), (2, 1, 60, 4), ()])
def test_windows_of_the_wrong_shape_are_refused(shape: tuple[int, ...]) -> None:
    mi = ModelInput.of(NORM, SHAPE, dtype="int8", quantization=(0.1, 0))
    with pytest.raises(ModelInputError, match=r"the model takes \(n, 60, 4\)") as err:
        mi(np.zeros(shape, np.float32))
    assert err.value.kind == "shape"
    with pytest.raises(ModelInputError, match="expected"):
        normalise(np.zeros((60, 4)), NORM)
    with pytest.raises(ModelInputError, match="3 values for 4"):
        normalise(np.zeros((1, 60, 4)), {"mean": [0.0] * 3, "std": [1.0] * 3})
