"""Where a generated pipeline installs ci-ml from, and what each job installs.

Every job installs ci-ml from one pinned reference, the same as the actions and
components it calls, with only the extra its commands need:

* ``ci.package`` (a published requirement, e.g. ``ci-ml==0.2.0``): that, plus the extra;
* else ``ci.source`` (a git URL and a full commit), or the repository and commit that
  ``ci.github.actions`` / ``ci.gitlab.components`` pin: ``ci-ml[extra] @ git+URL@COMMIT``;
* else the git repository and commit this ci-ml was installed from (pip records them,
  PEP 610), so ``pip install git+URL@COMMIT`` then ``ci-ml generate`` pins that commit.

Never a bare ``ci-ml==<version>`` from the index: nothing guarantees that name is ours.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement

from ci_ml.ci.interface import GenerateError
from ci_ml.config import Config

DIST = "ci-ml"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_URL = re.compile(r"^(https://|http://|ssh://|git@|file://)[A-Za-z0-9._~:/@+%-]+$")


@dataclass(frozen=True)
class InstallSource:
    """One pinned reference: a published requirement, or a git repository at a commit."""

    package: str | None = None     # e.g. "ci-ml==0.2.0"
    url: str | None = None         # e.g. "https://github.com/OWNER/ci-ml"
    ref: str | None = None         # a full commit SHA

    def requirement(self, extras: Iterable[str] = ()) -> str:
        wanted = sorted(set(extras))
        if self.package is not None:
            req = Requirement(self.package)
            req.extras = set(req.extras) | set(wanted)
            return str(req)
        names = f"[{','.join(wanted)}]" if wanted else ""
        return f"{DIST}{names} @ git+{self.url}@{self.ref}"

    @property
    def described(self) -> str:
        return self.package if self.package is not None else f"{self.url} at {self.ref}"


def _check_package(value: str) -> str:
    try:
        req = Requirement(value)
    except InvalidRequirement as exc:
        raise GenerateError(f"ci.package: {value!r} is not a pip requirement ({exc})") from exc
    if req.name.lower().replace("_", "-") != DIST:
        raise GenerateError(f"ci.package: {value!r} does not install {DIST}")
    return value


def _git_source(url: str, ref: str, what: str) -> InstallSource:
    if not _URL.match(url):
        raise GenerateError(f"{what}: {url!r} is not a git URL ci-ml can put in a pipeline "
                            "(https://, ssh://, git@ or file://)")
    if not _COMMIT.match(ref):
        raise GenerateError(f"{what}: {ref!r} is not a full commit SHA (40 hex digits); a "
                            "branch or tag can move under the pipeline")
    return InstallSource(url=url, ref=ref)


def installed_origin() -> tuple[str, str] | None:
    """(git URL, commit) this ci-ml was installed from, as pip recorded it (PEP 610)."""
    try:
        text = importlib.metadata.distribution(DIST).read_text("direct_url.json")
    except importlib.metadata.PackageNotFoundError:
        return None
    if not text:
        return None
    try:
        data: Mapping[str, Any] = json.loads(text)
    except ValueError:
        return None
    vcs = data.get("vcs_info") or {}
    if vcs.get("vcs") != "git" or not _COMMIT.match(str(vcs.get("commit_id", ""))):
        return None
    return str(data.get("url", "")).removeprefix("git+"), str(vcs["commit_id"])


def install_source(config: Config) -> InstallSource:
    ci = config.section("ci")
    if ci.get("package"):
        return InstallSource(package=_check_package(str(ci["package"])))
    source = ci.get("source")
    if source:
        return _git_source(str(source["url"]), str(source["ref"]), "ci.source")
    actions = ci["github"]["actions"]
    if actions:
        return _git_source(f"https://github.com/{actions['repository']}", str(actions["sha"]),
                           "ci.github.actions")
    origin = installed_origin()
    if origin is not None:
        return _git_source(origin[0], origin[1], "the git repository ci-ml was installed from")
    raise GenerateError(
        "ci.source: say where the pipeline installs ci-ml from: ci.source {url: GIT_URL, "
        "ref: COMMIT} or ci.package (a published requirement); this ci-ml was not installed "
        "from a git repository at a known commit")
