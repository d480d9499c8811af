"""pi_edge's errors.

    protocol.EdgeloopError
     └── EdgeError            pi_edge could not do what was asked (config, model, runtime)
          ├── ConfigError     a flag, env var or config-file key is wrong
          └── ModelError      a model bundle was refused (has .kind: signature, golden, ...)

Only `pi_edge.__main__` turns these into a log line and an exit code.
"""

from __future__ import annotations

from protocol import EdgeloopError


class EdgeError(EdgeloopError):
    """Base of every error pi_edge raises on purpose."""


class ConfigError(EdgeError):
    """A setting is invalid; the message names the setting, the value and what is allowed."""


class ModelError(EdgeError):
    """A model bundle was refused; `kind` names the failed check for per-kind counters."""

    def __init__(self, message: str, kind: str = "model") -> None:
        super().__init__(message)
        self.kind = kind
