"""The trainer: train, convert, sign, evaluate, fine-tune and publish model bundles.

The API is loaded on first use (module `__getattr__`), so `import jetson_trainer` and every
`--help` stay free of TensorFlow, which only the functions that train import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from protocol import __version__

from .errors import TrainerError

if TYPE_CHECKING:
    from .api import build_bundle, finetune_model, generate_keypair

__all__ = [
    "TrainerError",
    "__version__",
    "build_bundle",
    "finetune_model",
    "generate_keypair",
]

_LAZY = {"build_bundle": ".api", "finetune_model": ".api", "generate_keypair": ".build.keys"}


def __getattr__(name: str) -> Any:
    """Import an API function's module the first time the function is asked for."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
