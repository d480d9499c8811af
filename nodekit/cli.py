"""What every edgeloop command shares: the exit codes, the version, quiet logging set-up.

Exit codes (the same for `python -m sensor_sim`, `pi_edge`, `jetson_trainer` and `console`):

    0  EXIT_OK        done
    1  EXIT_FAILED    the command ran and failed (broker unreachable, file unreadable, a node
                      that cannot go on); the log line says what to do
    2  EXIT_USAGE     a flag, environment variable or config key is wrong (also argparse's code)
    3  EXIT_REFUSED   an input was refused: a model bundle or data set failed its checks

SIGTERM and Ctrl-C stop a service cleanly (offline status published) and it exits 0.

>>> from protocol.errors import ConfigError, BundleError, EdgeloopError
>>> [exit_code(e) for e in (ConfigError("x"), BundleError("x"), EdgeloopError("x"))]
[2, 3, 1]
"""

from __future__ import annotations

import logging
import sys

from protocol._version import __version__
from protocol.errors import BundleError, ConfigError, EdgeloopError

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "__version__",
    "exit_code",
    "report",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3


def exit_code(exc: BaseException) -> int:
    """The exit code for an error that ended a command."""
    if isinstance(exc, ConfigError):
        return EXIT_USAGE
    if isinstance(exc, BundleError) or getattr(exc, "refused", False):
        return EXIT_REFUSED
    return EXIT_FAILED


def report(exc: EdgeloopError, logger: logging.Logger) -> int:
    """Log `exc` as one line (stderr if logging is not set up yet); return its exit code."""
    code = exit_code(exc)
    what = {EXIT_USAGE: "bad setting", EXIT_REFUSED: "refused"}.get(code, "error")
    if logging.getLogger().handlers:
        logger.error("%s: %s", what, exc)
    else:
        sys.stderr.write(f"{logger.name}: {what}: {exc}\n")
    return code
