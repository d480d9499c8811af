"""The signal assembler (pi_edge/intake/assembler.py), pure: order, duplicates, holes, gaps, bad
values, clock jumps, bounded memory and the machine cap — each case checked cell by cell."""

from __future__ import annotations

import numpy as np
import pytest

from pi_edge.intake.assembler import MAX_PENDING, Assembler
from protocol import PayloadError, Window
from protocol.signals import SignalMap, SignalSpec, slot_ns

T, C = 4, 2
BASE = 1_700_000_000  # slot of the first window at 1 Hz: a multiple of T
SIGNALS = SignalMap(
    [SignalSpec("p/{machine}/a", "a", time="ts"), SignalSpec("p/{machine}/b", "b", time="ts")],
    ("a", "b"),
    sample_hz=1.0,
    max_gap_s=2.0,
    reorder_s=3.0,
)


def value(slot: int, ch: int) -> float:
    """A distinct, float32-exact value per cell."""
    return float((slot - BASE) * 10 + ch)


def cells(first: int, n: int) -> list[tuple[int, int]]:
    """(slot, channel) of n slots from `first`, slot-major."""
    return [(s, c) for s in range(first, first + n) for c in range(C)]


def feed(asm: Assembler, todo: list[tuple[int, int]], machine: str = "m1") -> list[Window]:
    out: list[Window] = []
    for s, c in todo:
        out += asm.feed(machine, c, float(s), value(s, c))
    return out


def expected(first_slot: int) -> np.ndarray:
    return np.array([[value(s, c) for c in range(C)] for s in range(first_slot, first_slot + T)])


