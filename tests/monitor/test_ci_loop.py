"""The loop in real CI clients: the scheduled monitor job of the generated pipelines runs in
act and in gitlab-ci-local on drifted traffic and starts the training pipeline through a
local stand-in of the CI system's API, which records the call and checks its credentials.
The pipeline it starts is an ordinary one: the gate judges the retrained model."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from ci_ml.serve.model import ServedModel
from tests.ci.clients import (
    CLIENT_TIMEOUT_S,
    Source,
    action_placeholders,
    ci_project,
    client_env,
    generate,
    installs,
    job_env,
    run_gitlab_ci_local,
    tool,
)
from tests.ci.conftest import source  # noqa: F401 - fixture
from tests.monitor.ci_api import ci_api
from tests.monitor.conftest import WINDOW_ROWS
from tests.monitor.replay import Split, draw, log_lines, repredict, write_log

pytestmark = [pytest.mark.slow]
TOKEN = "ci-token-for-the-stand-in"
TRAINING_JOBS = {"data-check", "train", "prune", "scan-code", "scan-deps", "scan-model",
                 "scan-dast", "gate-staging", "promote-staging"}


def drifted_log(path: Path, model: ServedModel, test: Split, train: Split) -> Path:
    traffic = draw(test, model, 21, WINDOW_ROWS)
    j = int(train.x.std(axis=0).argmax())
    traffic.rows[:, j] += train.x[:, j].std()
    repredict(traffic, model)
    return write_log(path, log_lines(traffic, model.sha256))


def loop_project(work: Path, source: Source, trained: Path, log: Path,  # noqa: F811
                 trigger: dict[str, str]) -> Path:
    """The CI clients' example project with a monitor section: the served model and its
    request log are host paths, as a volume mounted on a self-hosted runner would be."""
    repo = ci_project(work, source)
    cfg = repo / "ci-ml.yaml"
    doc = yaml.safe_load(cfg.read_text())
    doc["monitor"] = {"schedule": "17 5 * * *", "model": str(trained / "out/candidate/model.onnx"),
                      "log": str(log), "window": "6h", "trigger": trigger}
    cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
    return repo


def test_the_generated_workflow_with_a_schedule_passes_the_linters(
        tmp_path: Path, source: Source, trained: Path) -> None:  # noqa: F811
    repo = loop_project(tmp_path, source, trained, tmp_path / "requests.jsonl",
                        {"kind": "github-workflow", "project": "acme/digits"})
    generate(repo, "github")
    workflow = repo / ".github" / "workflows" / "ci-ml.yml"
    doc = yaml.safe_load(workflow.read_text())
    assert doc[True]["schedule"] == [{"cron": "17 5 * * *"}]        # `on:` loads as True
    assert "retrain_reason" in doc[True]["workflow_dispatch"]["inputs"]
    assert doc["jobs"]["monitor"]["if"] == "${{ github.event_name == 'schedule' }}"
    assert doc["jobs"]["monitor"]["permissions"] == {"contents": "read", "actions": "write"}
    for job_id, job in doc["jobs"].items():
        if job_id != "monitor":
            assert "github.event_name != 'schedule'" in job["if"], job_id
    for cmd in ([tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows",
                 str(workflow)], [tool("zizmor"), "--offline", str(repo / ".github")]):
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def _act(repo: Path, work: Path, source: Source, *args: str  # noqa: F811
         ) -> subprocess.CompletedProcess[str]:
    """act on the host, as in tests/ci: the job installs ci-ml[monitor] from the pinned
    commit through the generated setup step (environments kept in CI_ML_VENV_CACHE)."""
    env_flags = [flag for name, value in job_env(source).items() if name != "CI_ML_VENV_CACHE"
                 for flag in ("--env", f"{name}={value}")]
    return subprocess.run(
        [tool("act"), *args, "-P", "ubuntu-latest=-self-hosted", "--action-offline-mode",
         "--action-cache-path", str(work / "act-cache"), "--no-cache-server",
         "--defaultbranch", "main", "--var", f"CI_ML_VENV_CACHE={source.cache}",
         "--env", f"CI_ML_OUT={work / 'out'}", "--env", f"CI_ML_CACHE={work / 'cache'}",
         *env_flags, *action_placeholders(work / "placeholders")],
        cwd=repo, capture_output=True, text=True, env=client_env(),
        timeout=CLIENT_TIMEOUT_S, check=False)


def test_scheduled_monitor_job_in_act_dispatches_the_training_workflow(
        tmp_path: Path, source: Source, trained: Path, digits_model: ServedModel,  # noqa: F811
        test_split: Split, train_split: Split) -> None:
    log = drifted_log(tmp_path / "requests.jsonl", digits_model, test_split, train_split)
    with ci_api(TOKEN) as api:
        repo = loop_project(tmp_path, source, trained, log, {
            "kind": "github-workflow", "api_url": api.url, "project": "acme/digits"})
        generate(repo, "github")
        run = _act(repo, tmp_path, source, "schedule", "-j", "monitor", "--secret",
                   f"GITHUB_TOKEN={TOKEN}")
    # Retraining is due: the job fails (exit 1) after dispatching the training workflow.
    assert run.returncode != 0
    assert "monitor: retrain (feature_drift:" in run.stdout, run.stdout[-3000:]
    (call,) = api.calls
    assert call.path == "/repos/acme/digits/actions/workflows/ci-ml.yml/dispatches"
    assert call.headers["authorization"] == f"Bearer {TOKEN}" and call.status == 204
    body = call.json()
    assert body["ref"] == "main"
    assert body["inputs"]["retrain_reason"].startswith("retrain (feature_drift:")
    report = json.loads((tmp_path / "out" / "monitor-report.json").read_text())
    assert report["trigger"]["status"] == 204 and report["decision"]["retrain"] is True
    assert TOKEN not in run.stdout + run.stderr
    # The dispatched run is the ordinary pipeline: training, scans, the gate and the
    # staging promotion, without the monitor job (act's dry run plans the jobs it would run).
    plan = _act(repo, tmp_path, source, "workflow_dispatch", "-n")
    assert plan.returncode == 0, plan.stdout[-3000:] + plan.stderr[-2000:]
    for job in TRAINING_JOBS:
        assert f"[ci-ml/{_title(repo, job)}" in plan.stdout, job
    assert "[ci-ml/monitor" not in plan.stdout


def _title(repo: Path, job: str) -> str:
    doc = yaml.safe_load((repo / ".github" / "workflows" / "ci-ml.yml").read_text())
    return str(doc["jobs"][job]["name"])


def test_scheduled_monitor_job_in_gitlab_ci_local_triggers_a_pipeline(
        tmp_path: Path, source: Source, trained: Path, digits_model: ServedModel,  # noqa: F811
        test_split: Split, train_split: Split) -> None:
    log = drifted_log(tmp_path / "requests.jsonl", digits_model, test_split, train_split)
    with ci_api(TOKEN) as api:
        repo = loop_project(tmp_path, source, trained, log, {
            "kind": "gitlab", "api_url": f"{api.url}/api/v4", "project": "group/digits"})
        generate(repo, "gitlab")
        run = run_gitlab_ci_local(repo, source, variables={
            "CI_PIPELINE_SOURCE": "schedule", "CI_ML_TRIGGER_TOKEN": TOKEN})
    assert set(run.results) == {"ci-ml-monitor"}, run.raw[-3000:]
    assert run.results["ci-ml-monitor"] == "FAIL"      # retraining due: exit 1
    # The job installed what `ci-ml monitor` needs (and the registry's client), nothing more.
    assert installs(run.logs["ci-ml-monitor"]) == [source.requirement("[monitor,oci]")]
    (call,) = api.calls
    assert call.path == "/api/v4/projects/group%2Fdigits/trigger/pipeline"
    form = call.form()
    assert form["token"] == TOKEN and form["ref"] == "main"
    assert form["variables[CI_ML_RETRAIN_REASON]"].startswith("retrain (feature_drift:")
    assert TOKEN not in run.raw
    # A triggered pipeline runs the training jobs and promotes like a push; no monitor job.
    listed = subprocess.run([tool("gitlab-ci-local"), "--list", "--variable",
                             "CI_PIPELINE_SOURCE=trigger"], cwd=repo, capture_output=True,
                            text=True, env=client_env(), check=False)
    names = {line.split()[0] for line in listed.stdout.splitlines()[1:] if line.strip()}
    assert {f"ci-ml-{job}" for job in TRAINING_JOBS} <= names, listed.stdout
    assert "ci-ml-monitor" not in names
