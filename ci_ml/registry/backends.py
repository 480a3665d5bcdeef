"""Which registry a config points at: ``registry.backend`` and ``registry.path``.

``CI_ML_REGISTRY`` (a directory) overrides ``registry.path``, so CI jobs and tests
can point every command at one registry without editing the config.
"""

from __future__ import annotations

import os
from pathlib import Path

from ci_ml.config import Config
from ci_ml.registry.interface import Registry
from ci_ml.registry.local import LocalRegistry

REGISTRY_ENV = "CI_ML_REGISTRY"
BACKENDS: dict[str, type[LocalRegistry]] = {"local": LocalRegistry}


def registry_root(config: Config) -> Path:
    env = os.environ.get(REGISTRY_ENV)
    if env:
        return Path(env).resolve()
    return config.resolve(str(config.section("registry")["path"]))


def open_registry(config: Config) -> Registry:
    section = config.section("registry")
    backend = BACKENDS[str(section["backend"])]
    return backend(registry_root(config), float(section["lock_timeout_s"]))
