"""Suppressions written in the tree under review, found so they can be shown, not obeyed.

trivy (iac, image) runs with its tree-local files disabled (``trivy.py``); the IDs a
``.trivyignore`` or ``.trivyignore.yaml`` at the project root lists are reported on the
findings they would have hidden (``trivy_ignores``).


bandit runs with ``--ignore-nosec`` and ci-ml's own settings (see ``bandit.py``), so
neither a ``# nosec`` comment nor a bandit config in the scanned tree hides a finding.
This module finds what those would have hidden, the way bandit itself reads them:
- ``# nosec`` (optionally ``# nosec B602,B607`` or test names) in a comment on the
  flagged line or any line of the flagged statement; a list that names no test bandit
  knows counts as a blanket ``# nosec``, as in bandit;
- ``.bandit`` INI files anywhere under a scanned directory (bandit reads them
  unasked), bandit YAML/TOML configs (``bandit.yaml``, ``.bandit.yml``, ...),
  ``[tool.bandit]`` in ``pyproject.toml`` and ``[bandit]`` in ``setup.cfg``/``tox.ini``
  at the project root or in a scanned directory: their ``skips``, ``tests``,
  ``exclude``/``exclude_dirs``, ``level`` and ``confidence``.
"""

from __future__ import annotations

import configparser
import fnmatch
import io
import re
import tokenize
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ci_ml.errors import CiMlError
from ci_ml.fsutil import IGNORED_DIRS
from ci_ml.scan.interface import Confidence, Finding, Severity, SourceSuppression
from ci_ml.yamlio import parse_yaml, read_text_file

# bandit's own patterns (bandit/core/manager.py).
_NOSEC = re.compile(r"#\s*nosec:?\s*(?P<tests>[^#]+)?#?")
_NOSEC_TESTS = re.compile(r"(?:(B\d+|[a-z\d_]+),?)+", re.IGNORECASE)
_TEST_ID = re.compile(r"^B\d{3}$", re.IGNORECASE)
YAML_NAMES = ("bandit.yaml", "bandit.yml", ".bandit.yaml", ".bandit.yml")
INI_SECTION_FILES = ("setup.cfg", "tox.ini")
MAX_CONFIG_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Nosec:
    line: int
    text: str                     # the comment as written
    tests: frozenset[str]         # ids and names it lists, upper-cased; empty: blanket

    def covers(self, test_id: str, test_name: str) -> bool:
        if not self.tests:
            return True
        if test_id.upper() in self.tests or test_name.upper() in self.tests:
            return True
        # bandit drops names it does not know; if none is a test id, what is left may be
        # empty, which bandit reads as a blanket nosec. Report it as one (never under-report).
        return not any(_TEST_ID.match(t) for t in self.tests)


def nosec_comments(source: bytes) -> dict[int, Nosec]:
    """Line -> the ``# nosec`` comment on it (tokenized: a '# nosec' inside a string is not one)."""
    out: dict[int, Nosec] = {}
    try:
        for tok in tokenize.tokenize(io.BytesIO(source).readline):
            if tok.type != tokenize.COMMENT:
                continue
            match = _NOSEC.search(tok.string)
            if match is None:
                continue
            listed = match.group("tests") or ""
            tests = frozenset(m.group(1).upper() for m in _NOSEC_TESTS.finditer(listed))
            out[tok.start[0]] = Nosec(tok.start[0], tok.string.strip(), tests)
    except (tokenize.TokenError, SyntaxError, UnicodeDecodeError):
        pass  # bandit reports the file as unparsable; nothing to read here
    return out


def nosec_for(comments: Mapping[int, Nosec], line: int | None,
              line_range: Iterable[int], test_id: str, test_name: str) -> Nosec | None:
    """The comment bandit would have obeyed for this result: on the result's line, or the
    first nosec comment on the lines of its statement."""
    candidates = [comments.get(line)] if line else []
    candidates += [comments.get(n) for n in line_range]
    for found in candidates:
        if found is not None and found.covers(test_id, test_name):
            return found
    return None


