"""ci-ml: CI/CD steps for machine-learning projects with security built in."""

__version__ = "0.1.0"
