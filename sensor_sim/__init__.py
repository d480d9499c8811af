"""edgeloop's sensor simulator: seed 000's class physics, live MQTT publishing, drift injection.

Pure pieces (physics, drift, machine, fleet, dataset, dashboard.render) take values and an
explicit `numpy.random.Generator`; publisher.py and dashboard.run_live are the I/O shells.
See sensor_sim/README.md.
"""

from protocol import __version__

from .config import Connection, SimConfig, resolve_sim
from .dataset import DEFAULT_SIZES, SPLITS, make_split, write_datasets
from .drift import DriftEffect, DriftSettings, apply, effect
from .errors import SimError
from .fleet import Fleet, FleetConfig, machine_ids
from .machine import Machine, MachineConfig
from .physics import DRIFT, INFER, PROFILES, STANDARD, Profile, generate, sample, sine_moments
from .plant import Plant, PlantConfig, PlantStream
from .plant_dataset import load_plant_split, write_plant_datasets
from .plant_fleet import PlantFleet
from .publisher import RunReport, Simulator, send_command
from .snapshot import MachineRow, Snapshot

__all__ = [
    "DEFAULT_SIZES",
    "DRIFT",
    "INFER",
    "PROFILES",
    "SPLITS",
    "STANDARD",
    "Connection",
    "DriftEffect",
    "DriftSettings",
    "Fleet",
    "FleetConfig",
    "Machine",
    "MachineConfig",
    "MachineRow",
    "Plant",
    "PlantConfig",
    "PlantFleet",
    "PlantStream",
    "Profile",
    "RunReport",
    "SimConfig",
    "SimError",
    "Simulator",
    "Snapshot",
    "__version__",
    "apply",
    "effect",
    "generate",
    "load_plant_split",
    "machine_ids",
    "make_split",
    "resolve_sim",
    "sample",
    "send_command",
    "sine_moments",
    "write_datasets",
    "write_plant_datasets",
]
