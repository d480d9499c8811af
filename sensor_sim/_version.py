"""The simulator's software version (published in its status)."""

__version__ = "0.1.0"
