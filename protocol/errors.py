"""The error family every edgeloop package raises from.

    EdgeloopError                 base of every error edgeloop raises on purpose
     ├── ConfigError              a setting (flag, env var, config key) is wrong: exit 2
     ├── PayloadError             a message on the wire is malformed (has a .kind for counting)
     ├── BundleError              a model bundle is malformed, tampered with or incompatible
     │    └── SignatureError      the bundle's Ed25519 signature is missing or wrong
     ├── StorageError             a SQLite file could not be read or written (has a .kind)
     └── BrokerRefusedError       the broker refused this client: credentials, ACL or TLS

Each package subclasses EdgeloopError once (SimError, EdgeError, TrainerError).
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


class ConfigError(EdgeloopError):
    """A flag, environment variable or config-file key is wrong; the message names the setting,
    the value seen, what is allowed and where to set it. Every tool exits with EXIT_USAGE."""


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
    message says which setting to check. Raised by `protocol.mqtt.ConnectionWatch`.
    """

    def __init__(self, message: str, code: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
