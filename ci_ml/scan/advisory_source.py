"""Where ``scan deps`` can get advisories from, decided where ``ci-ml init`` runs.

A config whose advisory service cannot be reached gives an incomplete dependency
scan (and a blocked gate), so ``init`` looks before it writes, in this order:
1. ``$CI_ML_ADVISORIES``: an offline OSV mirror the environment names;
2. the OSV service (``$PIP_AUDIT_OSV_URL``, pip-audit's own variable, else
   https://api.osv.dev/v1/query), if it answers a query now;
3. the offline mirror bundled with a ci-ml checkout (``fixtures/advisories``),
   served to pip-audit through the loopback OSV server;
4. none: the OSV service is written anyway and ``init`` says that the dependency
   scan will be incomplete until one of the above works.
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ADVISORIES_ENV = "CI_ML_ADVISORIES"
OSV_URL_ENV = "PIP_AUDIT_OSV_URL"
DEFAULT_OSV_URL = "https://api.osv.dev/v1/query"
PROBE_TIMEOUT_S = 5.0
_PROBE = {"package": {"name": "requests", "ecosystem": "PyPI"}, "version": "2.19.1"}


@dataclass(frozen=True)
class AdvisorySource:
    kind: str                    # mirror | osv | none
    advisories: str | None       # scan.deps.advisories to write (a path), or None
    osv_url: str | None          # scan.deps.osv_url to write, or None (pip-audit's default)
    description: str             # one line for the user: what scan deps will query

    @property
    def reachable(self) -> bool:
        return self.kind != "none"


def probe_osv(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Does an OSV ``/v1/query`` endpoint answer a real query right now? (http(s) only; the
    environment's HTTPS proxy is not consulted, as a quick local answer is the point.)"""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    conn_type = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = conn_type(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("POST", parts.path or "/", body=json.dumps(_PROBE).encode(),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status == 200 and isinstance(json.loads(response.read()), dict)
    except (OSError, ValueError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def bundled_mirror() -> Path | None:
    """The PyPA advisory snapshot of a ci-ml checkout (an editable or source install)."""
    import ci_ml

    candidate = Path(ci_ml.__file__).resolve().parents[1] / "fixtures" / "advisories" / "pypa-vulns"
    return candidate if candidate.is_dir() else None


def _as_written(path: Path, project: Path) -> str:
    """Relative to the project when it sits inside it or beside it (a checkout next to the
    project moves with it), else absolute."""
    try:
        rel = os.path.relpath(path.resolve(), project.resolve())
    except ValueError:
        return str(path.resolve())
    return rel if rel.count("..") <= 1 else str(path.resolve())


def choose_source(project: Path, probe: Callable[[str], bool] = probe_osv) -> AdvisorySource:
    env = os.environ.get(ADVISORIES_ENV)
    if env and Path(env).is_dir():
        return AdvisorySource("mirror", _as_written(Path(env), project), None,
                              f"the offline OSV mirror ${ADVISORIES_ENV} names ({env}), "
                              "served to pip-audit on loopback")
    url = os.environ.get(OSV_URL_ENV) or DEFAULT_OSV_URL
    if probe(url):
        return AdvisorySource("osv", None, url if url != DEFAULT_OSV_URL else None,
                              f"the OSV service at {url} (it answered just now)")
    mirror = bundled_mirror()
    if mirror is not None:
        return AdvisorySource("mirror", _as_written(mirror, project), None,
                              f"the offline mirror bundled with ci-ml ({mirror}: a snapshot of "
                              f"the PyPA advisory database), served to pip-audit on loopback, "
                              f"because the OSV service ({url}) did not answer from here")
    return AdvisorySource("none", None, None,
                          f"nothing reachable: the OSV service ({url}) did not answer and no "
                          f"offline mirror is installed; `scan deps` will be incomplete (the "
                          f"gate blocks) until scan.deps.advisories or ${ADVISORIES_ENV} names "
                          "one")
