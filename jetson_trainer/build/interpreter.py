"""The trainer's one TFLite interpreter loader, for its checks, and the timing of a model.

Every trainer check that runs a .tflite model — conversion agreement, batch resize, metrics,
golden vectors, the daemon's gate, replay and pseudo-labels — loads it here and nowhere else
(`ai_edge_litert`, the runtime the Pi uses, else `tensorflow.lite`). The Pi has its own loader
(pi_edge/model/classifier.py). Both take raw windows and hand the interpreter exactly what the
contract's transform computes (`protocol.model_input.ModelInput`: normalised float32, or
quantized for an int8/uint8 input tensor), so what the trainer checks is what the Pi runs
(tests/pi_edge/test_model_input_parity.py).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from protocol.model_input import ModelInput

from ..errors import TrainerError

__all__ = ["LiteModel", "micros_per_window", "outputs_in_order"]


def _interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - the trainer extra installs ai-edge-litert
        import tensorflow as tf

        return tf.lite.Interpreter
    return Interpreter


def outputs_in_order(interp: Any) -> list[dict[str, Any]]:
    """The interpreter's output details in the model's order. LiteRT lists a multi-output
    model's outputs in no promised order (a Keras model's [probabilities, head] comes out head
    first); its serving signature names them `output_0`, `output_1`, … in the model's order."""
    details = list(interp.get_output_details())
    if len(details) == 1:
        return details
    named = interp.get_signature_runner().get_output_details()
    try:
        return [named[f"output_{i}"] for i in range(len(details))]
    except KeyError as exc:
        raise TrainerError(f"the model's signature does not name its outputs: {exc}") from exc


class LiteModel:
    """A TFLite flatbuffer in a LiteRT interpreter (resizable batch), fed raw windows through
    the contract's transform for its `normalisation` (a manifest's per-channel mean/std)."""

    def __init__(
        self, model: bytes, normalisation: Mapping[str, Sequence[float]], *, num_threads: int = 1
    ) -> None:
        try:
            self._interp = _interpreter_class()(model_content=model, num_threads=num_threads)
        except (ValueError, RuntimeError) as exc:
            raise TrainerError(f"LiteRT cannot load the model ({len(model)} bytes): {exc}") from exc
        self._input = self._interp.get_input_details()[0]
        self._outputs = outputs_in_order(self._interp)
        self._output = self._outputs[0]
        self.model_input = ModelInput.for_tensor(normalisation, self._input)
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
        """Probabilities (N, classes) for raw windows `x` (N, T, C)."""
        outs = []
        for start in range(0, len(x), batch_size):
            chunk = self.model_input(x[start : start + batch_size])
            self._resize(len(chunk))
            self._interp.set_tensor(self._input["index"], chunk)
            self._interp.invoke()
            outs.append(self._output_probs(self._interp.get_tensor(self._output["index"])))
        return np.concatenate(outs).astype(np.float32)

    def outputs(self, x: np.ndarray) -> list[np.ndarray]:
        """Every output tensor (float32, dequantized) for raw windows `x`, in the model's order:
        a classifier with an anomaly head has two, probabilities then the head (anomaly_head.py).
        """
        self._resize(len(x))
        self._interp.set_tensor(self._input["index"], self.model_input(x))
        self._interp.invoke()
        out = []
        for detail in self._outputs:
            y = self._interp.get_tensor(detail["index"])
            if np.dtype(detail["dtype"]) != np.float32:
                scale, zero = detail.get("quantization", (0.0, 0))
                y = (y.astype(np.float32) - zero) * np.float32(scale)
            out.append(np.asarray(y, np.float32))
        return out

    def _output_probs(self, y: np.ndarray) -> np.ndarray:
        """The output as float32 probabilities, dequantized if the output tensor is integer."""
        if np.dtype(self._output["dtype"]) == np.float32:
            return np.array(y)
        scale, zero = self._output.get("quantization", (0.0, 0))
        return np.asarray((y.astype(np.float32) - zero) * np.float32(scale), np.float32)


def micros_per_window(
    model: bytes,
    normalisation: Mapping[str, Sequence[float]],
    x: np.ndarray,
    *,
    batch: int = 1,
    repeats: int = 300,
    num_threads: int = 1,
    blocks: int = 5,
) -> float:
    """µs per window for `set_tensor` + `invoke` + `get_tensor` of `batch` raw windows.

    Plain LiteRT calls on a batch resized once (what the Pi does per micro-batch), `num_threads`
    threads; the model input is computed once, outside the timing. `repeats` invokes are split
    into `blocks`; the result is the lowest block median, which keeps other processes on a
    shared CPU from inflating the figure.
    """
    lite = LiteModel(model, normalisation, num_threads=num_threads)
    x = np.asarray(x, np.float32)
    raw = np.resize(x, (batch, *x.shape[1:]))
    lite.predict(raw, batch_size=batch)  # resize to `batch` and warm up
    chunk = lite.model_input(raw)
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
