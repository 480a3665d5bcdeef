"""The retraining triggers against a local stand-in of GitHub's and GitLab's APIs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ci_ml.monitor.interface import MonitorInputError, TriggerError, TriggerRequest
from ci_ml.monitor.triggers import REASON_INPUT, REASON_VARIABLE, make_trigger
from ci_ml.serve.model import ServedModel
from tests.conftest import run_cli
from tests.monitor.ci_api import ci_api
from tests.monitor.conftest import WINDOW_ROWS
from tests.monitor.replay import Split, draw, log_lines, repredict, write_log

TOKEN = "ghs_test-token-0123456789"
REQUEST = TriggerRequest(reason="retrain (feature_drift:px42)",
                         details={"status": "retrain", "reasons": [{"code": "feature_drift"}]})


def test_workflow_dispatch_sends_the_reason_as_an_input_with_a_bearer_token() -> None:
    with ci_api(TOKEN) as api:
        trigger = make_trigger({"kind": "github-workflow", "api_url": api.url,
                                "workflow": "ci-ml.yml"},
                               {"GITHUB_TOKEN": TOKEN, "GITHUB_REPOSITORY": "acme/digits",
                                "GITHUB_REF_NAME": "main"})
        assert trigger is not None
        result = trigger.fire(REQUEST)
    assert result.status == 204
    (call,) = api.calls
    assert call.path == "/repos/acme/digits/actions/workflows/ci-ml.yml/dispatches"
    assert call.headers["authorization"] == f"Bearer {TOKEN}"
    assert call.headers["accept"] == "application/vnd.github+json"
    assert call.json() == {"ref": "main", "inputs": {REASON_INPUT: REQUEST.reason}}
    assert TOKEN not in json.dumps(result.to_json())


def test_repository_dispatch_carries_the_decision_in_the_payload() -> None:
    with ci_api(TOKEN) as api:
        trigger = make_trigger({"kind": "github-repository", "api_url": api.url,
                                "project": "acme/digits", "ref": "release"},
                               {"GITHUB_TOKEN": TOKEN})
        assert trigger is not None
        trigger.fire(REQUEST)
    (call,) = api.calls
    assert call.path == "/repos/acme/digits/dispatches"
    body = call.json()
    assert body["event_type"] == "ci-ml-retrain"
    assert body["client_payload"] == {"reason": REQUEST.reason, "decision": dict(REQUEST.details),
                                      "ref": "release"}


def test_gitlab_pipeline_trigger_posts_the_token_and_the_reason_variable() -> None:
    with ci_api(TOKEN) as api:
        trigger = make_trigger({"kind": "gitlab", "api_url": f"{api.url}/api/v4"},
                               {"CI_JOB_TOKEN": TOKEN, "CI_PROJECT_ID": "group/digits",
                                "CI_DEFAULT_BRANCH": "main"})
        assert trigger is not None
        result = trigger.fire(REQUEST)
    assert result.status == 201
    (call,) = api.calls
    assert call.path == "/api/v4/projects/group%2Fdigits/trigger/pipeline"
    assert call.form() == {"token": TOKEN, "ref": "main",
                           f"variables[{REASON_VARIABLE}]": REQUEST.reason}


@pytest.mark.parametrize("kind", ["github-workflow", "github-repository", "gitlab"])
def test_a_refused_token_is_a_tool_error_that_never_shows_the_token(kind: str) -> None:
    with ci_api("the-right-token") as api:
        base = api.url + ("/api/v4" if kind == "gitlab" else "")
        env = {"GITHUB_TOKEN": TOKEN, "CI_JOB_TOKEN": TOKEN}
        trigger = make_trigger({"kind": kind, "api_url": base, "project": "acme/digits"}, env)
        assert trigger is not None
        with pytest.raises(TriggerError) as info:
            trigger.fire(REQUEST)
    assert "HTTP 40" in str(info.value) and TOKEN not in str(info.value)


def test_a_redirect_is_not_followed_with_the_token() -> None:
    with ci_api(TOKEN) as elsewhere, ci_api(TOKEN) as api:
        api.redirect_to = elsewhere.url + "/repos/acme/digits/dispatches"
        trigger = make_trigger({"kind": "github-repository", "api_url": api.url,
                                "project": "acme/digits"}, {"GITHUB_TOKEN": TOKEN})
        assert trigger is not None
        with pytest.raises(TriggerError, match="HTTP 307"):
            trigger.fire(REQUEST)
    assert elsewhere.calls == []


@pytest.mark.parametrize("section, env, message", [
    ({"kind": "github-workflow", "api_url": "http://ci.example.com"}, {"GITHUB_TOKEN": "t",
     "GITHUB_REPOSITORY": "a/b"}, "must be https://"),
    ({"kind": "github-workflow", "api_url": "https://user:pw@api.example.com"},
     {"GITHUB_TOKEN": "t", "GITHUB_REPOSITORY": "a/b"}, "no credentials"),
    ({"kind": "github-workflow"}, {"GITHUB_REPOSITORY": "a/b"}, "GITHUB_TOKEN is empty"),
    ({"kind": "gitlab", "token_env": "TRIGGER_TOKEN"}, {"CI_JOB_TOKEN": "t",
     "CI_PROJECT_ID": "1"}, "TRIGGER_TOKEN is empty"),
    ({"kind": "github-repository"}, {"GITHUB_TOKEN": "t"}, "GITHUB_REPOSITORY is empty"),
])
def test_unusable_trigger_settings_are_input_errors(section: dict, env: dict,  # type: ignore[type-arg]
                                                    message: str) -> None:
    with pytest.raises(MonitorInputError, match=message):
        make_trigger(section, env)


def test_monitor_trigger_starts_the_training_pipeline_on_drift_only(
        trained: Path, tmp_path: Path, digits_model: ServedModel, test_split: Split,
        train_split: Split) -> None:
    cfg = tmp_path / "ci-ml.yaml"
    drifted = draw(test_split, digits_model, 11, WINDOW_ROWS)
    j = int(train_split.x.std(axis=0).argmax())
    drifted.rows[:, j] += train_split.x[:, j].std()
    repredict(drifted, digits_model)
    clean = draw(test_split, digits_model, 12, WINDOW_ROWS)
    with ci_api(TOKEN) as api:
        cfg.write_text((trained / "ci-ml.yaml").read_text().replace(
            "data/", str(trained / "data") + "/")
            + f"\nmonitor:\n  trigger:\n    kind: github-workflow\n    api_url: {api.url}\n"
              "    project: acme/digits\n    token_env: RETRAIN_TOKEN\n")
        args = ("monitor", "--config", cfg, "--model", trained / "out/candidate/model.onnx",
                "--trigger", "--no-html")
        env = {"RETRAIN_TOKEN": TOKEN}
        ok = run_cli(*args, "--out", tmp_path / "ok", "--log", write_log(
            tmp_path / "clean.jsonl", log_lines(clean, digits_model.sha256)), env=env)
        assert ok.code == 0 and api.calls == [], ok.output
        due = run_cli(*args, "--out", tmp_path / "due", "--log", write_log(
            tmp_path / "drift.jsonl", log_lines(drifted, digits_model.sha256)), env=env)
    assert due.code == 1, due.output
    (call,) = api.calls
    reason = call.json()["inputs"][REASON_INPUT]
    assert reason.startswith(f"retrain (feature_drift:{test_split.features[j]}")
    doc = json.loads((tmp_path / "due" / "monitor-report.json").read_text())
    assert doc["trigger"]["status"] == 204 and doc["trigger"]["kind"] == "github-workflow"
    assert "triggered retraining" in due.stdout
    assert TOKEN not in due.output + (tmp_path / "due" / "monitor-report.json").read_text()
