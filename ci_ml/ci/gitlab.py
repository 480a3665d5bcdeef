"""GitLab CI: one .gitlab-ci.yml including ci-ml's components, one per step.

The components (``spec: inputs``, ``$[[ inputs.x ]]``) are written next to the
pipeline (``.gitlab/ci-ml/<step>.yml``, `include: local`) unless the config
names a GitLab project that publishes them (`include: project` at a pinned ref).
The same files work with `include: remote` and as CI/CD catalog components.
"""

from __future__ import annotations

import re
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
from ci_ml.ci.pins import ZAP_IMAGE, ZAP_PORT
from ci_ml.ci.reports import GATE_DOTENV, GITLAB_SECURITY_REPORTS, JUNIT, SARIF
from ci_ml.ci.templates import render

PIPELINE_PATH = PurePosixPath(".gitlab-ci.yml")
VENDORED_DIR = PurePosixPath(".gitlab/ci-ml")
PUBLISHED_DIR = PurePosixPath("gitlab")


def component_text(step: str, python: str, package: str) -> str:
    return render(f"gitlab/component-{step}.yml.j2", version=ci_ml.__version__, python=python,
                  package=package, scanners=SCANNER_ORDER, gitlab_reports=GITLAB_SECURITY_REPORTS,
                  sarif=SARIF, dotenv=GATE_DOTENV, junit=JUNIT)


def release_regex(glob: str) -> str:
    """A GitLab rules regex literal matching the tags of a shell-style glob."""
    body = "".join(".*" if ch == "*" else re.escape(ch).replace("/", r"\/") for ch in glob)
    return f"/^{body}$/"


def _rules(job: Job, tag_regex: str, scheduled: bool = False) -> list[str]:
    if job.trigger is Trigger.SCHEDULE:
        return ['- if: $CI_PIPELINE_SOURCE == "schedule"']
    # With a scheduled monitor job, scheduled pipelines run that job only.
    head = ['- if: $CI_PIPELINE_SOURCE == "schedule"', "  when: never"] if scheduled else []
    if job.trigger is Trigger.ALWAYS:
        return [*head, "- when: on_success"]
    if job.trigger is Trigger.NOT_RELEASE:
        return [*head, "- if: $CI_COMMIT_TAG", "  when: never", "- when: on_success"]
    if job.trigger is Trigger.DEFAULT_BRANCH:
        sources = ("push", "trigger") if scheduled else ("push",)   # trigger: retraining
        return [*head, *(f"- if: '$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH"
                         f' && $CI_PIPELINE_SOURCE == "{source}"\'' for source in sources)]
    rule = [*head, f"- if: '$CI_COMMIT_TAG =~ {tag_regex}'"]
    if job.action == "promote":
        # A person starts the production promotion; the pipeline waits for it.
        rule += ["  when: manual", "  allow_failure: false"]
    return rule


class GitLabTarget(CiTarget):
    name = "gitlab"
    title = "GitLab CI"

    def _include(self, plan: PipelinePlan, step: str) -> str:
        published = plan.settings["gitlab"]["components"]
        if published is None:
            return f"- local: {VENDORED_DIR}/{step}.yml"
        # Continuation lines carry no indent: the template indents them under the `-`.
        return (f"- project: {published['project']}\nref: {published['ref']}\n"
                f"file: /{PUBLISHED_DIR}/{step}.yml")

    def pipeline_files(self, plan: PipelinePlan) -> list[GeneratedFile]:
        ci = plan.settings
        tag_regex = release_regex(str(ci["release_tags"]))
        pipeline = render(
            "gitlab/pipeline.yml.j2", version=plan.version, plan=plan, paths=plan.paths, ci=ci,
            include=lambda step: self._include(plan, step),
            rules=lambda job: _rules(job, tag_regex, plan.schedule is not None),
            zap_image=ZAP_IMAGE, zap_port=ZAP_PORT, release_regex=tag_regex,
            zap=any(job.zap for job in plan.jobs),
            job_names=", ".join(f"ci-ml-{job_id}" for job_id in plan.job_ids),
        )
        files = [GeneratedFile(PIPELINE_PATH, pipeline)]
        if ci["gitlab"]["components"] is None:
            files += [GeneratedFile(VENDORED_DIR / f"{step}.yml",
                                    component_text(step, str(ci["python"]), plan.package))
                      for step in STEP_ACTIONS]
        return files

    def step_files(self) -> list[GeneratedFile]:
        # Published components have no default requirement: the generated pipeline passes
        # each job's, pinned to the ref it includes the components from.
        return [GeneratedFile(PUBLISHED_DIR / f"{step}.yml", component_text(step, "3.11", ""))
                for step in STEP_ACTIONS]
