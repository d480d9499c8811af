"""Class and channel names: short printable strings, never indices.

>>> check_name("bearing fault"), check_name("3")
('bearing fault', '3')
"""

from __future__ import annotations

from .errors import PayloadError

__all__ = ["MAX_NAME_CHARS", "check_name"]

MAX_NAME_CHARS = 64


def check_name(value: object, what: str = "class name") -> str:
    """`value` if it is a class or channel name: 1..64 printable characters, no edge spaces.

    >>> check_name(3)
    Traceback (most recent call last):
    ...
    protocol.errors.PayloadError: class name 3 must be text (a name, never an index)
    """
    if not isinstance(value, str):
        raise PayloadError(
            f"{what} {str(value)[:20]} must be text (a name, never an index)", kind="bad_label"
        )
    if (
        not 0 < len(value) <= MAX_NAME_CHARS
        or not value.isprintable()
        or value != value.strip()
        or any(c in value for c in "+#/")
    ):
        raise PayloadError(
            f"{what} {value[:80]!r} must be 1..{MAX_NAME_CHARS} printable characters without "
            "leading or trailing spaces and without '/', '+' or '#'",
            kind="bad_label",
        )
    return value
