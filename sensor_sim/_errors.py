"""The simulator's error type.

    EdgeloopError (protocol)
     └── SimError          a simulator config, command or data set request is invalid

`kind` names the failure for the per-kind counters the simulator publishes in its status.
"""

from __future__ import annotations

from protocol import EdgeloopError


class SimError(EdgeloopError):
    """A simulator config, command or data set request is invalid; the message says the fix."""

    def __init__(self, message: str, kind: str = "invalid") -> None:
        super().__init__(message)
        self.kind = kind
