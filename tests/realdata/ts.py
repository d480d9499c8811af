"""The UEA/UCR archive's .ts text format, read into arrays (equal lengths, no missing values)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

__all__ = ["read_ts", "read_ts_split"]


def read_ts(text: str) -> tuple[np.ndarray, list[str], tuple[str, ...]]:
    """(x (N, T, C) float32, labels, the @classLabel names in order) of an equal-length UEA
    .ts file without missing values (ValueError on anything else).

    >>> x, y, names = read_ts("@classLabel true a b\\n@data\\n1,2:3,4:b\\n5,6:7,8:a\\n")
    >>> x.shape, x[0, :, 1].tolist(), y, names
    ((2, 2, 2), [3.0, 4.0], ['b', 'a'], ('a', 'b'))
    """
    names: tuple[str, ...] = ()
    rows: list[list[list[float]]] = []
    labels: list[str] = []
    in_data = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            if line.lower().startswith("@classlabel"):
                parts = line.split()
                if len(parts) < 3 or parts[1].lower() != "true":
                    raise ValueError("a .ts file without class labels")
                names = tuple(parts[2:])
            elif line.lower() == "@data":
                in_data = True
            continue
        *dims, label = line.split(":")
        if label not in names:
            raise ValueError(f"label {label!r} is not one of {names}")
        rows.append([[float(v) for v in d.split(",")] for d in dims])
        labels.append(label)
    x = np.asarray(rows, np.float32)  # (N, C, T); ragged rows raise ValueError
    if x.ndim != 3 or not np.isfinite(x).all():
        raise ValueError("a .ts file of unequal lengths or with missing values")
    return np.ascontiguousarray(x.transpose(0, 2, 1)), labels, names


def read_ts_split(wheel: Path, member: str) -> tuple[np.ndarray, list[str], tuple[str, ...]]:
    """`read_ts` of one file inside a wheel (a zip)."""
    with zipfile.ZipFile(wheel) as z:
        return read_ts(z.read(member).decode())
