"""The node kit's errors: plumbing that failed, not a message that was wrong.

protocol.errors.EdgeloopError
 ├── StorageError             a SQLite file could not be read or written (has a .kind)
 └── BrokerRefusedError       the broker refused this client: credentials, ACL or TLS
"""

from __future__ import annotations

from protocol.errors import EdgeloopError

__all__ = ["BrokerRefusedError", "StorageError"]


class StorageError(EdgeloopError):
    """A SQLite file (buffer, history, store) could not be opened, read or written.

    `kind` is one of "open_failed", "read_failed", "write_failed" or "corrupt" (the file was
    moved aside and a fresh one started); the failed call was rolled back as a whole.
    """

    def __init__(self, message: str, kind: str = "write_failed") -> None:
        super().__init__(message)
        self.kind = kind


class BrokerRefusedError(EdgeloopError):
    """The broker will not let this client in, and retrying the same way cannot help.

    `code` is the MQTT 5 CONNACK reason code (0x86 bad user name or password, 0x87 not
    authorized, ...) or None for a TLS failure; `reason` is its name or the TLS error. The
    message says which setting to check. Raised by `nodekit.mqtt.ConnectionWatch`.
    """

    def __init__(self, message: str, code: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
