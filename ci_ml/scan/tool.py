"""Running an external tool: every way it can fail becomes one ``ScanError``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ci_ml.scan.interface import ScanError

DEFAULT_TIMEOUT_S = 900.0


def find_tool(name: str) -> str:
    """``CI_ML_TOOL_<NAME>`` if set, else the tool beside our interpreter (same venv), else PATH."""
    override = os.environ.get(f"CI_ML_TOOL_{name.upper().replace('-', '_')}")
    if override:
        if not (Path(override).is_file() and os.access(override, os.X_OK)):
            raise ScanError(f"{name}: CI_ML_TOOL_{name.upper().replace('-', '_')}={override} "
                            "is not an executable file; the scan did not run")
        return override
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise ScanError(f"{name} is not installed (not beside {sys.executable} nor on PATH); "
                        "the scan did not run")
    return found


def run_tool(
    cmd: Sequence[str], *, tool: str, ok_codes: Sequence[int] = (0,), cwd: Path | None = None,
    timeout: float = DEFAULT_TIMEOUT_S, env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(
            list(cmd), cwd=cwd, capture_output=True, text=True, timeout=timeout,
            env={**os.environ, **(env or {})}, check=False,
        )
    except FileNotFoundError as exc:
        raise ScanError(f"{tool} is not installed ({exc.filename}); the scan did not run") from exc
    except subprocess.TimeoutExpired as exc:
        raise ScanError(f"{tool} timed out after {timeout:.0f}s; the scan did not run") from exc
    if proc.returncode not in ok_codes:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        last = detail[-1] if detail else "no output"
        raise ScanError(f"{tool} failed with exit code {proc.returncode}: {last[:300]}")
    return proc


def parse_json_output(text: str, tool: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        snippet = text.strip()[:80] or "empty output"
        raise ScanError(f"{tool} printed output that is not JSON ({snippet!r}); "
                        "the scan did not run") from exc


def version_of(cmd: Sequence[str], tool: str) -> str:
    proc = run_tool(cmd, tool=tool, timeout=60)
    text = (proc.stdout or proc.stderr).strip().splitlines()
    return text[0].strip() if text else "unknown"
