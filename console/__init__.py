"""edgeloop's operator console: one Textual screen for the whole site, over MQTT.

A fifth role that meets the others only through `protocol` and the broker: it reads the
retained statuses, machine states and predictions, and sends (each after a confirmation)
simulator drift commands, maintenance labels and node rollbacks. `python -m console --broker
HOST:PORT`; `--serve PORT` runs it in a browser through textual-serve. See console/README.md.
"""

from protocol import __version__

__all__ = ["__version__"]
