"""A model that does not quantize well still ships: int8 first, then float16, then float32.

The conversions are replaced by recorded outcomes (agreements), so the order of attempts and
the choice are checked without TensorFlow; the real conversions are covered by test_trainer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from jetson_trainer.build import convert
from jetson_trainer.build.convert import Variant, convert_with_fallback, pick_variant
from jetson_trainer.errors import TrainerError

NORM = {"mean": [0.0] * 4, "std": [1.0] * 4}


def _fake(agreements: dict[str, float], calls: list[str]) -> Any:
    def convert_and_verify(
        keras_model: Any, x_rep: Any, x_held: Any, quantizations: tuple[str, ...], **_: Any
    ) -> dict[str, Variant]:
        out = {}
        for q in quantizations:
            calls.append(q)
            out[q] = Variant(q, q.encode(), agreements[q], 0.1, 100, 5.0, True)
        return out

    return convert_and_verify


@pytest.mark.parametrize(
    ("agreements", "tried", "shipped"),
    [
        ({"int8": 0.999, "float16": 1.0, "float32": 1.0}, ["int8"], "int8"),
        ({"int8": 0.98, "float16": 0.999, "float32": 1.0}, ["int8", "float16"], "float16"),
        (
            {"int8": 0.98, "float16": 0.99, "float32": 1.0},
            ["int8", "float16", "float32"],
            "float32",
        ),
    ],
)
def test_int8_then_float16_then_float32(
    monkeypatch: pytest.MonkeyPatch, agreements: dict[str, float], tried: list[str], shipped: str
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(convert, "convert_and_verify", _fake(agreements, calls))
    x = np.zeros((4, 60, 4), np.float32)
    variants = convert_with_fallback(object(), x, x, "int8", norm=NORM)
    assert calls == tried  # a later quantization is converted only if the earlier ones failed
    assert pick_variant(variants, "int8").quantization == shipped


def test_nothing_passes_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    agreements = {"int8": 0.9, "float16": 0.9, "float32": 0.9}
    monkeypatch.setattr(convert, "convert_and_verify", _fake(agreements, calls))
    x = np.zeros((4, 60, 4), np.float32)
    variants = convert_with_fallback(object(), x, x, "int8", norm=NORM)
    assert calls == ["int8", "float16", "float32"]
    with pytest.raises(TrainerError, match="no converted variant passed"):
        pick_variant(variants, "int8")
