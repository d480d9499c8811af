"""The trainer's one error class.

EdgeloopError (protocol)
 └── TrainerError     bad data, a failed conversion check, a missing key, an unreachable broker
"""

from __future__ import annotations

from protocol import EdgeloopError

__all__ = ["TrainerError"]


class TrainerError(EdgeloopError):
    """The trainer could not do what it was asked; the message says what to change."""
