"""A tiny PNG writer (numpy + zlib) and a labeled confusion-matrix heatmap.

matplotlib is not a Pi dependency; this draws shaded cells, the counts and the class names with
a 3×5 pixel font (digits, capitals, '_', '-', space).
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
    "A": (2, 5, 7, 5, 5),
    "B": (6, 5, 6, 5, 6),
    "C": (3, 4, 4, 4, 3),
    "D": (6, 5, 5, 5, 6),
    "E": (7, 4, 6, 4, 7),
    "F": (7, 4, 6, 4, 4),
    "G": (3, 4, 5, 5, 3),
    "H": (5, 5, 7, 5, 5),
    "I": (7, 2, 2, 2, 7),
    "J": (1, 1, 1, 5, 2),
    "K": (5, 5, 6, 5, 5),
    "L": (4, 4, 4, 4, 7),
    "M": (5, 7, 7, 5, 5),
    "N": (6, 5, 5, 5, 5),
    "O": (2, 5, 5, 5, 2),
    "P": (6, 5, 6, 4, 4),
    "Q": (2, 5, 5, 6, 3),
    "R": (6, 5, 6, 5, 5),
    "S": (3, 4, 2, 1, 6),
    "T": (7, 2, 2, 2, 2),
    "U": (5, 5, 5, 5, 7),
    "V": (5, 5, 5, 5, 2),
    "W": (5, 5, 7, 7, 5),
    "X": (5, 5, 2, 5, 5),
    "Y": (5, 5, 2, 2, 2),
    "Z": (7, 1, 2, 4, 7),
    "_": (0, 0, 0, 0, 7),
    "-": (0, 0, 7, 0, 0),
    " ": (0, 0, 0, 0, 0),
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
    for i, ch in enumerate(text.upper()):
        rows = _FONT.get(ch)
        if rows is None:
            continue
        for r, bits in enumerate(rows):
            for c in range(3):
                if bits >> (2 - c) & 1:
                    y, x = y0 + r * scale, x0 + (4 * i + c) * scale
                    img[y : y + scale, x : x + scale] = colour


def _text_width(text: str, scale: int) -> int:
    return (4 * len(text) - 1) * scale


def confusion_png(
    cm: npt.NDArray[np.int64],
    path: Path,
    cell: int = 48,
    classes: tuple[str, ...] | list[str] | None = None,
) -> None:
    """Heatmap of a confusion matrix (rows = truth, columns = predicted), counts in each cell.

    Shading is per row (recall), white → blue; the diagonal should be dark. With `classes`,
    each row is labeled "i NAME" on the left and each column "i" on top, under a header
    "TRUTH ROWS - PREDICTED COLUMNS".
    """
    n = cm.shape[0]
    rows = cm.sum(axis=1, keepdims=True).clip(min=1)
    frac = cm / rows
    margin, scale = 4, 2
    ink = (20, 20, 20)
    labels = [f"{i} {c}" for i, c in enumerate(classes)] if classes is not None else []
    if labels and len(labels) != n:
        raise ValueError(f"{len(labels)} class names for a {n}×{n} confusion matrix")
    header = "TRUTH ROWS - PREDICTED COLUMNS" if labels else ""
    left = max((_text_width(t, scale) for t in labels), default=0) + (3 * margin if labels else 0)
    top = 2 * (5 * scale + 2 * margin) if labels else 0
    width = max(left + n * cell + 2 * margin, _text_width(header, scale) + 2 * margin)
    img = np.full((top + n * cell + 2 * margin, width, 3), 255, np.uint8)
    if labels:
        line = 5 * scale + 2 * margin
        _draw_text(
            img,
            header,
            cx=margin + _text_width(header, scale) // 2,
            cy=line // 2,
            scale=scale,
            colour=ink,
        )
        for j in range(n):
            x = left + margin + j * cell
            _draw_text(img, str(j), cx=x + cell // 2, cy=line + line // 2, scale=scale, colour=ink)
        for i, text in enumerate(labels):
            y = top + margin + i * cell
            cx = margin + _text_width(text, scale) // 2
            _draw_text(img, text, cx=cx, cy=y + cell // 2, scale=scale, colour=ink)
    for i in range(n):
        for j in range(n):
            f = float(frac[i, j])
            colour = np.array([255 - 225 * f, 255 - 160 * f, 255 - 60 * f], dtype=np.float64)
            y, x = top + margin + i * cell, left + margin + j * cell
            img[y : y + cell - 1, x : x + cell - 1] = colour.astype(np.uint8)
            text = str(int(cm[i, j]))
            s = max(1, min(3, (cell - 8) // (4 * len(text))))
            fg = (255, 255, 255) if f > 0.5 else ink
            _draw_text(img, text, cx=x + cell // 2, cy=y + cell // 2, scale=s, colour=fg)
    Path(path).write_bytes(encode_png(img))
