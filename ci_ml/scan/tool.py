"""Running an external tool: every way it can fail becomes one ``ScanError``."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ci_ml.scan.interface import ScanError

DEFAULT_TIMEOUT_S = 900.0


def tool_env_var(name: str) -> str:
    """``CI_ML_TOOL_<NAME>`` names the executable to use instead of the one found."""
    return "CI_ML_TOOL_" + name.upper().replace("-", "_")


def find_tool(name: str) -> str:
    """``$CI_ML_TOOL_<NAME>`` if set, else the tool beside our interpreter (same venv), else PATH."""
    override = os.environ.get(tool_env_var(name))
    if override:
        if not (Path(override).is_file() and os.access(override, os.X_OK)):
            raise ScanError(f"{name}: {tool_env_var(name)}={override} is not an executable file; "
                            "the scan did not run")
        return override
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise ScanError(f"{name} is not installed (not beside {sys.executable} nor on PATH; "
                        "pip install 'ci-ml[scan]' brings bandit and pip-audit); the scan did not run")
    return found


def run_tool(
    cmd: Sequence[str], *, tool: str, ok_codes: Sequence[int] = (0,), cwd: Path | None = None,
    timeout: float = DEFAULT_TIMEOUT_S, env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(
            list(cmd), cwd=cwd, capture_output=True, text=True, timeout=timeout,
            env={**os.environ, **(env or {})}, check=False, errors="replace",
        )
    except FileNotFoundError as exc:
        raise ScanError(f"{tool} is not installed ({exc.filename}); the scan did not run") from exc
    except PermissionError as exc:
        raise ScanError(f"{tool} cannot be executed ({exc.strerror}); "
                        "the scan did not run") from exc
    except subprocess.TimeoutExpired as exc:
        raise ScanError(f"{tool} timed out after {timeout:g}s; the scan did not run") from exc
    if proc.returncode not in ok_codes:
        raise ScanError(f"{tool} failed with exit code {proc.returncode}: "
                        f"{last_line(proc.stderr or proc.stdout)}; the scan did not run")
    return proc


def last_line(text: str) -> str:
    """The most telling line of a tool's error output: the last one that says fatal or
    error (trivy's FATAL line comes before its list of causes), else the last line."""
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    if not lines:
        return "no output"
    telling = [ln for ln in lines if "fatal" in ln.lower()] or [
        ln for ln in lines if "error" in ln.lower()]
    return (telling[-1] if telling else lines[-1])[:300]


def parse_json_output(text: str, tool: str, stderr: str = "") -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        snippet = text.strip()[:80] or "empty output"
        detail = f" (stderr: {last_line(stderr)})" if stderr.strip() else ""
        raise ScanError(f"{tool} printed output that is not JSON ({snippet!r}){detail}; "
                        "the scan did not run") from exc


def version_of(cmd: Sequence[str], tool: str) -> str:
    proc = run_tool(cmd, tool=tool, timeout=60)
    text = (proc.stdout or proc.stderr).strip().splitlines()
    return text[0].strip() if text else "unknown"


_VERSION_RE = re.compile(r"\d+(?:\.\d+)+(?:[-.+]?[0-9A-Za-z.]+)?")


@functools.cache
def _version_cached(path: str, mtime_ns: int, name: str, python_dist: str | None,
                    flag: str) -> str:
    # A Python console script beside our interpreter belongs to this environment: its
    # distribution's metadata is the version, without starting the tool (~0.15 s each).
    if python_dist and Path(path).parent == Path(sys.executable).parent:
        import importlib.metadata

        try:
            return importlib.metadata.version(python_dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    line = version_of([path, flag], name)
    found = _VERSION_RE.search(line)
    return found.group(0) if found else line


def tool_version(name: str, python_dist: str | None = None, flag: str = "--version") -> str:
    """The tool's version (from ``<tool> --version``, or its Python package's metadata when
    the tool is a console script of this environment), cached per executable and mtime."""
    path = find_tool(name)
    try:
        mtime = Path(path).stat().st_mtime_ns
    except OSError as exc:
        raise ScanError(f"{name}: cannot stat {path}: {exc.strerror}") from exc
    return _version_cached(path, mtime, name, python_dist, flag)
