"""Plant sources (`[[opcua]]`, `[[modbus]]` in the signals file): readings pi_edge takes from
OPC UA servers and Modbus TCP devices itself, fed to the same assembler as MQTT readings.

    _core.py      pure: back-off, the sampling grid, held OPC UA values, Modbus read plans,
                  per-source counts
    opcua.py      the OPC UA shell (asyncua): subscribe, hold, sample on the grid
    modbus.py     the Modbus TCP shell (pymodbus): poll blocks on the grid, decode, scale
    runner.py     the `edge-sources` thread: an asyncio loop, a task per source, reconnect

The libraries are the `plant` extra; without them a file with sources is refused at start.
"""

from ._core import PROBLEMS
from .runner import INSTALL, SourceRunner, check_libraries

__all__ = ["INSTALL", "PROBLEMS", "SourceRunner", "check_libraries"]
