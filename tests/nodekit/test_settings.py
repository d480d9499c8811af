"""nodekit.settings: flags, env vars and file keys derived from one dataclass; one error type."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from nodekit.settings import (
    add_arguments,
    broker_setting,
    check,
    env_names,
    flag_of,
    flags_of,
    resolve,
    setting,
)
from protocol import ConfigError


@dataclass(frozen=True, slots=True)
class Sample:
    store: Path = setting(help="where things go")
    broker: str = setting("127.0.0.1:1883", help="HOST:PORT")
    rate: float = setting(10.0, help="per second", low=0.0, high=100.0, flag="--hz")
    count: int = setting(4, help="how many", low=1, high=64)
    ids: tuple[str, ...] = setting(("a",), help="ids")
    key: Path | None = setting(None, help="optional file")
    mode: str = setting("fast", help="mode", choices=("fast", "slow"))
    dashboard: bool = setting(True, help="live view")
    insecure: bool = setting(False, help="dev only")
    hidden: int = setting(3, help="file only", cli=False, env="")
    count_env: int = setting(2, help="own env name", env="EDGELOOP_SAMPLE_COUNT")

    def __post_init__(self) -> None:
        check(self)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--config", type=Path)
    add_arguments(p, Sample)
    return p.parse_args(argv)


def test_flags_beat_env_beat_file_beat_defaults(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('[sim]\nstore = "/f"\nbroker = "file:1"\ncount = 8\nhidden = 9\nrate = 5\n')
    env = {"EDGELOOP_BROKER": "env:2", "EDGELOOP_COUNT": "16", "EDGELOOP_IDS": "x, y"}
    args = parse(["--count", "32", "--no-dashboard"])
    cfg = resolve(Sample, file=toml, section="sim", env=env, flags=flags_of(args, Sample))
    assert cfg.store == Path("/f")
    assert cfg.broker == "env:2"
    assert cfg.count == 32
    assert cfg.rate == 5.0
    assert cfg.hidden == 9
    assert cfg.ids == ("x", "y")
    assert cfg.dashboard is False
    assert cfg.insecure is False
    assert cfg.key is None


def test_derived_names_and_overrides() -> None:
    assert flag_of(Sample, "rate") == "--hz"
    assert flag_of(Sample, "dashboard") == "--no-dashboard"
    assert flag_of(Sample, "insecure") == "--insecure"
    names = env_names(Sample)
    assert names["EDGELOOP_BROKER"] == "broker"
    assert names["EDGELOOP_SAMPLE_COUNT"] == "count_env"
    assert "hidden" not in names.values()
    help_text = argparse.ArgumentParser()
    add_arguments(help_text, Sample)
    text = help_text.format_help()
    assert "--hz" in text and "EDGELOOP_RATE" in text and "(default 10.0)" in text
    assert "--hidden" not in text


def test_unset_flags_do_not_override_env() -> None:
    args = parse([])
    assert flags_of(args, Sample) == {}
    cfg = resolve(Sample, env={"EDGELOOP_STORE": "/e"}, flags=flags_of(args, Sample))
    assert cfg.store == Path("/e") and cfg.dashboard is True


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"EDGELOOP_COUNT": "0"}, "count 0 must be an integer in 1..64"),
        ({"EDGELOOP_COUNT": "2.5"}, "count='2.5'"),
        ({"EDGELOOP_RATE": "nan"}, "not a finite number"),
        ({"EDGELOOP_RATE": "1e999"}, "not a finite number"),
        ({"EDGELOOP_COUNT": "9" * 5000}, "count="),
        ({"EDGELOOP_MODE": "medium"}, "must be one of"),
        ({"EDGELOOP_INSECURE": "maybe"}, "not a boolean"),
    ],
)
def test_bad_values_name_the_setting_and_where_to_set_it(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        resolve(Sample, env={"EDGELOOP_STORE": "/s", **env})


def test_out_of_range_message_names_flag_and_env() -> None:
    with pytest.raises(ConfigError) as err:
        resolve(Sample, env={"EDGELOOP_STORE": "/s"}, flags={"rate": "500"})
    assert "--hz or EDGELOOP_RATE" in str(err.value)


def test_unknown_file_keys_and_unreadable_files_are_refused(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('stor = "/x"\n')
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) \['stor'\]"):
        resolve(Sample, file=toml)
    toml.write_text("store = [unclosed\n")
    with pytest.raises(ConfigError, match="cannot read config file"):
        resolve(Sample, file=toml)
    with pytest.raises(ConfigError, match="cannot read config file"):
        resolve(Sample, file=tmp_path / "missing.toml")
    toml.write_text("count = true\nstore = '/s'\n")
    with pytest.raises(ConfigError, match="count=True"):
        resolve(Sample, file=toml)


def test_a_missing_required_setting_says_how_to_give_it() -> None:
    with pytest.raises(ConfigError, match=r"missing setting.*store.*--store or EDGELOOP_STORE"):
        resolve(Sample, env={})


def test_a_config_built_in_code_is_checked_too() -> None:
    with pytest.raises(ConfigError, match="count"):
        Sample(store=Path("/s"), count=0)
    with pytest.raises(ConfigError, match="must be true or false"):
        Sample(store=Path("/s"), dashboard="yes")  # type: ignore[arg-type]


def test_a_shared_file_gives_each_role_its_table_and_the_common_keys(tmp_path: Path) -> None:
    toml = tmp_path / "site.toml"
    toml.write_text('broker = "hub:1"\n[sim]\nstore = "/s"\ncount = 5\n[edge]\nbatch_max = 8\n')
    cfg = resolve(Sample, file=toml, section="sim")
    assert (cfg.broker, cfg.store, cfg.count) == ("hub:1", Path("/s"), 5)
    # a role without a table of its own takes only the common keys
    only_common = resolve(Sample, file=toml, section="trainer", env={"EDGELOOP_STORE": "/t"})
    assert (only_common.broker, only_common.count) == ("hub:1", 4)


def test_hostile_values_are_refused_briefly(tmp_path: Path) -> None:
    deep = tmp_path / "deep.toml"
    deep.write_text("store = " + "[" * 50_000 + "]" * 50_000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        resolve(Sample, file=deep)
    with pytest.raises(ConfigError) as err:
        resolve(Sample, env={"EDGELOOP_STORE": "/s", "EDGELOOP_COUNT": "9" * 400})
    assert "count" in str(err.value) and len(str(err.value)) < 300
    flat = tmp_path / "flat.toml"
    flat.write_text('store = "/s"\nids = 5\n')
    with pytest.raises(ConfigError, match="not a list or a comma-separated string"):
        resolve(Sample, file=flat)


@dataclass(frozen=True, slots=True)
class Prefixed:
    ENV_PREFIX: ClassVar[str] = "EDGELOOP_SIM_"

    hz: float = setting(1.0, help="rate")
    machines: int = setting(2, help="count")
    broker: str = broker_setting()


def test_a_class_env_prefix_names_its_variables_but_not_the_shared_broker() -> None:
    assert env_names(Prefixed) == {
        "EDGELOOP_SIM_HZ": "hz",
        "EDGELOOP_SIM_MACHINES": "machines",
        "EDGELOOP_BROKER": "broker",
    }
    cfg = resolve(Prefixed, env={"EDGELOOP_MACHINES": "9", "EDGELOOP_SIM_MACHINES": "3"})
    assert cfg.machines == 3
