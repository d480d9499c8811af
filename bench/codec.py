"""What a window costs on the wire: the binary frame against the JSON form, pure CPU.

    python -m bench.codec [--repeats 2000] [--json PATH]

One seed-shaped window (60 samples × 4 channels, float32, a machine id, a label) is encoded and
decoded with protocol.window's codecs — `encode_window`/`decode_window` for the binary frame,
`window_to_json`/`decode_window_json` for JSON — `--repeats` times each, best of 5 (timeit), in
this process only: no broker, no threads. Prints µs per window to encode and to decode and the
bytes per window, and writes them as JSON with --json (read by bench/report.py). Every window
pi_edge receives is decoded once, so the decode column is a floor under its CPU per window.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from protocol import Window, decode_window, decode_window_json, encode_window
from protocol.window import window_to_json

log = logging.getLogger("bench.codec")


def sample_window(seed: int = 0) -> Window:
    """A seed-shaped window with plausible sensor values (the bench driver's distribution).

    >>> sample_window().data.shape
    (60, 4)
    """
    rng = np.random.default_rng(seed)
    data = rng.normal([50, 0.3, 11, 125], [5, 0.1, 0.5, 10], (60, 4)).astype(np.float32)
    return Window("machine-042", 123_456, 1_700_000_000_000_000_000, data, label=1)


def best_us(fn: Callable[[], object], repeats: int) -> float:
    """Best-of-5 µs per call of `fn` over `repeats` calls (the least disturbed run)."""
    return min(timeit.repeat(fn, number=repeats, repeat=5)) / repeats * 1e6


def measure(repeats: int) -> list[dict[str, Any]]:
    """One row per wire form: bytes, encode µs, decode µs; both forms round-trip first."""
    w = sample_window()
    frame, text = encode_window(w), window_to_json(w)
    if decode_window(frame) != w:
        raise RuntimeError("binary frame did not round-trip: protocol.window is broken")
    back = decode_window_json(text)
    if back.machine != w.machine or not np.allclose(back.data, w.data):
        raise RuntimeError("JSON window did not round-trip: protocol.window is broken")
    return [
        {
            "form": "binary",
            "bytes": len(frame),
            "encode_us": best_us(lambda: encode_window(w), repeats),
            "decode_us": best_us(lambda: decode_window(frame, (60, 4)), repeats),
        },
        {
            "form": "json",
            "bytes": len(text),
            "encode_us": best_us(lambda: window_to_json(w), max(repeats // 10, 10)),
            "decode_us": best_us(lambda: decode_window_json(text, None, (60, 4)), repeats // 10),
        },
    ]


def markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table with JSON/binary ratios."""
    b = next(r for r in rows if r["form"] == "binary")
    lines = [
        "| form | bytes/window | encode µs | decode µs |",
        "|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['form']} | {r['bytes']:,} ({r['bytes'] / b['bytes']:.1f}×) | "
            f"{r['encode_us']:.1f} ({r['encode_us'] / b['encode_us']:.0f}×) | "
            f"{r['decode_us']:.1f} ({r['decode_us'] / b['decode_us']:.0f}×) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--repeats", type=int, default=2000, help="calls per timing (JSON: 1/10)")
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args(argv)
    if args.repeats < 10:
        p.error(f"--repeats {args.repeats} is too few to time; use 10 or more")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    rows = measure(args.repeats)
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
        log.info("wrote %s", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
