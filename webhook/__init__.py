"""kubewrit's decision point: canonical actions, policies, provenance chains, writs."""

from importlib import metadata

try:
    __version__ = metadata.version("kubewrit")  # pyproject.toml is the one place it is set
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
