"""Resolving unpinned requirements to the versions pip would install here, as pip-audit does.

pip-audit audits an unpinned ``numpy`` by letting pip resolve it. ci-ml does the same
with ``pip install --dry-run --report`` (nothing is installed), with two differences
that matter when the requirements file is part of the change under review:
- ``--only-binary :all:``: resolving never builds an sdist, so no ``setup.py`` from
  the index runs during a scan (a package with no wheel is reported unresolved);
- the index options written in the requirements file (``--index-url``, ...) are not
  used: versions come from the environment's pip configuration (the CI's), never from
  an index the file under review names.
Every requirement of the files (pinned ones at their pins) is resolved together, so the
unpinned ones get versions consistent with the pins, and the dependencies they pull in
are audited too (what pip-audit does when it resolves).
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from ci_ml.scan.interface import ScanError
from ci_ml.scan.requirements import Pin
from ci_ml.scan.tool import last_line, run_tool


@dataclass(frozen=True)
class Resolution:
    versions: dict[str, str]        # canonical name -> version pip picked (the whole tree)
    requested: frozenset[str]       # names the files asked for (the rest came as dependencies)
    error: str | None = None        # why pip could not resolve (then versions is empty)


def pip_command() -> list[str]:
    return [sys.executable, "-m", "pip"]


def resolve(pins: Sequence[Pin], timeout: float) -> Resolution:
    """What pip would install for the named (non-URL) requirements, on this interpreter."""
    named = [p for p in pins if not p.url]
    requested = frozenset(p.name for p in named)
    with tempfile.TemporaryDirectory(prefix="ci-ml-resolve-") as tmp:
        reqs, report = Path(tmp) / "requirements.txt", Path(tmp) / "report.json"
        reqs.write_text("".join(f"{p.name}=={p.version}\n" if p.version else f"{p.spec}\n"
                                for p in named), "utf-8")
        cmd = [*pip_command(), "install", "--dry-run", "--ignore-installed", "--quiet",
               "--only-binary", ":all:", "--disable-pip-version-check", "--no-input",
               "--report", str(report), "-r", str(reqs)]
        try:
            run_tool(cmd, tool="pip", timeout=timeout, env={"PIP_REQUIRE_VIRTUALENV": "0"})
        except ScanError as exc:
            return Resolution({}, requested, _reason(exc.message))
        try:
            data = json.loads(report.read_text("utf-8"))
            versions = {str(canonicalize_name(str(item["metadata"]["name"]))):
                        str(item["metadata"]["version"]) for item in data.get("install", ())}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return Resolution({}, requested, f"pip's report could not be read: {exc}")
    return Resolution(versions, requested)


def _reason(message: str) -> str:
    # run_tool's message ends with "; the scan did not run": here only resolution failed.
    return last_line(message.removesuffix("; the scan did not run"))
