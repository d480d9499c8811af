"""The simulator's error type.

    EdgeloopError (protocol)
     ├── ConfigError (protocol)  a setting (flag, env var, config key) is wrong: exit 2
     └── SimError                a command, data set request or broker connection failed: exit 1

`kind` names the failure for the per-kind counters the simulator publishes in its status.
"""

from __future__ import annotations

from protocol import EdgeloopError


class SimError(EdgeloopError):
    """A command, data set request or connection failed; the message says the fix."""

    def __init__(self, message: str, kind: str = "invalid") -> None:
        super().__init__(message)
        self.kind = kind
