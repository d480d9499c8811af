"""Per-signal readings for several machine types (pi_edge/intake/signal_types.py), pure: each
file checked against its own type, assembled with its type's window and grid, readings routed by
their machine's type; and the node's config reading one file or several."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from nodekit.settings import build, resolve
from pi_edge import EdgeConfig
from pi_edge.intake.signal_types import SignalIntake, TypeSignals, plan_signals
from protocol import CHANNELS, ConfigError, PayloadError
from protocol.machine_type import DEFAULT_TYPE, Channel, MachineType
from protocol.signals import SignalMap, SignalSpec, slot_ns

PRESS = MachineType(
    "press",
    (Channel("force", "kN"), Channel("stroke", "mm"), Channel("current", "A")),
    sample_hz=50.0,
    window_length=32,
    classes=("ok", "jam"),
    machines=("press-*",),
)
DEFAULT = dataclasses.replace(DEFAULT_TYPE, machines=("m*",))
TYPES: dict[str, MachineType | None] = {"default": DEFAULT, "press": PRESS}
SITE = """
version = 1
[[types]]
builtin = "default"
machines = ["m*"]
[[types]]
name = "press"
sample_hz = 50.0
window_length = 32
classes = ["ok", "jam"]
machines = ["press-*"]
channels = [{ name = "force" }, { name = "stroke" }, { name = "current" }]
"""


def signals(channels: tuple[str, ...], head: str = "", prefix: str = "plant") -> str:
    """A signals file mapping each channel to `{prefix}/{machine}/{channel}`, timed."""
    body = "".join(
        f'[[signal]]\ntopic = "{prefix}/{{machine}}/{c}"\nchannel = "{c}"\ntime = "ts"\n'
        for c in channels
    )
    return head + body


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def two_files(tmp_path: Path) -> tuple[Path, Path]:
    """The built-in type's file as before machine types (no machine_type, its own 2 Hz grid)
    and the press's, naming its type and leaving its rate to the type (50 Hz)."""
    seed = write(tmp_path, "seed.toml", signals(CHANNELS, "sample_hz = 2.0\n"))
    press = write(tmp_path, "press.toml", signals(PRESS.channel_names, 'machine_type = "press"\n'))
    return seed, press


def test_each_file_is_its_types_channels_window_and_grid(tmp_path: Path) -> None:
    seed, press = two_files(tmp_path)
    plans = plan_signals([seed, press], TYPES)
    assert [(p.name, p.window_length) for p in plans] == [("default", 60), ("press", 32)]
    assert plans[0].signals.channels == CHANNELS and plans[0].signals.sample_hz == 2.0
    assert plans[1].signals.channels == ("force", "stroke", "current")
    assert plans[1].signals.sample_hz == 50.0  # the type's declared rate
    assert plans[0].signals.machine_type is None and plans[1].signals.machine_type == "press"
    # one file without machine_type on a node of the built-in type alone: as before
    (only,) = plan_signals([seed], {"default": DEFAULT_TYPE}, route_all=True)
    assert (only.name, only.window_length, only.signals.sample_hz) == ("default", 60, 2.0)


@pytest.mark.parametrize(
    ("head", "channels", "words"),
    [  # a press file checked against the press's channels, not the first type's
        ('machine_type = "press"\n', CHANNELS, "unknown channel(s) ['power', 'pressure'"),
        ('machine_type = "press"\n', ("force", "stroke"), "not mapped ['current']"),
        ('machine_type = "press"\nsample_hz = 10.0\n', PRESS.channel_names, "sample_hz 10.0 is"),
        ('machine_type = "lathe"\n', PRESS.channel_names, "'lathe', which this node does not"),
        ('machine_type = "a/b"\n', PRESS.channel_names, "machine_type 'a/b' is invalid"),
        ("machine_type = 3\n", PRESS.channel_names, "machine_type must be a type name"),
    ],
)
def test_a_wrong_file_is_refused_naming_the_file_and_its_type(
    tmp_path: Path, head: str, channels: tuple[str, ...], words: str
) -> None:
    path = write(tmp_path, "press.toml", signals(channels, head))
    with pytest.raises(ConfigError) as info:
        plan_signals([path], TYPES)
    assert words in str(info.value) and str(path) in str(info.value)


