"""Which windows a node keeps for the trainer, and why (pure; the clock comes in).

Labeled windows are always kept; flagged windows (low confidence, out of distribution, or from
a drifting machine) at most `flagged_per_machine_s` per machine per second, so a drifting fleet
cannot flood the durable buffer.
"""

from __future__ import annotations

from typing import Any

from protocol import Window

from .drift import DriftState

__all__ = ["Keeper"]


class Keeper:
    """Which windows to keep and why (pure; the clock comes in).

    >>> import numpy as np
    >>> k = Keeper(flagged_per_machine_s=1.0)
    >>> w = Window("m01", 1, 0, np.zeros((60, 4), np.float32))
    >>> from pi_edge.loop.drift import WindowVerdict
    >>> flagged = WindowVerdict(DriftState.OK, False, 0.0, "low_confidence")
    >>> [k.reason(w, flagged, now=t) for t in (0.0, 0.5, 1.2)]
    ['low_confidence', None, 'low_confidence']
    >>> k.reason(Window("m01", 2, 0, np.zeros((60, 4), np.float32), label=1), flagged, now=1.3)
    'labeled'
    """

    def __init__(self, flagged_per_machine_s: float = 1.0) -> None:
        if flagged_per_machine_s < 0:
            raise ValueError("flagged_per_machine_s must be ≥ 0")
        self.min_gap_s = 1.0 / flagged_per_machine_s if flagged_per_machine_s else float("inf")
        self._last: dict[str, float] = {}

    def reason(self, window: Window, verdict: Any, now: float) -> str | None:
        """'labeled', the flag's reason, 'drift' or None; `verdict` is a drift.WindowVerdict."""
        if window.label is not None:
            return "labeled"
        why = verdict.reason or ("drift" if verdict.state == DriftState.DRIFT else None)
        if why is None:
            return None
        last = self._last.get(window.machine)
        if last is not None and now - last < self.min_gap_s:
            return None
        self._last[window.machine] = now
        return why

    def forget(self, machines: list[str]) -> None:
        """Drop the rate limits of `machines` (evicted by the node's machine cap)."""
        for m in machines:
            self._last.pop(m, None)

    def __len__(self) -> int:
        return len(self._last)
