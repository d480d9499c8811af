"""The fixed vocabulary: class labels, sensor channels and the default window length.

Label ints are the seed 000 order and never change meaning within a protocol version.

>>> CLASSES[1], class_index("drive_wear"), CHANNELS[2]
('bearing_fault', 2, 'pressure')
"""

from __future__ import annotations

from .errors import PayloadError

PROTOCOL_VERSION = 1

CLASSES: tuple[str, ...] = ("normal", "bearing_fault", "drive_wear", "pump_fault")
CHANNELS: tuple[str, ...] = ("temperature", "vibration", "pressure", "power")
UNITS: dict[str, str] = {"temperature": "°C", "vibration": "mm/s", "pressure": "bar", "power": "W"}
WINDOW_LENGTH = 60
NUM_CLASSES = len(CLASSES)
NUM_CHANNELS = len(CHANNELS)


def class_index(label: int | str) -> int:
    """Label int for a class name or int; PayloadError if it names no class."""
    if isinstance(label, bool):
        raise PayloadError(f"label {label!r} is a bool; send a class name or 0..{NUM_CLASSES - 1}")
    if isinstance(label, int):
        if 0 <= label < NUM_CLASSES:
            return label
        raise PayloadError(
            f"label {label} is out of range; valid labels are 0..{NUM_CLASSES - 1} {CLASSES}",
            kind="bad_label",
        )
    if isinstance(label, str) and label in CLASSES:
        return CLASSES.index(label)
    raise PayloadError(f"label {label!r} is not one of {CLASSES}", kind="bad_label")