def test_the_rate_of_a_wrong_file_names_the_types_rate(tmp_path: Path) -> None:
    path = write(
        tmp_path, "p.toml", signals(PRESS.channel_names, 'machine_type="press"\nsample_hz=1.0\n')
    )
    with pytest.raises(ConfigError, match=r"machine type press's sample_hz 50 .*write 50"):
        plan_signals([path], TYPES)


def test_two_files_of_one_type_and_an_undeclared_type_are_refused(tmp_path: Path) -> None:
    seed, _ = two_files(tmp_path)
    again = write(tmp_path, "again.toml", signals(CHANNELS, "sample_hz = 2.0\n"))
    with pytest.raises(ConfigError, match=r"both of machine type 'default' \(a file without"):
        plan_signals([seed, again], TYPES)
    press = write(tmp_path, "p.toml", signals(PRESS.channel_names, 'machine_type = "press"\n'))
    with pytest.raises(ConfigError, match=r"which no site file declares.*\(--site\)"):
        plan_signals([press], {"default": DEFAULT, "press": None})


def _modbus(machine: str, channels: tuple[str, ...], name: str = "drive1") -> str:
    regs = "".join(
        f'[[modbus.register]]\nmachine = "{machine}"\nchannel = "{c}"\naddress = {i}\n'
        for i, c in enumerate(channels)
    )
    return f'[[modbus]]\nhost = "127.0.0.1"\nname = "{name}"\n{regs}'


def test_a_source_point_of_a_machine_of_another_type_is_refused_at_start(tmp_path: Path) -> None:
    head = 'machine_type = "press"\n'
    good = write(tmp_path, "ok.toml", head + _modbus("press-1", PRESS.channel_names))
    assert plan_signals([good], TYPES)[0].signals.points[0].machine == "press-1"
    bad = write(tmp_path, "bad.toml", head + _modbus("m07", PRESS.channel_names))
    with pytest.raises(ConfigError, match=r"names machine 'm07', which .* machine type default"):
        plan_signals([bad], TYPES)
    nobody = write(tmp_path, "x.toml", head + _modbus("lathe-1", PRESS.channel_names))
    with pytest.raises(ConfigError, match="no type this node serves"):
        plan_signals([nobody], TYPES)
    seed = write(tmp_path, "seed.toml", _modbus("m07", CHANNELS))
    with pytest.raises(ConfigError, match=r"source\(s\) \['drive1'\] more than once"):
        plan_signals([seed, good], TYPES)


def _intake(tmp_path: Path) -> SignalIntake:
    """Both types on the same topics for the channel they share (`current`): the press's file
    maps force, stroke and current under plant/; the seed's power is plant/{m}/current too."""
    seed = write(
        tmp_path,
        "seed.toml",
        "sample_hz = 1.0\nmax_gap_s = 0.0\n"
        + signals(("temperature", "vibration", "pressure"))
        + '[[signal]]\ntopic = "plant/{machine}/current"\nchannel = "power"\ntime = "ts"\n',
    )
    press = write(tmp_path, "press.toml", signals(PRESS.channel_names, 'machine_type = "press"\n'))
    return SignalIntake(plan_signals([seed, press], TYPES))


def _type_of(machine: str) -> str | None:
    return {"m": "default", "p": "press"}.get(machine[0])


def test_a_reading_goes_to_its_machines_types_file_even_on_a_shared_topic(tmp_path: Path) -> None:
    intake = _intake(tmp_path)
    assert intake.filters() == [
        "plant/+/temperature",
        "plant/+/vibration",
        "plant/+/pressure",
        "plant/+/current",
        "plant/+/force",
        "plant/+/stroke",
    ]
    assert intake.match("plant/m01/current", _type_of) == (0, "m01", 3)  # the seed's power
    assert intake.match("plant/press-1/current", _type_of) == (1, "press-1", 2)
    assert intake.match("plant/press-1/force", _type_of) == (1, "press-1", 0)
    assert intake.match("other/press-1/force", _type_of) is None  # no file's: not a reading
    with pytest.raises(PayloadError, match="'press-1' is a press; topic") as info:
        intake.match("plant/press-1/temperature", _type_of)
    assert info.value.kind == "signal_wrong_type"
    with pytest.raises(PayloadError, match=r"'m01' is a default;.*machine type press") as info:
        intake.match("plant/m01/force", _type_of)
    assert info.value.kind == "signal_wrong_type"
    with pytest.raises(PayloadError, match="of no machine type this node serves") as info:
        intake.match("plant/x9/force", _type_of)
    assert info.value.kind == "no_type"
    with pytest.raises(PayloadError) as info:
        intake.match("plant/bad id/force", _type_of)
    assert info.value.kind == "bad_id"
    # a node of one type routes nothing: the first file whose pattern matches takes it
    assert intake.match("plant/press-1/current", None) == (0, "press-1", 3)
    intake.check(1, "press-1", _type_of)
    intake.check(0, "press-1", None)
    with pytest.raises(PayloadError, match="its source point is in the signals file of") as info:
        intake.check(1, "m01", _type_of)
    assert info.value.kind == "signal_wrong_type"


