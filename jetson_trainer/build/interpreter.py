"""Run a .tflite model with the LiteRT interpreter (the runtime the Pi uses), and time it.

The only module that picks the TFLite runtime: `ai_edge_litert`, else `tensorflow.lite`.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..errors import TrainerError

__all__ = ["LiteModel", "micros_per_window"]


def _interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - the trainer extra installs ai-edge-litert
        import tensorflow as tf

        return tf.lite.Interpreter
    return Interpreter


class LiteModel:
    """A TFLite flatbuffer loaded into a LiteRT interpreter with a resizable batch dimension."""

    def __init__(self, model: bytes, *, num_threads: int = 1) -> None:
        try:
            self._interp = _interpreter_class()(model_content=model, num_threads=num_threads)
        except (ValueError, RuntimeError) as exc:
            raise TrainerError(f"LiteRT cannot load the model ({len(model)} bytes): {exc}") from exc
        self._input = self._interp.get_input_details()[0]
        self._output = self._interp.get_output_details()[0]
        self._batch = -1
        self._resize(1)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(v) for v in self._input["shape_signature"])

    def _resize(self, batch: int) -> None:
        if batch == self._batch:
            return
        shape = [batch, *self._input["shape"][1:]]
        self._interp.resize_tensor_input(self._input["index"], shape, strict=True)
        self._interp.allocate_tensors()
        self._batch = batch

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Probabilities (N, classes) for normalised float32 windows `x` (N, T, C)."""
        x = np.asarray(x, np.float32)
        outs = []
        for start in range(0, len(x), batch_size):
            chunk = x[start : start + batch_size]
            self._resize(len(chunk))
            self._interp.set_tensor(self._input["index"], chunk)
            self._interp.invoke()
            outs.append(np.array(self._interp.get_tensor(self._output["index"])))
        return np.concatenate(outs).astype(np.float32)


def micros_per_window(
    model: bytes,
    x: np.ndarray,
    *,
    batch: int = 1,
    repeats: int = 300,
    num_threads: int = 1,
    blocks: int = 5,
) -> float:
    """µs per window for `set_tensor` + `invoke` + `get_tensor` of `batch` windows.

    Plain LiteRT calls on a batch resized once (what the Pi does per micro-batch), `num_threads`
    threads. `repeats` invokes are split into `blocks`; the result is the lowest block median,
    which keeps other processes on a shared CPU from inflating the figure.
    """
    lite = LiteModel(model, num_threads=num_threads)
    x = np.asarray(x, np.float32)
    chunk = np.ascontiguousarray(np.resize(x, (batch, *x.shape[1:])), dtype=np.float32)
    lite.predict(chunk, batch_size=batch)  # resize to `batch` and warm up
    interp, in_idx, out_idx = lite._interp, lite._input["index"], lite._output["index"]
    per_block = max(1, repeats // blocks)
    medians = []
    for _ in range(blocks):
        times = np.empty(per_block)
        for i in range(per_block):
            t0 = time.perf_counter()
            interp.set_tensor(in_idx, chunk)
            interp.invoke()
            interp.get_tensor(out_idx)
            times[i] = time.perf_counter() - t0
        medians.append(float(np.median(times)))
    return min(medians) * 1e6 / batch
