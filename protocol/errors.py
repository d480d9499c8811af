"""The error family every edgeloop package raises from.

    EdgeloopError                 base of every error edgeloop raises on purpose
     ├── ConfigError              a setting (flag, env var, config key) is wrong: exit 2
     ├── PayloadError             a message on the wire is malformed (has a .kind for counting)
     ├── BundleError              a model bundle is malformed, tampered with or incompatible
     │    └── SignatureError      the bundle's Ed25519 signature is missing or wrong
     └── ModelInputError          windows, normalisation or input tensor the model cannot be fed
                                  (also a ValueError; .kind: shape, normalisation, dtype, ...)

Each package subclasses EdgeloopError once (SimError, EdgeError, TrainerError); the node kit's
plumbing errors (StorageError, BrokerRefusedError) live in `nodekit.errors`.
"""

from __future__ import annotations


class EdgeloopError(Exception):
    """Base of every error edgeloop raises on purpose."""


class PayloadError(EdgeloopError):
    """A payload could not be decoded; `kind` names the failure for per-kind counters."""

    def __init__(self, message: str, kind: str = "malformed") -> None:
        super().__init__(message)
        self.kind = kind


class BundleError(EdgeloopError):
    """A model bundle is malformed, tampered with or incompatible; `kind` names the check."""

    def __init__(self, message: str, kind: str = "malformed") -> None:
        super().__init__(message)
        self.kind = kind


class SignatureError(BundleError):
    """A model bundle is unsigned or its signature does not verify with the given key."""

    def __init__(self, message: str) -> None:
        super().__init__(message, kind="signature")


class ModelInputError(EdgeloopError, ValueError):
    """`protocol.model_input` cannot build the model's input; `kind` names what is wrong
    (shape, normalisation, dtype, quantization)."""

    def __init__(self, message: str, kind: str = "shape") -> None:
        super().__init__(message)
        self.kind = kind


class ConfigError(EdgeloopError):
    """A flag, environment variable or config-file key is wrong; the message names the setting,
    the value seen, what is allowed and where to set it. Every tool exits with EXIT_USAGE."""
