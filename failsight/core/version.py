"""The one version source: the installed distribution's metadata (pyproject.toml's version)."""

from importlib import metadata

try:
    __version__ = metadata.version("failsight")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
