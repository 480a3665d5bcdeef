"""The SARIF multitool (npm @microsoft/sarif-multitool) with GitHub's ingestion rules.

``validate --rule-kind "Gh;Sarif"`` applies the rules GitHub code scanning enforces on
upload plus the SARIF spec's own; every error or warning it reports is a problem.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

PLATFORM_BINARY = Path("node_modules", "@microsoft", "sarif-multitool-linux", "Sarif.Multitool")


def multitool() -> list[str]:
    """The command to run. The npm wrapper passes its arguments through a shell, which would
    split "Gh;Sarif" at the semicolon: call the platform binary beside it when it is there."""
    override = os.environ.get("CI_ML_SARIF_MULTITOOL")
    if override:
        return [override]
    wrapper = shutil.which("sarif-multitool")
    if wrapper is None:
        raise RuntimeError("sarif-multitool is not installed (npm install -g "
                           "@microsoft/sarif-multitool; .ci/provision does it)")
    binary = Path(wrapper).resolve().parent / PLATFORM_BINARY
    return [str(binary)] if binary.is_file() else [wrapper]


def problems(paths: list[Path]) -> list[str]:
    """Every error and warning the GitHub and SARIF rules report, as 'file: id: message'."""
    if not paths:
        return []
    cmd = multitool()
    kinds = "Gh;Sarif" if len(cmd) == 1 and cmd[0].endswith("Multitool") else '"Gh;Sarif"'
    out: list[str] = []
    with tempfile.TemporaryDirectory(prefix="ci-ml-sarif-") as work:
        log = Path(work) / "validation.sarif"
        run = subprocess.run([*cmd, "validate", "--rule-kind", kinds, "--output", str(log),
                              *map(str, paths)], capture_output=True, text=True, timeout=600,
                             check=False)
        if not log.is_file():
            raise RuntimeError("sarif-multitool wrote no log: "
                               f"{(run.stdout + run.stderr)[-1000:]}")
        doc = json.loads(log.read_text("utf-8-sig"))
    for result in doc["runs"][0].get("results", []):
        level = result.get("level", "warning")
        if level not in ("error", "warning"):
            continue
        message = result.get("message", {})
        text = message.get("text") or ", ".join(message.get("arguments", []))
        where = (result.get("locations") or [{}])[0].get("physicalLocation", {}).get(
            "artifactLocation", {}).get("uri", "?")
        out.append(f"{where}: {level} {result.get('ruleId')}: {text}")
    return out
