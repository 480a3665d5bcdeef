"""The generated pipelines call autofix when a step fails: the GitHub action's and the
GitLab component's own scripts, run with bash on a real transient failure."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from ci_ml.autofix.history import JsonlHistory
from tests.autofix.servers import Flaky, flaky_server
from tests.conftest import REPO

GITHUB_SCAN = REPO / "actions" / "scan" / "action.yml"
GITLAB_SCAN = REPO / "gitlab" / "scan.yml"


def github_script() -> str:
    action = yaml.safe_load(GITHUB_SCAN.read_text())
    return str(next(s for s in action["runs"]["steps"] if s.get("id") == "run")["run"])


def gitlab_script() -> str:
    docs = list(yaml.safe_load_all(GITLAB_SCAN.read_text()))
    job = next(v for d in docs if isinstance(d, dict) for k, v in d.items()
               if k.startswith("ci-ml-scan-"))
    return "set -eo pipefail\n" + "\n".join(job["script"])


@contextmanager
def recovering(server: Flaky) -> Iterator[None]:
    """The service answers 503 until one request has failed, then recovers."""
    server.status = 503
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.02):
            if server.requests:
                server.status = 200
                return

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()


@pytest.fixture
def deps_project(example_project: Path) -> Path:
    cfg = example_project / "ci-ml.yaml"
    text = cfg.read_text().replace("advisories: ../advisories/pypa-vulns",
                                   "advisories: null\n    service: osv")
    cfg.write_text(text + "autofix: {backoff_s: 0.2}\n")
    return example_project


def run_script(script: str, project: Path, server: Flaky, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(REPO), "CI": "true",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "CI_ML_CONFIG": "ci-ml.yaml", "CI_ML_OUT": "out", "CI_ML_SCANNER": "deps",
            "PIP_AUDIT_VULNERABILITY_SERVICE": "osv",
            "PIP_AUDIT_OSV_URL": server.url + "/v1/query", **env}
    return subprocess.run(["bash", "-c", script], cwd=project, env=full, capture_output=True,
                          text=True, check=False, timeout=600)


@pytest.mark.parametrize("target", ["github", "gitlab"])
def test_a_transient_failure_in_ci_is_retried_by_autofix(deps_project: Path, tmp_path: Path,
                                                         target: str) -> None:
    outputs, summary = tmp_path / "outputs", tmp_path / "summary"
    script = github_script() if target == "github" else gitlab_script()
    with flaky_server() as server, recovering(server):
        proc = run_script(script, deps_project, server, GITHUB_OUTPUT=str(outputs),
                          GITHUB_STEP_SUMMARY=str(summary), CI_JOB_ID="77")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "class: transient" in proc.stdout
    runs = [r for r in JsonlHistory(deps_project / ".ci-ml-cache" / "history").records()
            if r.step == "scan-deps"]
    assert [(r.attempt, r.status) for r in runs] == [(0, "failed"), (1, "passed")]
    assert runs[0].run_id == runs[1].run_id
    if target == "github":
        assert "exit-code=0" in outputs.read_text()


def test_autofix_in_ci_can_be_turned_off(deps_project: Path, tmp_path: Path) -> None:
    with flaky_server() as server, recovering(server):
        proc = run_script(github_script(), deps_project, server, CI_ML_AUTOFIX="0",
                          GITHUB_OUTPUT=str(tmp_path / "o"), GITHUB_STEP_SUMMARY=str(tmp_path / "s"))
    assert proc.returncode == 3
    assert "recommendation" not in proc.stdout
