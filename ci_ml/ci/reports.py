"""Which report files the CI jobs hand to GitHub and GitLab, named by their writers.

Every `ci-ml scan` command and the gate write, under the out dir, ``report.sarif``
(one SARIF run per scanner, each with its own ``automationDetails.id``
``ci-ml/<scanner>/``, which GitHub takes as the code-scanning category) and the
``gl-*-report.json`` GitLab security reports of the scanners present
(``ci_ml/report``). The names come from there, so the two sides cannot drift.
"""

from __future__ import annotations

from ci_ml.report.gitlab import FILE_NAMES
from ci_ml.report.security import SARIF_NAME

# GitLab `artifacts:reports` type -> file name under the out dir, for the scan jobs.
GITLAB_SECURITY_REPORTS: dict[str, str] = dict(FILE_NAMES)
SARIF = SARIF_NAME
GATE_DOTENV = "gate.env"  # CI_ML_DECISION, CI_ML_STAGE, CI_ML_GATE_EXIT_CODE (GitLab dotenv report)
JUNIT = "junit.xml"
SUMMARY = "summary.md"