@dataclass(frozen=True)
class TreeConfig:
    """A bandit config found in the scanned tree and what it asks bandit to skip."""

    path: str                                  # relative to the project
    skips: frozenset[str] = frozenset()        # test ids, upper-cased
    tests: frozenset[str] = frozenset()        # only these run, if set
    excludes: tuple[str, ...] = ()             # paths or globs, as written
    base: str = ""                             # the config's directory, relative to the project
    level: Severity = Severity.UNKNOWN         # findings below are hidden
    confidence: Confidence = Confidence.UNKNOWN
    problem: str | None = None                 # it could not be read (ignored all the same)

    def describe(self) -> str:
        asks = []
        if self.skips:
            asks.append("skips " + ",".join(sorted(self.skips)))
        if self.tests:
            asks.append("only tests " + ",".join(sorted(self.tests)))
        if self.excludes:
            asks.append("excludes " + ",".join(self.excludes))
        if self.level > Severity.LOW:
            asks.append(f"level {self.level.label}")
        if self.confidence > Confidence.LOW:
            asks.append(f"confidence {self.confidence.name.lower()}")
        if self.problem:
            asks.append(f"unreadable: {self.problem}")
        return f"{self.path}: " + ("; ".join(asks) if asks else "no settings that hide findings")

    def hides(self, finding: Finding) -> str | None:
        """Why this config would have hidden the finding (None if it would not)."""
        test_id = finding.id.upper()
        if test_id in self.skips:
            return f"{self.path} skips {finding.id}"
        if self.tests and test_id not in self.tests:
            return f"{self.path} runs only {','.join(sorted(self.tests))}"
        path = finding.location.path or ""
        for pattern in self.excludes:
            if _excluded(path, pattern, self.base):
                return f"{self.path} excludes {pattern}"
        if self.level > Severity.LOW and finding.severity < self.level:
            return f"{self.path} reports only level {self.level.label} and above"
        if self.confidence > Confidence.LOW and finding.confidence < self.confidence:
            return f"{self.path} reports only confidence {self.confidence.name.lower()} and above"
        return None

    def suppression(self, finding: Finding) -> SourceSuppression | None:
        why = self.hides(finding)
        return SourceSuppression(origin=why, path=self.path) if why else None


def _excluded(path: str, pattern: str, base: str) -> bool:
    """bandit matches excludes against paths as it sees them (relative to where it runs, the
    project root) and against single path parts; read both ways, and relative to the config."""
    clean = pattern.strip().strip("/").removeprefix("./")
    if not clean:
        return False
    for form in {clean, f"{base}/{clean}" if base else clean}:
        if path == form or path.startswith(form + "/") or fnmatch.fnmatchcase(path, form):
            return True
    return any(fnmatch.fnmatchcase(part, clean) for part in path.split("/"))


def _words(value: Any) -> frozenset[str]:
    if isinstance(value, str):
        items: Iterable[Any] = value.split(",")
    elif isinstance(value, list | tuple):
        items = value
    else:
        return frozenset()
    return frozenset(str(v).strip().upper() for v in items if str(v).strip())