def test_in_order_samples_make_epoch_aligned_windows() -> None:
    asm = Assembler(SIGNALS, T)
    out = feed(asm, cells(BASE, 3 * T))
    assert [w.seq for w in out] == [BASE // T + k for k in range(3)]
    for k, w in enumerate(out):
        assert w.timestamp_ns == slot_ns(BASE + k * T, 1.0) == (BASE + k * T) * 10**9
        assert w.data.dtype == np.float32 and w.label is None
        np.testing.assert_array_equal(w.data, expected(BASE + k * T))
    assert asm.counts == {"signal_samples": 3 * T * C, "signal_windows": 3}


def test_a_window_is_out_as_soon_as_its_last_cell_arrives() -> None:
    asm = Assembler(SIGNALS, T)
    todo = cells(BASE, T)
    assert feed(asm, todo[:-1]) == []
    assert [w.seq for w in feed(asm, todo[-1:])] == [BASE // T]


def test_out_of_order_within_the_horizon_gives_the_same_windows() -> None:
    todo = cells(BASE, 5 * T)
    rng = np.random.default_rng(1)
    shuffled = []  # each sample moved back by at most 3 slots (reorder_s = 3 at 1 Hz)
    for i in range(0, len(todo), 2 * 3):
        block = todo[i : i + 2 * 3]
        shuffled += [block[j] for j in rng.permutation(len(block))]
    asm_a, asm_b = Assembler(SIGNALS, T), Assembler(SIGNALS, T)
    a, b = feed(asm_a, todo), feed(asm_b, shuffled)
    assert [w.seq for w in b] == [w.seq for w in a] == [BASE // T + k for k in range(5)]
    assert all(x == y for x, y in zip(a, b, strict=True))
    assert "signal_late" not in asm_b.counts


def test_a_duplicate_is_counted_and_the_last_value_wins() -> None:
    problems: list[str] = []
    asm = Assembler(SIGNALS, T, on_problem=lambda kind, n: problems.append(kind))
    todo = cells(BASE, T)
    feed(asm, todo[:3])
    assert asm.feed("m1", 0, float(BASE), 99.0) == []
    (w,) = feed(asm, todo[3:])
    want = expected(BASE)
    want[0, 0] = 99.0
    np.testing.assert_array_equal(w.data, want)
    assert problems == ["signal_duplicate"] and asm.counts["signal_duplicate"] == 1


def test_a_short_hole_is_forward_filled_also_from_the_window_before() -> None:
    asm = Assembler(SIGNALS, T)
    holes = {(BASE + T, 0), (BASE + T + 1, 0), (BASE + T + 2, 1)}  # 2 slots of a, 1 of b
    todo = [cell for cell in cells(BASE, 3 * T) if cell not in holes]
    out = feed(asm, todo)
    assert [w.seq for w in out] == [BASE // T + k for k in range(3)]
    want = expected(BASE + T)
    want[0, 0] = want[1, 0] = value(BASE + T - 1, 0)  # from the previous window's last a
    want[2, 1] = value(BASE + T + 1, 1)
    np.testing.assert_array_equal(out[1].data, want)
    assert asm.counts["signal_filled"] == 3
    assert "signal_gap_dropped" not in asm.counts


def test_a_gap_longer_than_max_gap_drops_the_window_and_the_next_is_fine() -> None:
    asm = Assembler(SIGNALS, T)
    holes = {(s, 1) for s in range(BASE + T, BASE + T + 3)}  # 3 missing b: last b is 3 s old
    todo = [cell for cell in cells(BASE, 3 * T) if cell not in holes]
    out = feed(asm, todo)
    assert [w.seq for w in out] == [BASE // T, BASE // T + 2]
    np.testing.assert_array_equal(out[1].data, expected(BASE + 2 * T))
    assert asm.counts["signal_gap_dropped"] == 1


def test_a_missing_channel_drops_every_window() -> None:
    asm = Assembler(SIGNALS, T)
    out = feed(asm, [cell for cell in cells(BASE, 4 * T) if cell[1] == 0])
    assert out == []
    assert asm.counts["signal_gap_dropped"] == 3  # the 4th is still open
    assert asm.pending("m1") == 1


def test_a_stream_starting_mid_window_drops_that_partial_window() -> None:
    asm = Assembler(SIGNALS, T)
    out = feed(asm, cells(BASE + 1, 2 * T))
    assert [w.seq for w in out] == [BASE // T + 1]
    assert asm.counts["signal_gap_dropped"] == 1


def test_a_whole_missing_window_shows_as_a_seq_gap() -> None:
    asm = Assembler(SIGNALS, T)
    out = feed(asm, cells(BASE, T) + cells(BASE + 2 * T, T))
    assert [w.seq for w in out] == [BASE // T, BASE // T + 2]


def test_bad_values_are_counted_and_leave_a_hole() -> None:
    asm = Assembler(SIGNALS, T)
    todo = cells(BASE, T)
    out = feed(asm, todo[:2] + todo[3:])  # slot 1 of channel a: only bad values
    for bad in (float("nan"), float("inf")):
        out += asm.feed("m1", 0, float(BASE + 1), bad)
    out += asm.feed("m1", 0, float("nan"), 1.0)
    assert asm.counts["signal_bad_value"] == 3
    assert out == []  # slot BASE+1 channel a missing: the window waits for it or the horizon
    out = feed(asm, cells(BASE + T, T))
    want = expected(BASE)
    want[1, 0] = value(BASE, 0)
    np.testing.assert_array_equal(out[0].data, want)


def test_a_late_sample_is_dropped_and_a_clock_jump_starts_over() -> None:
    asm = Assembler(SIGNALS, T)
    out = feed(asm, cells(BASE, 2 * T))
    assert asm.feed("m1", 0, float(BASE + 1), 5.0) == []  # its window is out
    assert asm.counts["signal_late"] == 1
    back = BASE - 100 * T  # the sender's clock went back: start over from there
    out = feed(asm, cells(back, T))
    assert [w.seq for w in out] == [back // T]
    assert asm.counts["signal_time_jump"] == 1


def test_one_far_future_sample_costs_at_most_the_open_windows() -> None:
    asm = Assembler(SIGNALS, T)
    feed(asm, cells(BASE, T + 1))
    asm.feed("m1", 0, float(BASE + 10**6), 1.0)  # a bogus stamp (e.g. ms read as s)
    out = feed(asm, cells(BASE + 2 * T, 2 * T))
    assert [w.seq for w in out] == [BASE // T + 2, BASE // T + 3]
    assert asm.counts["signal_time_jump"] == 1  # the real stream after the bogus stamp
    assert asm.counts["signal_gap_dropped"] == 1  # the window open when the bogus one came


def test_memory_is_bounded_per_machine_and_by_the_machine_cap() -> None:
    wide = SignalMap(
        SIGNALS.signals, SIGNALS.channels, sample_hz=1.0, max_gap_s=2.0, reorder_s=10_000.0
    )
    asm = Assembler(wide, T, max_machines=3)
    rng = np.random.default_rng(2)
    for s in rng.permutation(2000)[:1500]:
        asm.feed("m1", 0, float(BASE + 7 * int(s)), 1.0)
        assert asm.pending("m1") <= MAX_PENDING
    for i in range(10):
        feed(asm, cells(BASE, 1), machine=f"x{i}")
    assert len(asm) == 3
    assert asm.counts["signal_machines_evicted"] == 8  # m1 and x0..x6
    asm.forget(["x9", "nope"])
    assert len(asm) == 2


def test_a_bad_machine_id_is_refused_before_anything_is_kept() -> None:
    asm = Assembler(SIGNALS, T)
    with pytest.raises(PayloadError) as info:
        asm.feed("m1#", 0, float(BASE), 1.0)
    assert info.value.kind == "bad_id" and len(asm) == 0


@pytest.mark.parametrize("scale", [1, 1_000, 1_000_000, 1_000_000_000])
def test_parsed_times_in_any_unit_give_the_same_windows(scale: int) -> None:
    asm = Assembler(SIGNALS, T)
    out: list[Window] = []
    for s, c in cells(BASE, T):
        payload = f'{{"ts": {s * scale}, "value": {value(s, c)}}}'.encode()
        t, v = SIGNALS.parse(c, payload, arrival_s=0.0)
        out += asm.feed("m1", c, t, v)
    assert [w.seq for w in out] == [BASE // T]
    np.testing.assert_array_equal(out[0].data, expected(BASE))
