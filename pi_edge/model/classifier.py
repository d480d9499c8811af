"""The Pi's one TFLite interpreter loader, and the classifier that drives it.

pi_edge loads interpreters here and nowhere else; the trainer has its own loader for its checks
(jetson_trainer/build/interpreter.py). Both hand the interpreter exactly what the contract's
transform computes (`protocol.model_input.ModelInput`), so a window reaches the model
bit-identical on either side (tests/pi_edge/test_model_input_parity.py).

Import chain (first that imports wins): `ai_edge_litert.interpreter` → `tflite_runtime.interpreter`
→ `tensorflow.lite` (a last resort: it pulls in all of TensorFlow, too big for a Pi Zero 2W).

`Classifier` turns raw windows into the model's input with `ModelInput` (the manifest's
per-channel mean/std in float32, vectorised over the batch, then the input tensor's int8/uint8
quantization if it has one), runs one `invoke` per batch and returns float32 probabilities.

Batch sizes: an LRU of interpreters keyed by exact batch size. A miss re-uses the least recently
used interpreter with `resize_tensor_input` + `allocate_tensors` (~12 µs for the compact model).
How many are cached follows the model's size (`CACHE_BUDGET_BYTES`): 13 for the compact model,
the minimum of 4 for a large one, since each interpreter holds its own packed weights and arena
(all 32 sizes of the compact model cost ~5 MB of RSS). Measured on x86 with the compact model,
3,000 batches of random sizes 1..32: 2.0 µs/window with 4 cached (2,657 re-allocations),
1.3 µs/window with all 32 cached.
Padding to power-of-two sizes was slower than re-allocating, so there is no padding.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import numpy.typing as npt

from protocol import Manifest
from protocol.errors import ModelInputError
from protocol.manifest import HEAD_OUTPUTS
from protocol.model_input import ModelInput

from ..errors import EdgeError, ModelError
from ..intake.inbox import BatchPolicy

log = logging.getLogger(__name__)

_CHAIN = (
    ("ai_edge_litert.interpreter", "Interpreter"),
    ("tflite_runtime.interpreter", "Interpreter"),
    ("tensorflow.lite", "Interpreter"),
)
_lock = threading.Lock()
# interpreters cached ≈ this / (256 KiB + 4 × model bytes), within 4..batch_max
CACHE_BUDGET_BYTES = 4 << 20
_loaded: tuple[Any, str] | None = None


def _dequantized(y: Any, dtype: np.dtype[Any], quant: Any) -> npt.NDArray[np.float32]:
    """An output tensor as float32 (an int8/uint8 one dequantized with its scale, zero point)."""
    if dtype != np.float32:
        scale, zero = quant
        y = (y.astype(np.float32) - zero) * np.float32(scale)
    return np.asarray(y, dtype=np.float32)


def _outputs_in_order(interp: Any, manifest: Manifest) -> list[dict[str, Any]]:
    """The output details in the model's order: a classifier with an anomaly head has two,
    which the runtime lists in no promised order; its serving signature names them `output_0`
    (probabilities) and `output_1` (the head), as protocol/README.md says."""
    details = list(interp.get_output_details())
    if len(details) == 1:
        return details
    try:
        named = interp.get_signature_runner().get_output_details()
        return [named[f"output_{i}"] for i in range(len(details))]
    except (AttributeError, KeyError, ValueError, RuntimeError) as exc:
        raise ModelError(
            f"bundle v{manifest.version}'s model has {len(details)} outputs and no serving "
            f"signature naming them output_0…: {exc}",
            kind="incompatible",
        ) from exc


def interpreter_class() -> tuple[Any, str]:
    """(Interpreter class, module name) of the first runtime in the chain that imports.

    >>> cls, name = interpreter_class()
    >>> name in {"ai_edge_litert.interpreter", "tflite_runtime.interpreter", "tensorflow.lite"}
    True
    """
    global _loaded  # noqa: PLW0603 - a process-wide import cache, like importlib's own
    with _lock:
        if _loaded is None:
            errors = []
            for module_name, attr in _CHAIN:
                try:
                    module = importlib.import_module(module_name)
                except ImportError as exc:
                    errors.append(f"{module_name}: {exc}")
                    continue
                _loaded = (getattr(module, attr), module_name)
                if module_name.startswith("tensorflow"):
                    log.warning("using tensorflow.lite; install ai-edge-litert to save memory")
                break
            else:
                raise EdgeError(
                    "no TFLite runtime found ("
                    + "; ".join(errors)
                    + "); install one with: pip install 'edgeloop[edge]' "
                    "(ai-edge-litert), or tflite-runtime on 32-bit Pi OS"
                )
        return _loaded


def runtime_name() -> str:
    return interpreter_class()[1]


class Classifier:
    """A model plus its manifest: raw (batch, T, C) windows in, (batch, classes) probabilities out.

    Not thread-safe: one worker thread owns it. Build it, call `check_golden`, then use it.
    """

    def __init__(
        self,
        model: bytes,
        manifest: Manifest,
        *,
        threads: int = 1,
        policy: BatchPolicy | None = None,
        cache_sizes: int | None = None,
    ) -> None:
        self.manifest = manifest
        self.model = model
        self.threads = threads
        self.policy = policy or BatchPolicy()
        self._cls, self.runtime = interpreter_class()
        t, c = manifest.input_shape
        self._interps: OrderedDict[int, tuple[Any, int, int, int]] = OrderedDict()
        if cache_sizes is None:
            fit = CACHE_BUDGET_BYTES // ((256 << 10) + 4 * len(model))
            cache_sizes = max(4, min(self.policy.max_size, fit))
        self._cache_sizes = max(1, cache_sizes)
        self.reallocations = 0
        try:
            probe = self._cls(model_content=model, num_threads=threads)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"the runtime cannot load this model: {exc}", "runtime") from exc
        inp = probe.get_input_details()[0]
        outs = _outputs_in_order(probe, manifest)
        out = outs[0]
        shape = tuple(int(v) for v in inp["shape"])
        if len(shape) != 3 or shape[1:] != (t, c):
            raise ModelError(
                f"model input shape {shape} does not match the manifest's (batch, {t}, {c}); "
                "the bundle's manifest and model disagree",
                kind="incompatible",
            )
        n_out = int(out["shape"][-1])
        if n_out != len(manifest.classes):
            raise ModelError(
                f"model has {n_out} outputs for {len(manifest.classes)} manifest classes",
                kind="incompatible",
            )
        self.has_head = manifest.has_head  # a second output: the anomaly head (anomaly_head.py)
        widths = [int(o["shape"][-1]) for o in outs[1:]]
        if widths != ([HEAD_OUTPUTS] if self.has_head else []):
            raise ModelError(
                f"model has extra outputs of widths {widths}; its manifest "
                + ("names an anomaly head, one output of 2" if self.has_head else "none"),
                kind="incompatible",
            )
        self._out_index = int(out["index"])
        self._head_index = int(outs[1]["index"]) if self.has_head else -1
        self._head_q = outs[1].get("quantization", (0.0, 0)) if self.has_head else (0.0, 0)
        self._head_dtype = np.dtype(outs[1]["dtype"]) if self.has_head else np.dtype(np.float32)
        self.last_head: npt.NDArray[np.float32] = np.zeros((0, HEAD_OUTPUTS), np.float32)
        self.input_dtype = np.dtype(inp["dtype"])
        self.output_dtype = np.dtype(out["dtype"])
        self._out_q = out.get("quantization", (0.0, 0))
        try:
            self.model_input = ModelInput.for_tensor(manifest.normalisation, inp)
        except ModelInputError as exc:
            raise ModelError(f"this model cannot be fed: {exc}", kind="incompatible") from exc
        self._spare: Any = probe  # becomes the first cached interpreter

    def _interpreter(self, size: int) -> tuple[Any, int, int, int]:
        entry = self._interps.get(size)
        if entry is not None:
            self._interps.move_to_end(size)
            return entry
        t, c = self.manifest.input_shape
        try:
            if self._spare is not None:
                interp, self._spare = self._spare, None
            elif len(self._interps) < self._cache_sizes:
                interp = self._cls(model_content=self.model, num_threads=self.threads)
            else:
                interp = self._interps.popitem(last=False)[1][0]
            in_idx = interp.get_input_details()[0]["index"]
            if tuple(interp.get_input_details()[0]["shape"]) != (size, t, c):
                interp.resize_tensor_input(in_idx, [size, t, c], strict=False)
            interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"the runtime cannot load this model: {exc}", "runtime") from exc
        self.reallocations += 1
        entry = (interp, in_idx, self._out_index, self._head_index)  # same indices: same model
        self._interps[size] = entry
        return entry

    @property
    def interpreters(self) -> int:
        """How many batch-size interpreters are cached (for tests and the bench)."""
        return len(self._interps)

    def predict(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Probabilities for a batch of raw windows (n, T, C); one invoke per policy.max_size."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 2:
            x = x[None]
        n = x.shape[0]
        out = np.empty((n, len(self.manifest.classes)), dtype=np.float32)
        head = np.empty((n if self.has_head else 0, HEAD_OUTPUTS), dtype=np.float32)
        step = self.policy.max_size
        for start in range(0, n, step):
            chunk = x[start : start + step]
            out[start : start + len(chunk)] = self._invoke(chunk, head[start : start + len(chunk)])
        self.last_head = head
        return out

    def _invoke(
        self, x: npt.NDArray[np.float32], head: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float32]:
        """Probabilities of `x`; a model with an anomaly head also fills `head` (its output)."""
        interp, in_idx, out_idx, head_idx = self._interpreter(x.shape[0])
        interp.set_tensor(in_idx, self.model_input(x))
        interp.invoke()
        if head_idx >= 0:
            head[:] = _dequantized(interp.get_tensor(head_idx), self._head_dtype, self._head_q)
        return _dequantized(interp.get_tensor(out_idx), self.output_dtype, self._out_q)

    def check_golden(self) -> int:
        """Run the manifest's golden vectors; ModelError(kind="golden") on any mismatch.

        Each golden must give the same argmax and max |Δp| ≤ golden_tolerance. Returns how
        many were checked (0 when the manifest carries none).
        """
        golden = self.manifest.golden
        if not golden:
            return 0
        try:
            x = np.asarray([g["x"] for g in golden], dtype=np.float32)
            want = np.asarray([g["probs"] for g in golden], dtype=np.float32)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"manifest golden vectors are malformed: {exc}", "golden") from exc
        if x.shape[1:] != self.manifest.input_shape or want.shape != (
            len(x),
            len(self.manifest.classes),
        ):
            raise ModelError(
                f"golden vectors have shape {x.shape} / {want.shape}, expected "
                f"(n, {self.manifest.input_shape}) / (n, {len(self.manifest.classes)})",
                "golden",
            )
        got = self.predict(x)
        delta = float(np.max(np.abs(got - want)))
        same = got.argmax(axis=1) == want.argmax(axis=1)
        if not same.all() or delta > self.manifest.golden_tolerance:
            raise ModelError(
                f"golden vectors fail on this runtime ({self.runtime}): "
                f"{int((~same).sum())}/{len(same)} argmax differ, max |Δp| {delta:.4f} "
                f"> tolerance {self.manifest.golden_tolerance}; the model does not run here "
                "as it did on the trainer",
                kind="golden",
            )
        return len(golden)
