"""The CI systems ``ci-ml generate`` knows, by the name used on the command line."""

from __future__ import annotations

from ci_ml.ci.github import GitHubTarget
from ci_ml.ci.gitlab import GitLabTarget
from ci_ml.ci.interface import CiTarget

TARGETS: dict[str, type[CiTarget]] = {
    "github": GitHubTarget,
    "gitlab": GitLabTarget,
}
