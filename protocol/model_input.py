"""What a model sees: raw windows (n, T, C) → the exact array handed to the TFLite interpreter.

Both sides must feed the model identically, so the definition lives here (as the features do
in `protocol.features`): the Pi's classifier calls it on every micro-batch, the trainer on
everything it trains, converts, checks, scores and writes as golden vectors. The rule:

1. normalise per channel in float32: ``z = (x − mean) · (1 / std)``, with `mean` and `std`
   the manifest's `normalisation` cast to float32 and ``1 / std`` taken in float32 (an empty
   `normalisation` means mean 0, std 1);
2. a float32 input tensor gets `z`; an int8 or uint8 one (scale `s`, zero point `zp`, from the
   tensor's quantization) gets ``clip(rint(z / s) + zp, dtype min, dtype max)`` computed in
   float32, then cast (rint: halves to even).

>>> norm = {"mean": [1.0, 0.0], "std": [2.0, 0.5]}
>>> x = np.array([[[1.0, 0.0], [3.0, 1.0], [5.0, -1.0]]], np.float32)
>>> ModelInput.of(norm, (3, 2))(x)[0].tolist()
[[0.0, 0.0], [1.0, 2.0], [2.0, -2.0]]
>>> int8 = ModelInput.of(norm, (3, 2), dtype="int8", quantization=(0.02, -3))
>>> int8(x)[0].tolist()  # 2.0 / 0.02 − 3 = 97; −2.0 / 0.02 − 3 = −103
[[-3, -3], [47, 97], [97, -103]]
>>> int8(x * 100)[0, 2].tolist()  # far outside the scale's range: clipped
[127, -128]
>>> ModelInput.of(norm, (3, 2))(x[0])  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
protocol.errors.ModelInputError: windows have shape (3, 2), the model takes (n, 3, 2); stack ...
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import ModelInputError

__all__ = ["INPUT_DTYPES", "ModelInput", "normalise"]

INPUT_DTYPES = ("float32", "int8", "uint8")
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _floats(name: str, values: Any, n: int | None = None) -> tuple[float, ...]:
    """`values` as (n) numbers finite in float32, or ModelInputError naming `name`."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ModelInputError(
            f"normalisation {name} is a {type(values).__name__}, expected a list of numbers",
            "normalisation",
        )
    if n is not None and len(values) != n:
        raise ModelInputError(
            f"normalisation {name} has {len(values)} values for {n} channels; "
            "the manifest and the model disagree",
            "normalisation",
        )
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ModelInputError(
                f"normalisation {name} holds {v!r}, expected numbers", "normalisation"
            )
        f = float(v)
        if not math.isfinite(f) or abs(f) > _FLOAT32_MAX:
            raise ModelInputError(
                f"normalisation {name} holds {f!r}, not finite in float32", "normalisation"
            )
        out.append(f)
    return tuple(out)


