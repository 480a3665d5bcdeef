"""Where the CI jobs look for each scanner's reports under the out dir.

The pipelines upload these when they exist: SARIF to GitHub code scanning (one
category per scanner) and GitLab's security report types. Report writers use
the same names, so the two sides agree.
"""

from __future__ import annotations

# scanner -> (GitLab `artifacts:reports` type, file name under the out dir)
GITLAB_REPORTS: dict[str, tuple[str, str]] = {
    "code": ("sast", "gl-sast-report.json"),
    "model": ("sast", "gl-sast-model-report.json"),
    "deps": ("dependency_scanning", "gl-dependency-scanning-report.json"),
    "iac": ("sast", "gl-sast-iac-report.json"),
    "image": ("container_scanning", "gl-container-scanning-report.json"),
    "dast": ("dast", "gl-dast-report.json"),
}
GATE_DOTENV = "gate.env"  # CI_ML_DECISION, CI_ML_STAGE, CI_ML_GATE_EXIT_CODE (GitLab dotenv report)
JUNIT = "junit.xml"
SUMMARY = "summary.md"


SARIF_DIR = "scans"


def sarif_path(scanner: str) -> str:
    """One SARIF file per scanner, uploaded with the category ``ci-ml-<scanner>``."""
    return f"{SARIF_DIR}/{scanner}.sarif"


def sarif_category(scanner: str) -> str:
    return f"ci-ml-{scanner}"
