"""Starting the training pipeline when retraining is due: GitHub and GitLab behind ``Trigger``.

- ``github-workflow``: ``POST /repos/{repo}/actions/workflows/{workflow}/dispatches``
  (``workflow_dispatch``) with the reason as the input ``retrain_reason``;
- ``github-repository``: ``POST /repos/{repo}/dispatches`` (``repository_dispatch``),
  the reason and the decision in ``client_payload``;
- ``gitlab``: ``POST /projects/{id}/trigger/pipeline`` with a trigger (or CI job)
  token and the variable ``CI_ML_RETRAIN_REASON``.

The token comes from an environment variable (never the config), is sent only over
HTTPS (plain HTTP only to a loopback address, for local stand-ins), never follows a
redirect, and never appears in an error or the report.
"""

from __future__ import annotations

import ipaddress
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ci_ml.monitor.interface import (
    MonitorInputError,
    Trigger,
    TriggerError,
    TriggerRequest,
    TriggerResult,
)

REASON_INPUT = "retrain_reason"          # the workflow_dispatch input
REASON_VARIABLE = "CI_ML_RETRAIN_REASON"  # the GitLab pipeline variable
TOKEN_VARIABLE = "CI_ML_TRIGGER_TOKEN"  # noqa: S105 - a variable name: the generated jobs set it
MAX_REASON = 1000                         # GitHub caps an input's length; keep the line short
TIMEOUT_S = 30.0


@dataclass(frozen=True)
class TriggerSettings:
    kind: str
    api_url: str
    project: str            # owner/name (GitHub) or numeric id or path (GitLab)
    ref: str
    token: str
    workflow: str = "ci-ml.yml"
    event_type: str = "ci-ml-retrain"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_api_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.username or parts.password:
        raise MonitorInputError("monitor.trigger.api_url: put no credentials in the URL")
    if parts.scheme == "https" and parts.hostname:
        return url.rstrip("/")
    if parts.scheme == "http" and parts.hostname and _loopback(parts.hostname):
        return url.rstrip("/")
    raise MonitorInputError(f"monitor.trigger.api_url: {url!r} must be https:// (plain http only "
                            "to a loopback address): the request carries a token")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None     # a redirect is an error: the token must not follow it elsewhere


def _post(url: str, body: bytes, headers: Mapping[str, str], auth: Mapping[str, str]
          ) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method="POST",  # noqa: S310 - scheme checked
                                 headers=dict(headers))
    for name, value in auth.items():
        req.add_unredirected_header(name, value)
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(req, timeout=TIMEOUT_S) as resp:
            return int(resp.status), resp.read(65536)
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read(2048)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise TriggerError(f"trigger: {url} did not answer ({getattr(exc, 'reason', exc)})") \
            from exc


def _message(body: bytes) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        return ""
    if isinstance(doc, dict):
        return str(doc.get("message") or doc.get("error") or "")[:200]
    return ""


class _Adapter(Trigger):
    expected: ClassVar[tuple[int, ...]] = (200, 201, 204)

    def __init__(self, settings: TriggerSettings) -> None:
        self.settings = settings
        self.api = check_api_url(settings.api_url)

    def _call(self, url: str, body: bytes, headers: Mapping[str, str],
              auth: Mapping[str, str]) -> TriggerResult:
        status, answer = _post(url, body, headers, auth)
        if status not in self.expected:
            detail = _message(answer)
            raise TriggerError(f"trigger {self.kind}: {url} answered HTTP {status}"
                               + (f": {detail}" if detail else ""))
        return TriggerResult(self.kind, url, status, _message(answer))


class GitHubWorkflowTrigger(_Adapter):
    kind = "github-workflow"

    def fire(self, request: TriggerRequest) -> TriggerResult:
        s = self.settings
        workflow = urllib.parse.quote(s.workflow, safe="")
        url = f"{self.api}/repos/{s.project}/actions/workflows/{workflow}/dispatches"
        body = json.dumps({"ref": request.ref or s.ref,
                           "inputs": {REASON_INPUT: request.reason[:MAX_REASON]}}).encode()
        return self._call(url, body, _github_headers(), {"Authorization": f"Bearer {s.token}"})