def test_each_type_is_cut_at_its_own_window_length_on_its_own_grid(tmp_path: Path) -> None:
    intake = _intake(tmp_path)
    base = 1_700_000_160.0  # a multiple of 60 s and of 32 / 50 s (of 240 s)
    press_out, seed_out = [], []
    for r in range(32):  # one press window: 32 slots at 50 Hz, 0.64 s
        for c in range(3):
            press_out += intake.feed(1, "press-1", c, base + r / 50.0, float(r * 3 + c))
    for r in range(60):  # one seed window: 60 slots at 1 Hz
        for c in range(4):
            seed_out += intake.feed(0, "m01", c, base + r, float(-r))
    (pw,) = press_out
    (sw,) = seed_out
    assert pw.data.shape == (32, 3) and sw.data.shape == (60, 4)
    assert pw.seq == int(base * 50) // 32 and sw.seq == int(base) // 60
    assert pw.timestamp_ns == slot_ns(int(base * 50), 50.0) == int(base) * 10**9
    np.testing.assert_array_equal(pw.data, np.arange(96, dtype=np.float32).reshape(32, 3))
    detail = intake.detail()
    assert detail["signal_windows"] == 2 and detail["signal_samples"] == 96 + 240
    assert detail["machines"] == 2
    assert detail["types"]["press"] == {"signal_samples": 96, "signal_windows": 1, "machines": 1}
    intake.forget(["press-1", "m01"])
    assert intake.detail()["machines"] == 0


def test_one_files_detail_is_as_before() -> None:
    m = SignalMap([SignalSpec("p/{machine}/a", "a")], ("a",))
    intake = SignalIntake([TypeSignals("default", m, 2)])
    intake.feed(0, "m1", 0, 10.0, 1.0)
    assert intake.detail() == {"signal_samples": 1, "machines": 1}  # no "types" key


def test_the_node_config_takes_one_file_as_before_or_several_by_flag(tmp_path: Path) -> None:
    seed, press = two_files(tmp_path)
    site = write(tmp_path, "site.toml", SITE)
    one = build(EdgeConfig, signals=seed, state_dir=tmp_path / "s")  # a Path, as code passes
    assert one.intake.signals == (seed,)
    assert [p.name for p in one.signal_plans()] == ["default"]
    flags = {"signals": f"{seed},{press}", "site": str(site), "state_dir": str(tmp_path / "s")}
    both = resolve(EdgeConfig, flags=flags)
    assert both.intake.signals == (seed, press)
    assert [(p.name, p.signals.sample_hz) for p in both.signal_plans()] == [
        ("default", 2.0),
        ("press", 50.0),
    ]
    del flags["site"]  # the built-in type alone: the press's file is of no type it serves
    with pytest.raises(ConfigError, match=r"press.toml is of machine type 'press', which this"):
        resolve(EdgeConfig, flags=flags)


def test_the_shipped_pair_of_files_reads_for_the_shipped_site_on_node_and_simulator(
    tmp_path: Path,
) -> None:
    from sensor_sim.config import resolve_sim

    deploy = Path(__file__).resolve().parents[2] / "deploy"
    pair = f"{deploy / 'signals.example.toml'},{deploy / 'signals.fan.example.toml'}"
    flags = {"site": str(deploy / "site.example.toml"), "signals": pair}
    plans = resolve(EdgeConfig, flags={**flags, "state_dir": str(tmp_path)}).signal_plans()
    assert [(p.name, p.window_length, p.signals.sample_hz) for p in plans] == [
        ("default", 60, 60.0),
        ("fan", 128, 1000.0),
    ]
    assert list(resolve_sim(flags={"signals": pair, "fans": 2}).signal_maps()) == ["default", "fan"]
