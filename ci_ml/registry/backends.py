"""Which registry a config points at: ``registry.backend`` and where it lives.

``CI_ML_REGISTRY`` overrides both, so CI jobs and tests can point every command at one
registry without editing the config: ``oci://HOST/REPOSITORY`` (the oci backend),
``mlflow+http(s)://HOST[:PORT]`` (the mlflow backend at that tracking URI), anything
else is a directory (the local backend).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ci_ml.config import Config
from ci_ml.extras import require
from ci_ml.registry.history import Registry
from ci_ml.registry.interface import RegistryBackend, RegistryError, RegistryState
from ci_ml.registry.local import LocalBackend
from ci_ml.registry.trust import configured_trust

if TYPE_CHECKING:
    from ci_ml.deploy.render import RenderPlan, Workload

REGISTRY_ENV = "CI_ML_REGISTRY"
MLFLOW_SCHEMES = ("mlflow+http://", "mlflow+https://")


def registry_root(config: Config) -> Path:
    env = os.environ.get(REGISTRY_ENV)
    if env:
        return Path(env).resolve()
    return config.resolve(str(config.section("registry")["path"]))


def selected(config: Config) -> tuple[str, str | None]:
    """(backend name, location from the environment or None)."""
    env = os.environ.get(REGISTRY_ENV, "").strip()
    if env.startswith("oci://"):
        return "oci", env
    if env.startswith(MLFLOW_SCHEMES):
        return "mlflow", env.removeprefix("mlflow+")
    if env:
        return "local", env
    return str(config.section("registry")["backend"]), None


def _timeout(config: Config) -> float:
    return float(config.section("registry")["lock_timeout_s"])


def _local(config: Config, location: str | None) -> RegistryBackend:
    root = Path(location).resolve() if location else \
        config.resolve(str(config.section("registry")["path"]))
    return LocalBackend(root, _timeout(config))


def _oci(config: Config, location: str | None) -> RegistryBackend:
    section = config.section("registry")["oci"]
    reference = location or section.get("repository")
    if not reference:
        raise RegistryError("registry.backend is oci but no repository is named: set "
                            f"registry.oci.repository or {REGISTRY_ENV}=oci://HOST/REPOSITORY")
    require("oci", "registry.backend oci")
    from ci_ml.registry.oci import OciBackend

    return OciBackend(str(reference), insecure=bool(section.get("insecure")),
                      lock_timeout_s=_timeout(config))


def _mlflow(config: Config, location: str | None) -> RegistryBackend:
    section = config.section("registry")["mlflow"]
    uri = location or section.get("tracking_uri")
    if not uri:
        raise RegistryError("registry.backend is mlflow but no tracking server is named: set "
                            f"registry.mlflow.tracking_uri or {REGISTRY_ENV}=mlflow+http://HOST")
    require("mlflow", "registry.backend mlflow")
    from ci_ml.registry.mlflow import MlflowBackend

    return MlflowBackend(str(uri), str(section.get("model_name") or config.project_name),
                         lock_timeout_s=_timeout(config))


BACKENDS: dict[str, Callable[[Config, str | None], RegistryBackend]] = {
    "local": _local, "oci": _oci, "mlflow": _mlflow}


def open_backend(config: Config) -> RegistryBackend:
    name, location = selected(config)
    return BACKENDS[name](config, location)


def open_registry(config: Config, *, write: bool = False,
                  key: Path | None = None) -> Registry:
    """The configured registry; ``write`` loads the signing key (before anything is written),
    ``key`` is a public key given on the command line."""
    trust = configured_trust(config, write=write, explicit_key=key)
    return Registry(open_backend(config), trust)


def model_references(config: Config, state: RegistryState, plan: RenderPlan) -> RenderPlan:
    """The plan with each workload's model pulled from the OCI registry by manifest digest
    (``deploy.kubernetes.model_from: oci``); the artifact's layers must be the files the
    verified history attests."""
    from ci_ml.registry.oci import OciBackend

    backend = open_backend(config)
    if not isinstance(backend, OciBackend):
        raise RegistryError("deploy.kubernetes.model_from is oci, but the registry is "
                            f"{backend.location} (set registry.backend: oci)")

    def pulled(workload: Workload) -> Workload:
        ref = backend.artifact_reference(state.version(workload.version))
        return replace(workload, model_ref=ref)

    return replace(plan, stable=pulled(plan.stable),
                   canary=pulled(plan.canary) if plan.canary else None)
