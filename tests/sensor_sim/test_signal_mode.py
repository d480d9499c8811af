"""The simulator's per-signal mode, pure parts: readings of a window and the settings check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pi_edge.intake.assembler import Assembler
from protocol import CHANNELS, ConfigError
from protocol.signals import SignalMap, slot_ns
from sensor_sim.config import resolve_sim
from sensor_sim.publisher import signal_messages

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "signals.example.toml"


def test_a_windows_readings_reassemble_into_the_same_window() -> None:
    signals = SignalMap.from_toml(EXAMPLE)
    data = np.random.default_rng(3).normal(40, 15, (60, 4)).astype(np.float32)
    topics = [signals.topic(j, "m07") for j in range(4)]
    first, hz = 102_000_002_400, signals.sample_hz  # a window boundary
    msgs = signal_messages(signals, topics, data, first)
    assert len(msgs) == 60 * 4
    assert msgs[0] == (
        "plant/m07/temperature",
        f'{{"ts":{first / hz!r},"value":{float(data[0, 0])!r}}}'.encode(),
    )
    asm = Assembler(signals, 60)
    out = []
    for topic, payload in msgs:
        found = signals.match(topic)
        assert found is not None
        machine, index = found
        out += asm.feed(machine, index, *signals.parse(index, payload, arrival_s=0.0))
    (w,) = out
    assert (w.machine, w.seq, w.timestamp_ns) == ("m07", first // 60, slot_ns(first, hz))
    np.testing.assert_array_equal(w.data, data)


def test_the_simulator_needs_timed_concrete_signals(tmp_path: Path) -> None:
    text = EXAMPLE.read_text()
    untimed = tmp_path / "untimed.toml"
    untimed.write_text(text.replace('time = "ts"', "", 1))
    with pytest.raises(ConfigError, match="`time` key on every signal"):
        resolve_sim(flags={"signals": untimed})
    wild = tmp_path / "wild.toml"
    wild.write_text(text.replace("plant/{machine}/power", "plant/+/{machine}/power"))
    with pytest.raises(ConfigError, match="write out the '\\+' level"):
        resolve_sim(flags={"signals": wild})
    assert resolve_sim(flags={"signals": EXAMPLE}).signals == EXAMPLE
    assert tuple(s.channel for s in SignalMap.from_toml(EXAMPLE).signals) == CHANNELS
