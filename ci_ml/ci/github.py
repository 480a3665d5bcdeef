"""GitHub Actions: one workflow calling ci-ml's composite actions, one per step.

The actions are written next to the workflow (``.github/actions/ci-ml/<step>``)
unless the config names a published copy pinned by commit SHA. Remote actions
other than checkout are skipped under act (``!env.ACT``): act cannot fetch them
offline, and on a self-hosted act run the jobs share the step cache directly.
"""

from __future__ import annotations

from pathlib import PurePosixPath

import ci_ml
from ci_ml.ci.interface import (
    SCANNER_ORDER,
    STEP_ACTIONS,
    CiTarget,
    GeneratedFile,
    Job,
    PipelinePlan,
    Trigger,
)
from ci_ml.ci.pins import ACTIONS, ZAP_IMAGE, ZAP_PORT
from ci_ml.ci.reports import SARIF
from ci_ml.ci.templates import render

WORKFLOW_PATH = PurePosixPath(".github/workflows/ci-ml.yml")
VENDORED_DIR = PurePosixPath(".github/actions/ci-ml")
PUBLISHED_DIR = PurePosixPath("actions")


def action_text(step: str, python: str, package: str) -> str:
    return render(f"github/action-{step}.yml.j2", version=ci_ml.__version__, pins=ACTIONS,
                  python=python, package=package, scanners=SCANNER_ORDER, sarif=SARIF)


def _condition(job: Job, default_branch: str, scheduled: bool = False) -> str:
    push = "github.event_name == 'push'"
    if scheduled:
        # A run the monitor dispatched (retraining) promotes like a push to the branch.
        push = ("(github.event_name == 'push' || github.event_name == 'workflow_dispatch' || "
                "github.event_name == 'repository_dispatch')")
    condition = {
        Trigger.ALWAYS: "",
        Trigger.NOT_RELEASE: "github.ref_type != 'tag'",
        Trigger.DEFAULT_BRANCH: f"{push} && github.ref == 'refs/heads/{default_branch}'",
        Trigger.RELEASE: "github.ref_type == 'tag'",
        Trigger.SCHEDULE: "github.event_name == 'schedule'",
    }[job.trigger]
    if scheduled and job.trigger is not Trigger.SCHEDULE:
        return " && ".join(c for c in ("github.event_name != 'schedule'", condition) if c)
    return condition


class GitHubTarget(CiTarget):
    name = "github"
    title = "GitHub Actions"

    def _uses(self, plan: PipelinePlan, step: str) -> str:
        published = plan.settings["github"]["actions"]
        if published is None:
            # `./` and not GitHub's newer `$/`: act cannot resolve `$/` yet, and with the
            # default checkout `./` is the workflow's own commit, which `$/` guarantees.
            return f"./{VENDORED_DIR}/{step} # zizmor: ignore[self-repository]"
        version = published.get("version") or f"v{plan.version}"
        return f"{published['repository']}/{PUBLISHED_DIR}/{step}@{published['sha']} # {version}"

    def pipeline_files(self, plan: PipelinePlan) -> list[GeneratedFile]:
        ci = plan.settings
        hash_inputs = ", ".join(f"'{glob}'" for glob in plan.paths.cache_inputs)
        workflow = render(
            "github/workflow.yml.j2", version=plan.version, plan=plan, paths=plan.paths, ci=ci,
            pins=ACTIONS, uses=lambda step: self._uses(plan, step),
            condition=lambda job: _condition(job, str(ci["default_branch"]),
                                             plan.schedule is not None),
            hash_inputs=hash_inputs, zap_image=ZAP_IMAGE, zap_port=ZAP_PORT,
        )
        files = [GeneratedFile(WORKFLOW_PATH, workflow)]
        if ci["github"]["actions"] is None:
            files += [GeneratedFile(VENDORED_DIR / step / "action.yml",
                                    action_text(step, str(ci["python"]), plan.package))
                      for step in STEP_ACTIONS]
        return files

    def step_files(self) -> list[GeneratedFile]:
        # Published actions have no default requirement: the generated workflow passes each
        # job's, pinned to the commit it takes the actions from.
        return [GeneratedFile(PUBLISHED_DIR / step / "action.yml", action_text(step, "3.11", ""))
                for step in STEP_ACTIONS]
