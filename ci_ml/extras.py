"""ci-ml's optional parts, installed per CI job: which extra brings what, and the error when one is missing.

The core install (``pip install ci-ml``) runs the gate, promotion, verification, the
generators, the reports and the scan adapters of external tools; it has no torch. A
command or step that needs more names its extra::

    error: ci-ml train needs the [train] extra (torch is not installed): pip install 'ci-ml[train]'

The import names below must match the distributions ``pyproject.toml`` lists under
each extra (a test compares them).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass

from ci_ml.errors import UsageError


@dataclass(frozen=True)
class Extra:
    name: str
    purpose: str
    modules: tuple[str, ...]      # import names that must be importable

    def missing(self) -> tuple[str, ...]:
        return tuple(m for m in self.modules if not module_available(m))


SERVER_MODULES = ("onnxruntime", "uvicorn", "httptools", "prometheus_client", "orjson")

DATA_MODULES = ("pyarrow",)
# Running and measuring an ONNX model on the data: what a train.command project's train and
# prune steps need (the team's script brings its own framework; ci-ml brings no torch).
EVALUATE_MODULES = ("onnx", "onnxruntime", "matplotlib", *DATA_MODULES)

EXTRAS: dict[str, Extra] = {
    "data": Extra("data", "reading CSV and Parquet data (data check, data infer)", DATA_MODULES),
    "evaluate": Extra("evaluate", "measuring ONNX models on the data (train and prune of a "
                      "project with train.command)", EVALUATE_MODULES),
    "train": Extra("train", "training, pruning, ONNX export and plots",
                   ("torch", "torch_pruning", "safetensors", "onnxscript", *EVALUATE_MODULES)),
    "serve": Extra("serve", "the ONNX Runtime model server (serve, scan dast)", SERVER_MODULES),
    "monitor": Extra("monitor", "ci-ml monitor (drift and quality tests, per-feature plots)",
                     (*SERVER_MODULES, "scipy", "matplotlib")),
    "scan": Extra("scan", "the scanners ci-ml runs (bandit, pip-audit, ONNX checks, the ZAP client)",
                  ("bandit", "pip_audit", "onnx", "zapv2")),
    # deploy build validates the model with ONNX Runtime and pins its version in the image.
    "deploy": Extra("deploy", "the model-server image and Kubernetes manifests",
                    ("docker", "kubernetes_validate", *SERVER_MODULES)),
    # Registry backends on servers (registry.backend); the local directory needs nothing.
    "oci": Extra("oci", "the OCI registry backend (GHCR, GitLab's registry, distribution)",
                 ("oras",)),
    "mlflow": Extra("mlflow", "the MLflow registry backend", ("mlflow",)),
}
# Extras that `[all]` leaves out: MLflow's client is large and only its users need it.
OPT_IN = frozenset({"mlflow"})


class MissingExtraError(UsageError):
    """A command or step needs optional parts of ci-ml that are not installed (exit 2)."""

    def __init__(self, extra: Extra | tuple[Extra, ...], what: str,
                 missing: tuple[str, ...]) -> None:
        self.extras = extra if isinstance(extra, tuple) else (extra,)
        self.extra = self.extras[0]
        names = [e.name for e in self.extras]
        label = (f"the [{names[0]}] extra" if len(names) == 1 else
                 "the " + " and ".join(f"[{n}]" for n in names) + " extras")
        super().__init__(f"{what} {'needs' if len(names) == 1 else 'need'} {label} "
                         f"({', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not "
                         f"installed): pip install 'ci-ml[{','.join(names)}]'")


def module_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def missing(extra: str) -> tuple[str, ...]:
    return EXTRAS[extra].missing()


def require(extra: str, what: str) -> None:
    """Raise :class:`MissingExtraError` unless every module of ``extra`` is importable."""
    absent = EXTRAS[extra].missing()
    if absent:
        raise MissingExtraError(EXTRAS[extra], what, absent)


def require_all(needs: Sequence[tuple[str, str]]) -> None:
    """``(extra, what)`` pairs: one error naming every missing extra and one pip command
    that installs them all, rather than one missing extra per attempt."""
    short = [(EXTRAS[extra], what) for extra, what in needs if EXTRAS[extra].missing()]
    if not short:
        return
    extras = tuple(sorted({e for e, _ in short}, key=lambda e: e.name))
    modules = tuple(dict.fromkeys(m for e in extras for m in e.missing()))
    whats = ", ".join(dict.fromkeys(what for _, what in short))
    raise MissingExtraError(extras, whats, modules)


def extra_of_module(module: str) -> Extra | None:
    """The extra that brings ``module`` (a top-level import name), if one does."""
    top = module.split(".")[0]
    return next((e for e in EXTRAS.values() if top in e.modules), None)
