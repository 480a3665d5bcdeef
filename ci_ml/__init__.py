"""ci-ml: CI/CD steps for machine-learning projects with security built in."""

from importlib import metadata as _metadata

# One source: the version pyproject.toml gives the installed distribution. The model-server
# image carries only ci_ml/serve (no distribution metadata): it says so rather than guess.
try:
    __version__ = _metadata.version("ci-ml")
except _metadata.PackageNotFoundError:
    __version__ = "0+unknown"
