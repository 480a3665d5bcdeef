"""Reading requirements files before pip-audit sees them; bad lines are the user's to fix
(exit 2).

Checked before pip-audit runs, so a garbage line is a one-line error naming the
file and line, not a tool failure. ``-r`` includes are followed; pip options
(``--index-url``, ``--hash``...) are accepted; ``-e``/``-c``/URL-less editables
cannot be audited without building them and are refused. A requirement that is
not pinned with ``==`` (``numpy``, ``requests>=2``) is returned with ``pinned``
false: the dependency scan resolves it (``resolve.py``) instead of refusing it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from ci_ml.errors import InputError
from ci_ml.yamlio import read_text_file

_OPTION_SPLIT = re.compile(r"\s+(?=--?[A-Za-z])")
_COMMENT = re.compile(r"(^|\s)#.*$")
_ALLOWED_OPTIONS = ("-i", "--index-url", "--extra-index-url", "-f", "--find-links",
                    "--trusted-host", "--no-index", "--pre", "--prefer-binary", "--only-binary",
                    "--no-binary", "--require-hashes", "--use-feature")
_MAX_DEPTH = 10


@dataclass(frozen=True)
class Pin:
    name: str          # canonical
    version: str       # the exact version, "" when not pinned (or a URL)
    file: Path
    line: int
    hashed: bool
    url: bool = False  # ``name @ URL``: pip-audit skips it (no version to audit)
    spec: str = ""     # the requirement as written (without options), for resolving

    @property
    def pinned(self) -> bool:
        return bool(self.version) or self.url

    def where(self, root: Path | None = None) -> str:
        path = self.file
        if root is not None and path.resolve().is_relative_to(root.resolve()):
            return f"{path.resolve().relative_to(root.resolve()).as_posix()}:{self.line}"
        return f"{path}:{self.line}"


def _logical_lines(text: str) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    buffer, start = "", 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not buffer:
            start = number
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        out.append((start, buffer + line))
        buffer = ""
    if buffer:
        out.append((start, buffer))
    return out


def parse_requirements(path: Path, _depth: int = 0) -> list[Pin]:
    """Every pin of a requirements file (and its ``-r`` includes), validated."""
    if _depth > _MAX_DEPTH:
        raise InputError(f"requirements {path}: -r includes nest deeper than {_MAX_DEPTH}")
    pins: list[Pin] = []
    for number, raw in _logical_lines(read_text_file(path, "requirements file", InputError)):
        line = _COMMENT.sub("", raw).strip()
        if not line:
            continue
        where = f"{path}:{number}"
        if line.startswith("-"):
            pins += _option(line, path, where, _depth)
            continue
        spec, *options = _OPTION_SPLIT.split(line)
        hashed = any(o.startswith("--hash") for o in options)
        bad = [o for o in options if not o.startswith(("--hash", "--config-settings",
                                                      "--global-option"))]
        if bad:
            raise InputError(f"{where}: unsupported option {bad[0].split('=')[0]!r} "
                             f"after a requirement")
        try:
            req = Requirement(spec)
        except InvalidRequirement as exc:
            raise InputError(f"{where}: not a valid requirement {spec[:60]!r}: "
                             f"{str(exc).splitlines()[0]}") from exc
        if req.marker is not None and not req.marker.evaluate():
            continue  # pip-audit skips requirements for other environments too
        name = canonicalize_name(req.name)
        if req.url:
            pins.append(Pin(name, "", path, number, hashed, url=True, spec=spec.strip()))
            continue
        specs = list(req.specifier)
        exact = (len(specs) == 1 and specs[0].operator in ("==", "===")
                 and "*" not in specs[0].version)
        pins.append(Pin(name, specs[0].version if exact else "", path, number, hashed,
                        spec=spec.strip()))
    if _depth == 0:
        with_hash = [p for p in pins if p.hashed]
        if with_hash and len(with_hash) != len(pins):
            plain = next(p for p in pins if not p.hashed)
            raise InputError(f"{plain.file}:{plain.line}: {plain.name} has no --hash, but other "
                             "requirements do (pip-audit then requires a hash on every line)")
    return pins


def _option(line: str, path: Path, where: str, depth: int) -> list[Pin]:
    flag, _, value = line.replace("=", " ", 1).partition(" ")
    value = value.strip()
    if flag in ("-r", "--requirement"):
        if not value:
            raise InputError(f"{where}: {flag} needs a file name")
        included = path.parent / value
        if not included.is_file():
            raise InputError(f"{where}: {flag} {value}: no such file ({included})")
        return parse_requirements(included, depth + 1)
    if flag in ("-e", "--editable"):
        raise InputError(f"{where}: editable requirement {value!r} cannot be audited "
                         "without resolving it; pin the package instead")
    if flag in ("-c", "--constraint"):
        raise InputError(f"{where}: constraints files are not supported by the dependency "
                         "audit; list the pins in the requirements file")
    if flag in _ALLOWED_OPTIONS:
        return []
    raise InputError(f"{where}: unknown option {flag!r}")
