"""Plant sources (`[[opcua]]`, `[[modbus]]` in the signals file): readings pi_edge takes from
OPC UA servers and Modbus TCP devices itself, fed to the same assembler as MQTT readings.

    _core.py      pure: back-off, the sampling grid, held OPC UA values, Modbus read plans,
                  per-source counts
    opcua.py      the OPC UA shell (asyncua): subscribe, hold, sample on the grid
    modbus.py     the Modbus TCP shell (pymodbus): poll blocks on the grid, decode, scale
    runner.py     the `edge-sources` thread: an asyncio loop, a task per source, reconnect

The libraries are the `plant` extra; without them a file with sources is refused at start.
"""

from typing import TYPE_CHECKING, Any

from ._core import PROBLEMS

if TYPE_CHECKING:
    from .runner import INSTALL, SourceRunner, check_libraries

__all__ = ["INSTALL", "PROBLEMS", "SourceRunner", "check_libraries"]


def __getattr__(name: str) -> Any:
    """The runner on first use: it imports asyncio (~2 MB of RSS), which a node with no plant
    sources never needs (bench/edge.py's RSS at demo load)."""
    if name in ("INSTALL", "SourceRunner", "check_libraries"):
        from . import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