def _paths(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(p.strip() for p in value.split(",") if p.strip())
    if isinstance(value, list | tuple):
        return tuple(str(p).strip() for p in value if str(p).strip())
    return ()


def _tree_config(rel: str, base: str, settings: Mapping[str, Any]) -> TreeConfig:
    """Normalize INI, YAML and TOML settings; exclude paths become project-relative."""
    excludes = (*_paths(settings.get("exclude")), *_paths(settings.get("exclude_dirs")))
    return TreeConfig(
        path=rel, skips=_words(settings.get("skips")), tests=_words(settings.get("tests")),
        excludes=excludes, base=base,
        level=Severity.parse(str(settings.get("level") or "")),
        confidence=Confidence.parse(str(settings.get("confidence") or "")),
    )


def _read(path: Path) -> str:
    return read_text_file(path, "bandit config", max_bytes=MAX_CONFIG_BYTES)


def _load(path: Path, rel: str, base: str) -> TreeConfig | None:
    """The bandit settings a file holds; None when it holds none (a setup.cfg without [bandit])."""
    try:
        name = path.name
        if name == ".bandit" or name in INI_SECTION_FILES:
            parser = configparser.ConfigParser(interpolation=None)
            parser.read_string(_read(path), source=rel)
            if not parser.has_section("bandit"):
                return None
            return _tree_config(rel, base, dict(parser.items("bandit")))
        if name == "pyproject.toml":
            section = tomllib.loads(_read(path)).get("tool", {}).get("bandit")
            return _tree_config(rel, base, section) if isinstance(section, Mapping) else None
        doc = parse_yaml(_read(path), rel)
        return _tree_config(rel, base, doc if isinstance(doc, Mapping) else {})
    except (CiMlError, configparser.Error, tomllib.TOMLDecodeError, OSError) as exc:
        return TreeConfig(path=rel, problem=str(exc).splitlines()[0][:200])


def _walk(directory: Path) -> Iterator[Path]:
    stack = [directory]
    while stack:
        current = stack.pop()
        try:
            entries = sorted(current.iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink():
                if entry.name not in IGNORED_DIRS:
                    stack.append(entry)
            elif entry.name == ".bandit" or entry.name in YAML_NAMES:
                yield entry


def tree_configs(root: Path, targets: Iterable[Path]) -> list[TreeConfig]:
    """Every bandit config the scanned tree carries: ``.bandit``/YAML files under each target
    (bandit walks the targets for ``.bandit``), and the per-project files at the project root
    and at the top of each target."""
    root = root.resolve()
    found: dict[Path, TreeConfig] = {}
    candidates: list[Path] = []
    tops = [root] + [t.resolve() for t in targets if t.is_dir()]
    for top in tops:
        candidates += [top / n for n in ("pyproject.toml", *INI_SECTION_FILES, *YAML_NAMES,
                                         ".bandit")]
    for target in targets:
        if target.is_dir():
            candidates += list(_walk(target.resolve()))
    for path in candidates:
        if path in found or not path.is_file():
            continue
        rel = _relative(path, root)
        base = _relative(path.parent, root)
        config = _load(path, rel, "" if base == "." else base)
        if config is not None:
            found[path] = config
    return list(found.values())


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root).as_posix() or "."
    except ValueError:
        return path.resolve().as_posix()


TRIVY_FILES = (".trivyignore", ".trivyignore.yaml", "trivy.yaml", "trivy-secret.yaml")


def trivy_ignores(root: Path) -> tuple[dict[str, SourceSuppression], list[str]]:
    """(finding id -> the suppression a .trivyignore asks for, notes on every trivy file in
    the project root that ci-ml disabled)."""
    ids: dict[str, SourceSuppression] = {}
    notes: list[str] = []
    for name in TRIVY_FILES:
        path = root / name
        if not path.is_file():
            continue
        notes.append(f"tree-local trivy file ignored (ci-ml runs trivy with its own "
                     f"settings): {name}")
        try:
            text = _read(path)
            if name == ".trivyignore":
                listed = [ln.split("#", 1)[0].split()[0] for ln in text.splitlines()
                          if ln.split("#", 1)[0].strip()]
            elif name == ".trivyignore.yaml":
                doc = parse_yaml(text, name)
                listed = [str(e.get("id")) for kind in (doc or {}).values()
                          if isinstance(kind, list) for e in kind if isinstance(e, Mapping)]
            else:
                continue
        except (CiMlError, AttributeError, IndexError):
            continue
        for raw in listed:
            ident = raw.upper().removeprefix("AVD-")
            ids.setdefault(ident, SourceSuppression(origin=f"{name} lists {raw}", path=name))
    return ids, notes


def mark_trivy_ignored(findings: Iterable[Finding], ids: Mapping[str, SourceSuppression]
                       ) -> list[Finding]:
    from dataclasses import replace

    out = []
    for f in findings:
        names = {f.id.upper().removeprefix("AVD-"), f.rule.upper(), *(a.upper() for a in f.aliases)}
        hit = next((ids[n] for n in names if n in ids), None)
        out.append(replace(f, suppressed_in_source=hit) if hit and not f.suppressed_in_source
                   else f)
    return out
