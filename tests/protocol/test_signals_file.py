"""The signals file (protocol/signals.py): checks, topic matching, sample parsing and encoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from protocol import CHANNELS, ConfigError, PayloadError
from protocol.signals import SignalMap, SignalSpec, slot_ns, slot_of, to_seconds

FOUR = "\n".join(
    f'[[signal]]\ntopic = "plant/{{machine}}/{c}"\nchannel = "{c}"\nvalue = "value"\ntime = "ts"'
    for c in CHANNELS
)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "signals.toml"
    path.write_text(text)
    return path


def test_a_full_file_reads_with_defaults(tmp_path: Path) -> None:
    m = SignalMap.from_toml(_write(tmp_path, "sample_hz = 2.0\n" + FOUR))
    assert (m.sample_hz, m.max_gap_s, m.reorder_s) == (2.0, 5.0, 1.0)
    assert m.filters() == [f"plant/+/{c}" for c in CHANNELS]
    assert m.channel_of == (0, 1, 2, 3)
    assert m.timed


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("sample_hz = 1.0\nbogus = 1\n" + FOUR, "unknown key(s) ['bogus']"),
        (FOUR.replace('time = "ts"', 'time = "ts"\nunit = "ms"', 1), "unknown key(s) ['unit']"),
        ("sample_hz = 0.0\n" + FOUR, "sample_hz must be a number in (0, 1000]"),
        ("max_gap_s = -1\n" + FOUR, "max_gap_s must be"),
        (FOUR.replace('channel = "power"', 'channel = "pressure"'), "more than once ['pressure']"),
        (FOUR.replace('channel = "power"', 'channel = "watts"'), "unknown channel(s) ['watts']"),
        ("[[signal]]" + FOUR.split("[[signal]]")[1], "not mapped ['vibration'"),
        (FOUR.replace("plant/{machine}/power", "plant/power"), "exactly one level '{machine}'"),
        (FOUR.replace("plant/{machine}/power", "plant/{machine}/#"), "'#'"),
        (FOUR.replace("plant/{machine}/power", "plant/{machine}//p"), "empty levels"),
        (FOUR.replace("plant/{machine}/power", "{machine}/{machine}"), "exactly one level"),
        ("sample_hz = 1.0\n", "no [[signal]] entries"),
        ("sample_hz = [\n", "cannot read signals file"),
    ],
)
def test_a_wrong_file_is_refused_naming_the_problem(tmp_path: Path, text: str, words: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        SignalMap.from_toml(path)
    assert words in str(info.value)
    assert str(path) in str(info.value)


def test_missing_channels_are_all_named() -> None:
    with pytest.raises(ValueError, match=r"not mapped \['vibration', 'pressure', 'power'\]"):
        SignalMap([SignalSpec("a/{machine}/t", "temperature")], CHANNELS)


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("site/hall1/press3/temp", ("press3", 0)),
        ("site/hall2/press3/temp", ("press3", 0)),  # '+' matches any level
        ("site/hall1/press3/temp/x", None),
        ("site/hall1/temp", None),
        ("other/hall1/press3/temp", None),
        ("press3/pwr", ("press3", 1)),
        ("a+b/pwr", ("a+b", 1)),  # returned as is: the caller checks the id
    ],
)
def test_topic_match_table(topic: str, expected: tuple[str, int] | None) -> None:
    m = SignalMap(
        [SignalSpec("site/+/{machine}/temp", "t"), SignalSpec("{machine}/pwr", "p")], ("t", "p")
    )
    assert m.match(topic) == expected
    assert m.filters() == ["site/+/+/temp", "+/pwr"]


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (b'{"ts": 1700000000, "value": "48.2"}', "signal_bad_value"),
        (b'{"ts": 1700000000, "value": true}', "signal_bad_value"),
        (b'{"ts": 1700000000}', "signal_bad_value"),
        (b'{"ts": 1700000000, "value": NaN}', "signal_bad_value"),
        (b'{"ts": 1700000000, "value": 1e999}', "signal_bad_value"),
        (b'{"ts": "now", "value": 1}', "signal_bad_time"),
        (b'{"value": 1}', "signal_bad_time"),
        (b'{"ts": -5, "value": 1}', "signal_bad_time"),
        (b'{"ts": 1e30, "value": 1}', "signal_bad_time"),
        (b"48.2", "signal_bad_time"),  # this signal has a time key: a bare number lacks it
        (b"hello", "signal_bad_json"),
        (b"\xff", "signal_bad_json"),
        (b"[" * 10 + b"]" * 10, "signal_bad_json"),
        (b"1" * 5000, "signal_bad_json"),
    ],
)
def test_bad_samples_are_refused_by_kind(payload: bytes, kind: str) -> None:
    m = SignalMap([SignalSpec("a/{machine}", "temperature", time="ts")], ("temperature",))
    with pytest.raises(PayloadError) as info:
        m.parse(0, payload, arrival_s=1.0)
    assert info.value.kind == kind


@pytest.mark.parametrize(
    ("stamp", "seconds"),
    [
        (1_700_000_000.25, 1_700_000_000.25),
        (1_700_000_000_250, 1_700_000_000.25),
        (1_700_000_000_250_000, 1_700_000_000.25),
        (1_700_000_000_250_000_000, 1_700_000_000.25),
    ],
)
def test_time_unit_follows_the_magnitude(stamp: float, seconds: float) -> None:
    assert to_seconds(stamp) == pytest.approx(seconds, abs=1e-6)
    m = SignalMap([SignalSpec("a/{machine}", "temperature", time="t")], ("temperature",))
    t, _ = m.parse(0, f'{{"t": {stamp}, "value": 1}}'.encode(), arrival_s=0.0)
    assert slot_of(t, 4.0) == 6_800_000_001


def test_bare_numbers_take_the_arrival_time_and_scale_applies() -> None:
    m = SignalMap([SignalSpec("a/{machine}", "power", scale=1000.0, offset=-5.0)], ("power",))
    assert m.parse(0, b" 1.5\n", arrival_s=42.0) == (42.0, 1495.0)
    assert m.parse(0, b'{"value": 2}', arrival_s=43.0) == (43.0, 1995.0)


@pytest.mark.parametrize("value_key", [None, "v"])
def test_encode_reads_back_exactly_in_float32(value_key: str | None) -> None:
    m = SignalMap(
        [SignalSpec("a/{machine}", "t", value=value_key, time="ts", scale=0.1, offset=3.0)],
        ("t",),
        sample_hz=10.0,
    )
    values = np.random.default_rng(0).normal(50, 20, 200).astype(np.float32)
    for i, v in enumerate(values):
        ts = slot_ns(17_000_000_000 + i, 10.0) / 1e9
        t, back = m.parse(0, m.encode(0, ts, float(v)), arrival_s=0.0)
        assert slot_of(t, 10.0) == 17_000_000_000 + i
        assert np.float32(back) == v


def test_a_publisher_needs_concrete_topics() -> None:
    m = SignalMap([SignalSpec("a/+/{machine}", "t")], ("t",))
    with pytest.raises(ValueError, match="write the level out"):
        m.topic(0, "m01")
