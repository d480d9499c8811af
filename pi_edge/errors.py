"""pi_edge's errors.

    protocol.EdgeloopError
     ├── protocol.ConfigError  a flag, env var or config-file key is wrong (exit 2; re-exported)
     └── EdgeError             pi_edge could not do what was asked (model, runtime, storage)
          └── ModelError       a bundle was refused (.kind: signature, golden, ...; exit 3)

Only `pi_edge.__main__` turns these into a log line and an exit code (nodekit.cli).
"""

from __future__ import annotations

from protocol import ConfigError, EdgeloopError

__all__ = ["ConfigError", "EdgeError", "ModelError"]


class EdgeError(EdgeloopError):
    """Base of every error pi_edge raises on purpose, but for bad settings (ConfigError)."""


class ModelError(EdgeError):
    """A model bundle was refused; `kind` names the failed check for per-kind counters."""

    refused = True  # nodekit.cli.exit_code: EXIT_REFUSED

    def __init__(self, message: str, kind: str = "model") -> None:
        super().__init__(message)
        self.kind = kind
