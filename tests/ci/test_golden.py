"""Generated files are committed: regenerating them must give the same bytes.

The example's pipelines (fixtures/example) and ci-ml's published steps (actions/,
gitlab/) all come from ci_ml/templates/; after changing a template, regenerate with
`ci-ml generate github|gitlab --config fixtures/example/ci-ml.yaml` and
`python -m ci_ml.ci.assets`.
"""

from __future__ import annotations

import pytest

from ci_ml.ci.assets import main as assets_main
from ci_ml.ci.assets import published_files
from ci_ml.ci.generate import drift
from tests.conftest import EXAMPLE, REPO, run_cli


@pytest.mark.parametrize("target", ["github", "gitlab"])
def test_example_golden_files_are_current(target: str) -> None:
    result = run_cli("generate", target, "--config", EXAMPLE / "ci-ml.yaml", "--check")
    assert result.code == 0, result.stdout[-3000:] + result.stderr


def test_published_actions_and_components_are_current() -> None:
    stale = drift(published_files(), REPO)
    assert not stale, "".join(item.diff for item in stale)[-3000:]
    assert assets_main(["--check", "--root", str(REPO)]) == 0


def test_published_steps_cover_every_step() -> None:
    paths = {str(f.path) for f in published_files()}
    for step in ("setup", "data-check", "train", "prune", "scan", "gate", "promote", "deploy",
                 "monitor"):
        assert f"actions/{step}/action.yml" in paths
        assert f"gitlab/{step}.yml" in paths