class GitHubRepositoryTrigger(_Adapter):
    kind = "github-repository"

    def fire(self, request: TriggerRequest) -> TriggerResult:
        s = self.settings
        url = f"{self.api}/repos/{s.project}/dispatches"
        body = json.dumps({"event_type": s.event_type, "client_payload": {
            "reason": request.reason[:MAX_REASON], "decision": dict(request.details),
            "ref": request.ref or s.ref}}).encode()
        return self._call(url, body, _github_headers(), {"Authorization": f"Bearer {s.token}"})


class GitLabPipelineTrigger(_Adapter):
    kind = "gitlab"

    def fire(self, request: TriggerRequest) -> TriggerResult:
        s = self.settings
        project = urllib.parse.quote(s.project, safe="")
        url = f"{self.api}/projects/{project}/trigger/pipeline"
        # The trigger API takes its token as a form field, not a header.
        form = urllib.parse.urlencode({"token": s.token, "ref": request.ref or s.ref,
                                       f"variables[{REASON_VARIABLE}]":
                                           request.reason[:MAX_REASON]}).encode()
        return self._call(url, form, {"Content-Type": "application/x-www-form-urlencoded"}, {})


def _github_headers() -> dict[str, str]:
    return {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28",
            "Content-Type": "application/json", "User-Agent": "ci-ml"}


TRIGGERS: dict[str, type[_Adapter]] = {
    GitHubWorkflowTrigger.kind: GitHubWorkflowTrigger,
    GitHubRepositoryTrigger.kind: GitHubRepositoryTrigger,
    GitLabPipelineTrigger.kind: GitLabPipelineTrigger,
}

# Defaults from the CI system's own environment: (api url, project, ref, token) variables.
_ENV_DEFAULTS = {
    "github": ("GITHUB_API_URL", "https://api.github.com", "GITHUB_REPOSITORY",
               "GITHUB_REF_NAME", "GITHUB_TOKEN"),
    "gitlab": ("CI_API_V4_URL", "https://gitlab.com/api/v4", "CI_PROJECT_ID",
               "CI_DEFAULT_BRANCH", "CI_JOB_TOKEN"),
}


def make_trigger(section: Mapping[str, Any], env: Mapping[str, str] | None = None
                 ) -> Trigger | None:
    """The configured trigger (``monitor.trigger``), or None when ``kind`` is ``none``."""
    env = os.environ if env is None else env
    kind = str(section.get("kind", "none"))
    if kind == "none":
        return None
    if kind not in TRIGGERS:
        raise MonitorInputError(f"monitor.trigger.kind: unknown trigger {kind!r} (one of none, "
                                f"{', '.join(TRIGGERS)})")
    api_var, api_default, project_var, ref_var, token_var = \
        _ENV_DEFAULTS["gitlab" if kind == "gitlab" else "github"]
    # The generated pipelines hand the token over as CI_ML_TRIGGER_TOKEN.
    token_env = str(section.get("token_env") or (TOKEN_VARIABLE if env.get(TOKEN_VARIABLE)
                                                 else token_var))
    token = env.get(token_env, "")
    if not token:
        raise MonitorInputError(f"monitor.trigger: the token variable {token_env} is empty or "
                                "unset")
    project = str(section.get("project") or env.get(project_var, ""))
    if not project:
        raise MonitorInputError(f"monitor.trigger.project: not set and {project_var} is empty")
    ref = str(section.get("ref") or env.get(ref_var, "") or "main")
    settings = TriggerSettings(
        kind=kind, api_url=str(section.get("api_url") or env.get(api_var) or api_default),
        project=project, ref=ref, token=token,
        workflow=str(section.get("workflow") or "ci-ml.yml"),
        event_type=str(section.get("event_type") or "ci-ml-retrain"))
    return TRIGGERS[kind](settings)
