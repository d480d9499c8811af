"""The simulator's per-signal mode, pure parts: readings of a window and the settings check, for
the seed machines and the fans (a second machine type, its own file and grid)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pi_edge.intake.assembler import Assembler
from pi_edge.intake.signal_types import SignalIntake, plan_signals
from protocol import CHANNELS, ConfigError
from protocol.machine_type import DEFAULT_TYPE
from protocol.signals import SignalMap, slot_ns
from sensor_sim.config import resolve_sim
from sensor_sim.fan import FAN_TYPE
from sensor_sim.fleet import Fleet, FleetConfig
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
    assert resolve_sim(flags={"signals": EXAMPLE}).signals == (EXAMPLE,)
    assert tuple(s.channel for s in SignalMap.from_toml(EXAMPLE).signals) == CHANNELS


def _fan_file(tmp_path: Path, head: str = 'machine_type = "fan"\n') -> Path:
    path = tmp_path / "fans.toml"
    path.write_text(
        head
        + "max_gap_s = 0.01\n"
        + "".join(
            f'[[signal]]\ntopic = "plant/{{machine}}/{c}"\nchannel = "{c}"\ntime = "ts"\n'
            for c in FAN_TYPE.channel_names
        )
    )
    return path


def test_fans_go_out_on_their_own_types_file_and_grid_and_reassemble(tmp_path: Path) -> None:
    fans = _fan_file(tmp_path)
    cfg = resolve_sim(flags={"signals": f"{EXAMPLE},{fans}", "fans": 1, "machines": 1})
    maps = cfg.signal_maps()
    assert list(maps) == ["default", "fan"]
    assert (maps["fan"].sample_hz, maps["fan"].channels) == (1000.0, FAN_TYPE.channel_names)
    # pi_edge reads the same two files for a site of both types and rebuilds each window
    intake = SignalIntake(plan_signals([EXAMPLE, fans], {"default": DEFAULT_TYPE, "fan": FAN_TYPE}))
    fleet = Fleet(FleetConfig(machines=1, fans=1, mtbf_s=0.0), np.random.default_rng(5))
    seed_w, fan_w = fleet.tick(1.0, 0)
    assert fan_w.data.shape == (128, 3)
    type_of = {"m01": "default", "fan-01": "fan"}.get
    for w, signals, first in ((seed_w, maps["default"], 6_000), (fan_w, maps["fan"], 128_000)):
        topics = [signals.topic(j, w.machine) for j in range(len(signals.signals))]
        out = []
        for topic, payload in signal_messages(signals, topics, w.data, first):
            found = intake.match(topic, type_of)
            assert found is not None
            k, machine, index = found
            t_s, value = intake.feeds[k].signals.parse(index, payload, arrival_s=0.0)
            out += intake.feed(k, machine, index, t_s, value)
        (got,) = out
        assert got.seq == first // w.data.shape[0]
        np.testing.assert_array_equal(got.data, w.data)


def test_each_played_type_needs_one_file_and_each_file_machines(tmp_path: Path) -> None:
    fans = _fan_file(tmp_path)
    with pytest.raises(ConfigError, match="fan without a file"):
        resolve_sim(flags={"signals": EXAMPLE, "fans": 2})
    with pytest.raises(ConfigError, match="files of fan without machines"):
        resolve_sim(flags={"signals": f"{EXAMPLE},{fans}"})
    with pytest.raises(ConfigError, match="two signals files of machine type 'default'"):
        resolve_sim(flags={"signals": f"{EXAMPLE},{EXAMPLE}"})
    press = _fan_file(tmp_path, 'machine_type = "press"\n')
    with pytest.raises(ConfigError, match="the simulator plays default, fan"):
        resolve_sim(flags={"signals": f"{EXAMPLE},{press}"})
    slow = _fan_file(tmp_path, 'machine_type = "fan"\nsample_hz = 100.0\n')
    with pytest.raises(ConfigError, match=r"sample_hz 100\.0 is not machine type fan's"):
        resolve_sim(flags={"signals": f"{EXAMPLE},{slow}", "fans": 1})