@dataclass(frozen=True, slots=True, eq=False)
class ModelInput:
    """The transform for one model: its window shape, normalisation and input quantization.

    Build it once per model (`of`, or `for_tensor` from the interpreter's input details) and
    call it per batch: (n, T, C) raw windows in any float dtype → a new C-contiguous array of
    `dtype`. Windows are not checked for NaN/inf (the window codecs refuse those already).
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    window_length: int
    dtype: str = "float32"
    scale: float = 0.0  # of an int8/uint8 input tensor; unused for float32
    zero_point: int = 0
    _mean: npt.NDArray[np.float32] = field(init=False, repr=False)
    _inv_std: npt.NDArray[np.float32] = field(init=False, repr=False)
    _shape: tuple[int, int] = field(init=False, repr=False)
    _np_dtype: np.dtype[Any] = field(init=False, repr=False)
    _quantized: bool = field(init=False, repr=False)
    _scale: np.float32 = field(init=False, repr=False)
    _zero: np.float32 = field(init=False, repr=False)
    _lo: int = field(init=False, repr=False)
    _hi: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        std_values = _floats("std", self.std)
        n = len(std_values)
        mean_values = _floats("mean", self.mean, n)
        wl = self.window_length
        if isinstance(wl, bool) or not isinstance(wl, int) or wl < 1 or n < 1:
            raise ModelInputError(
                f"a model input of {wl!r} samples × {n} channels is empty or not whole", "shape"
            )
        mean = np.asarray(mean_values, np.float32)
        std = np.asarray(std_values, np.float32)
        with np.errstate(divide="ignore", over="ignore"):
            inv_std = np.float32(1.0) / std
        if not (std > 0).all() or not np.isfinite(inv_std).all():
            raise ModelInputError(
                f"normalisation std {list(self.std)} has a value ≤ 0 or too small for float32 "
                "(1/std overflows); the model cannot be fed",
                "normalisation",
            )
        if self.dtype not in INPUT_DTYPES:
            raise ModelInputError(
                f"model input dtype {self.dtype!r} is not one of {', '.join(INPUT_DTYPES)}; "
                "convert the model with a float32, int8 or uint8 input",
                "dtype",
            )
        np_dtype = np.dtype(self.dtype)
        lo = hi = 0
        scale = np.float32(0.0)
        if np_dtype != np.float32:
            info = np.iinfo(np_dtype)
            lo, hi = int(info.min), int(info.max)
            s = self.scale
            if isinstance(s, bool) or not isinstance(s, (int, float)):
                raise ModelInputError(f"input scale {s!r} is not a number", "quantization")
            scale = np.float32(s)
            if not (math.isfinite(float(scale)) and scale > 0):
                raise ModelInputError(
                    f"{self.dtype} input scale {s!r} is not a finite number > 0 in float32; "
                    "the model's input quantization is broken",
                    "quantization",
                )
            zp = self.zero_point
            if isinstance(zp, bool) or not isinstance(zp, int) or not lo <= zp <= hi:
                raise ModelInputError(
                    f"{self.dtype} input zero point {zp!r} is not an integer in {lo}..{hi}",
                    "quantization",
                )
        set_ = object.__setattr__
        set_(self, "mean", mean_values)
        set_(self, "std", std_values)
        set_(self, "_mean", mean.reshape(1, 1, n))
        set_(self, "_inv_std", inv_std.reshape(1, 1, n))
        set_(self, "_shape", (self.window_length, n))
        set_(self, "_np_dtype", np_dtype)
        set_(self, "_quantized", np_dtype != np.float32)
        set_(self, "_scale", scale)
        set_(self, "_zero", np.float32(self.zero_point))
        set_(self, "_lo", lo)
        set_(self, "_hi", hi)

    @classmethod
    def of(
        cls,
        normalisation: Mapping[str, Sequence[float]],
        shape: Sequence[int],
        *,
        dtype: Any = "float32",
        quantization: Sequence[float] = (0.0, 0),
    ) -> ModelInput:
        """From a manifest's `normalisation`, the window shape (T, C) and the input tensor's
        dtype and (scale, zero point); a float32 input ignores the quantization."""
        if (
            isinstance(shape, (str, bytes))
            or not isinstance(shape, Sequence)
            or len(shape) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in shape)
        ):
            raise ModelInputError(f"window shape {shape!r} is not (T, C)", "shape")
        t, c = int(shape[0]), int(shape[1])
        if not isinstance(normalisation, Mapping):
            raise ModelInputError(
                f"normalisation is a {type(normalisation).__name__}, expected "
                "{'mean': [C], 'std': [C]}",
                "normalisation",
            )
        if not normalisation:
            mean: Sequence[float] = (0.0,) * c
            std: Sequence[float] = (1.0,) * c
        elif set(normalisation) != {"mean", "std"}:
            raise ModelInputError(
                f"normalisation has keys {sorted(normalisation)}, expected 'mean' and 'std'",
                "normalisation",
            )
        else:
            std = _floats("std", normalisation["std"], c)
            mean = _floats("mean", normalisation["mean"], c)
        try:
            name = np.dtype(dtype).name
        except TypeError as exc:
            raise ModelInputError(f"model input dtype {dtype!r} is not a dtype", "dtype") from exc
        scale, zero = (0.0, 0)
        if name in INPUT_DTYPES and name != "float32":
            scale, zero = _quantization(quantization)
        return cls(tuple(mean), tuple(std), t, name, scale, zero)

    @classmethod
    def for_tensor(
        cls, normalisation: Mapping[str, Sequence[float]], details: Mapping[str, Any]
    ) -> ModelInput:
        """From a manifest's `normalisation` and the interpreter's `get_input_details()[0]`."""
        shape = tuple(int(v) for v in details["shape"])
        if len(shape) != 3:
            raise ModelInputError(
                f"model input tensor has shape {shape}, expected (batch, T, C)", "shape"
            )
        return cls.of(
            normalisation,
            shape[1:],
            dtype=details["dtype"],
            quantization=details.get("quantization", (0.0, 0)),
        )

    @property
    def shape(self) -> tuple[int, int]:
        """(T, C) of one window."""
        return self._shape

    def __call__(self, x: npt.ArrayLike) -> npt.NDArray[Any]:
        """(n, T, C) raw windows → the (n, T, C) array of `dtype` the interpreter gets."""
        a = np.asarray(x, dtype=np.float32)
        if a.shape[1:] != self._shape:  # also catches every ndim but 3
            t, c = self._shape
            raise ModelInputError(
                f"windows have shape {a.shape}, the model takes (n, {t}, {c}); "
                "stack windows into (n, T, C), with n = 1 for a single window",
                "shape",
            )
        z = (a - self._mean) * self._inv_std
        if not self._quantized:
            return z
        z /= self._scale  # in place from here: no temporaries per step
        np.rint(z, out=z)
        z += self._zero
        np.clip(z, self._lo, self._hi, out=z)
        return z.astype(self._np_dtype)


def _quantization(q: Any) -> tuple[float, int]:
    """(scale, zero point) from an interpreter's `quantization` pair, as Python numbers."""
    if isinstance(q, (str, bytes)) or not isinstance(q, Sequence) or len(q) != 2:
        raise ModelInputError(
            f"input quantization {q!r} is not a (scale, zero point) pair", "quantization"
        )
    scale, zero = q
    if isinstance(scale, np.generic):
        scale = scale.item()
    if isinstance(zero, np.generic):
        zero = zero.item()
    if isinstance(zero, float) and zero.is_integer():
        zero = int(zero)
    return scale, zero


def normalise(x: npt.ArrayLike, normalisation: Mapping[str, Sequence[float]]) -> npt.NDArray[Any]:
    """(n, T, C) raw windows → the float32 input of a float32-input model (and of Keras).

    >>> normalise(np.full((1, 2, 1), 3.0), {"mean": [1.0], "std": [4.0]}).tolist()
    [[[0.5], [0.5]]]
    """
    a = np.asarray(x, dtype=np.float32)
    if a.ndim != 3:
        raise ModelInputError(
            f"windows have shape {a.shape}, expected (n, T, C); stack windows into (n, T, C)",
            "shape",
        )
    return ModelInput.of(normalisation, a.shape[1:])(a)
