"""A tiny PNG writer (numpy + zlib) and a confusion-matrix heatmap with digit labels.

matplotlib is not a Pi dependency; this draws shaded cells and the counts with a 3×5 font.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import numpy.typing as npt

_FONT = {  # 3×5 digits, rows top to bottom, 3 bits each
    "0": (7, 5, 5, 5, 7),
    "1": (2, 6, 2, 2, 7),
    "2": (7, 1, 7, 4, 7),
    "3": (7, 1, 7, 1, 7),
    "4": (5, 5, 7, 1, 1),
    "5": (7, 4, 7, 1, 7),
    "6": (7, 4, 7, 5, 7),
    "7": (7, 1, 2, 2, 2),
    "8": (7, 5, 7, 5, 7),
    "9": (7, 5, 7, 1, 7),
}


def encode_png(rgb: npt.NDArray[np.uint8]) -> bytes:
    """PNG bytes of an (H, W, 3) uint8 image.

    >>> encode_png(np.zeros((2, 3, 3), np.uint8))[:8]
    b'\\x89PNG\\r\\n\\x1a\\n'
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {rgb.shape} {rgb.dtype}")
    h, w, _ = rgb.shape

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + tag
            + data
            + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        )

    raw = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, w * 3)], axis=1)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw.tobytes(), 9))
        + chunk(b"IEND", b"")
    )


def _draw_text(
    img: npt.NDArray[np.uint8],
    text: str,
    *,
    cx: int,
    cy: int,
    scale: int,
    colour: tuple[int, int, int],
) -> None:
    width = (4 * len(text) - 1) * scale
    x0, y0 = cx - width // 2, cy - (5 * scale) // 2
    for i, ch in enumerate(text):
        rows = _FONT.get(ch)
        if rows is None:
            continue
        for r, bits in enumerate(rows):
            for c in range(3):
                if bits >> (2 - c) & 1:
                    y, x = y0 + r * scale, x0 + (4 * i + c) * scale
                    img[y : y + scale, x : x + scale] = colour


def confusion_png(cm: npt.NDArray[np.int64], path: Path, cell: int = 48) -> None:
    """Heatmap of a confusion matrix (rows = truth, columns = predicted), counts in each cell.

    Shading is per row (recall), white → blue; the diagonal should be dark.
    """
    n = cm.shape[0]
    rows = cm.sum(axis=1, keepdims=True).clip(min=1)
    frac = cm / rows
    margin = 4
    size = n * cell + 2 * margin
    img = np.full((size, size, 3), 255, np.uint8)
    for i in range(n):
        for j in range(n):
            f = float(frac[i, j])
            colour = np.array([255 - 225 * f, 255 - 160 * f, 255 - 60 * f], dtype=np.float64)
            y, x = margin + i * cell, margin + j * cell
            img[y : y + cell - 1, x : x + cell - 1] = colour.astype(np.uint8)
            ink = (255, 255, 255) if f > 0.5 else (20, 20, 20)
            text = str(int(cm[i, j]))
            scale = max(1, min(3, (cell - 8) // (4 * len(text))))
            _draw_text(img, text, cx=x + cell // 2, cy=y + cell // 2, scale=scale, colour=ink)
    Path(path).write_bytes(encode_png(img))
