"""The one version of edgeloop; pyproject.toml reads it from here."""

__version__ = "0.1.0"
