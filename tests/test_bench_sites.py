"""The benches' site files are the machine types' own declarations, not copies of them."""

from __future__ import annotations

import tomllib

from bench._sites import site_toml
from bench.demo_load import SITE
from bench.drift_recovery import FAN_SITE
from protocol.machine_type import DEFAULT_TYPE, Site
from sensor_sim.fan import FAN_TYPE


def test_a_site_file_written_from_a_type_reads_back_as_that_type() -> None:
    site = Site.from_dict(tomllib.loads(site_toml([FAN_TYPE], builtin_machines=["b*"])))
    assert site.names == ("default", "fan")
    assert site["fan"] == FAN_TYPE
    assert site["default"].classes == DEFAULT_TYPE.classes
    assert site["default"].machines == ("b*",)


def test_the_benches_declare_the_simulators_fan() -> None:
    assert Site.from_dict(tomllib.loads(FAN_SITE))["fan"] == FAN_TYPE
    two = Site.from_dict(tomllib.loads(SITE))
    assert two["fan"] == FAN_TYPE and two.type_of("b01") is two["default"]
