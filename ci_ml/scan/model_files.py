"""Model-file scanning: files that would run code when loaded, and malformed weights.

Every file is recognized by its content, never by its name alone: pickles of any
protocol (protocol 0 and 1 have no header: their opcodes are decoded), several
pickles in one file, zip archives (torch's format, ``.npz``), tar archives,
compressed layers (gzip, bz2, xz, lzma, zlib, joblib's formats) and numpy ``.npy``
files whose object arrays are pickles after the header; layers nest. Pickles are
decoded opcode by opcode and never loaded (``pickles.py``); each import is rated by
what it reaches and how the load uses it (``pickle_rules.py``). A file that cannot
be read whole (an encrypted member, an unknown compression, a bad CRC, a bomb) is a
finding. safetensors and ONNX files are checked structurally.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, ClassVar

import ci_ml
from ci_ml.fsutil import iter_files, sha256_bytes
from ci_ml.scan.containers import (
    MAX_DEPTH,
    Budget,
    NotCompressed,
    Unreadable,
    decompress,
    npy_header,
    read_head,
    size_of,
    sniff,
    tar_members,
    zip_members,
)
from ci_ml.scan.interface import (
    Confidence,
    Finding,
    Location,
    ScanError,
    Scanner,
    ScanRequest,
    ScanResult,
    ScanStatus,
    Severity,
)
from ci_ml.yamlio import special_file_kind

if TYPE_CHECKING:  # pickletools' opcode tables load only when there is a pickle to read
    from ci_ml.scan.pickles import PickleImport, PickleReport

PICKLE_SUFFIXES = frozenset({".pt", ".pth", ".pkl", ".pickle", ".joblib", ".ckpt", ".sav",
                             ".dill", ".npy"})
DEFAULT_MAX_UNPACKED_MB = 4096
PICKLE_DOCS = "https://docs.python.org/3/library/pickle.html"


SAFETENSORS_DOCS = "https://huggingface.co/docs/safetensors/index"
ONNX_DOCS = "https://onnx.ai/onnx/repo-docs/ExternalData.html"


@dataclass(frozen=True)
class Rule:
    id: str
    name: str
    severity: Severity
    title: str

    @property
    def reference(self) -> str:
        if self.name.startswith("safetensors"):
            return SAFETENSORS_DOCS
        return ONNX_DOCS if self.name.startswith("onnx") else PICKLE_DOCS


RULES: dict[str, Rule] = {r.name: r for r in (
    Rule("CIML-M001", "pickle-format", Severity.LOW,
         "pickle-based model file: loading it can execute code (prefer safetensors or ONNX)"),
    Rule("CIML-M002", "pickle-dangerous-import", Severity.CRITICAL,
         "pickle imports a callable that runs commands, code, files or network on load"),
    Rule("CIML-M003", "pickle-gadget-import", Severity.HIGH,
         "pickle imports a callable that chains into arbitrary calls or nested loads"),
    Rule("CIML-M004", "pickle-unknown-import", Severity.MEDIUM,
         "pickle creates an object of a class outside the allow-list (its code runs on load)"),
    Rule("CIML-M005", "pickle-unverifiable", Severity.HIGH,
         "pickle stream could not be decoded to the end: the rest is unverified"),
    Rule("CIML-M006", "pickle-embedded-array-data", Severity.HIGH,
         "joblib array data of a size ci-ml cannot determine interrupts the pickle: the rest "
         "is unverified"),
    Rule("CIML-M007", "pickle-unknown-call", Severity.HIGH,
         "pickle calls a callable outside the allow-list with arguments it chooses"),
    Rule("CIML-M008", "pickle-computed-call", Severity.HIGH,
         "pickle calls a value computed during the load (a reducer of a reducer)"),
    Rule("CIML-M009", "pickle-global-patched", Severity.HIGH,
         "pickle sets attributes on an imported module or class"),
    Rule("CIML-M011", "pickle-trailing-data", Severity.MEDIUM,
         "bytes after the last pickle that no pickle loader reads: not verified"),
    Rule("CIML-M030", "model-unreadable", Severity.HIGH,
         "model file cannot be read whole (encrypted, unknown compression, bad CRC, "
         "decompression bomb, nested too deep): it cannot be shown to be safe"),
    Rule("CIML-M010", "safetensors-malformed", Severity.MEDIUM,
         "safetensors file is malformed: loaders reject it, or parse attacker-chosen offsets"),
    Rule("CIML-M020", "onnx-invalid", Severity.MEDIUM, "ONNX model fails onnx.checker"),
    Rule("CIML-M021", "onnx-external-data-traversal", Severity.HIGH,
         "ONNX external data points outside the model directory (path traversal)"),
)}


def _label(path: Path, bases: tuple[Path, ...]) -> str:
    resolved = path.resolve()
    for base in bases:
        try:
            return resolved.relative_to(base.resolve()).as_posix()
        except ValueError:
            continue
    return resolved.as_posix()


class ModelFileScanner(Scanner):
    name: ClassVar[str] = "model"
    tool: ClassVar[str] = "ci-ml"

    def tool_version(self) -> str:
        return ci_ml.__version__

    def scan(self, request: ScanRequest) -> ScanResult:
        bases = tuple(Path(b) for b in request.options.get("bases", ())) + (request.root,)
        limit = int(request.options.get("max_unpacked_mb") or DEFAULT_MAX_UNPACKED_MB) << 20
        findings: list[Finding] = []
        seen: set[Path] = set()
        for target in request.targets:
            if not target.exists():
                raise ScanError(f"model: path to scan does not exist: {target}")
            for path in iter_files(target):
                if path.resolve() in seen:
                    continue
                seen.add(path.resolve())
                findings += self._scan_path(path, _label(path, bases), Budget(limit))
        return ScanResult(scanner=self.name, status=ScanStatus.OK, findings=tuple(findings),
                          tool=self.tool, tool_version=self.tool_version(),
                          targets=tuple(_label(t, bases) for t in request.targets))

    def _scan_path(self, path: Path, label: str, budget: Budget) -> list[Finding]:
        """One file's findings; a file that cannot be read is a finding, not a failed scan."""
        found: list[Finding] = []   # what was found before a layer broke off is kept
        try:
            mode = path.stat().st_mode
            kind = "a directory" if stat.S_ISDIR(mode) else special_file_kind(mode)
            if kind is not None:
                return [_unreadable(label, None, f"{label} is {kind}, not a file ci-ml can read")]
            for finding in self._scan_file(path, label, budget):
                found.append(finding)
        except Unreadable as exc:
            found.append(_unreadable(label, None, str(exc)))
        except OSError as exc:
            found.append(_unreadable(label, None,
                                     f"{label} cannot be read: {exc.strerror or exc}"))
        return found

    def _scan_file(self, path: Path, label: str, budget: Budget) -> Iterator[Finding]:
        suffix = path.suffix.lower()
        if suffix == ".safetensors":
            from ci_ml.scan.model_checks import safetensors_problems

            problems = safetensors_problems(path)
            if problems:
                yield _finding("safetensors-malformed", label, "; ".join(problems[:3]),
                               {"problems": problems})
            return
        if suffix == ".onnx":
            from ci_ml.scan.model_checks import onnx_problems

            escapes, invalid = onnx_problems(path)
            for text in escapes:
                yield _finding("onnx-external-data-traversal", label, text, {"problem": text})
            if invalid:
                yield _finding("onnx-invalid", label, invalid[0], {"problems": invalid})
            return
        with open(path, "rb") as fh:
            yield from _Layers(label, budget).scan(fh, path.name, None, 0)


@dataclass
class _Layers:
    """Walks the layers of one file (archives, compression, npy, pickles) by content."""

    label: str
    budget: Budget

    def scan(self, fh: IO[bytes], name: str, member: str | None,
             depth: int) -> Iterator[Finding]:
        where = f"{self.label}!{member}" if member else self.label
        if depth > MAX_DEPTH:
            raise Unreadable(f"{where}: containers nested deeper than {MAX_DEPTH} levels")
        head = read_head(fh)
        kind = sniff(head)
        if kind.startswith("unsupported:"):
            raise Unreadable(f"{where}: compressed with {kind.split(':', 1)[1]}, which ci-ml "
                             "cannot open: its content is not verified")
        if kind in ("zip", "tar"):
            members = (zip_members if kind == "zip" else tar_members)(
                fh, where, self.budget, _interesting)
            for item in members:
                inner = f"{member}!{item.name}" if member else item.name
                with item.stream:
                    yield from self.scan(item.stream, item.name, inner, depth + 1)
            return
        if kind in ("gzip", "bz2", "xz", "lzma", "zlib", "zfile"):
            try:
                layer = decompress(kind, fh, where, self.budget)
            except NotCompressed:
                pass   # raw bytes that looked like zlib or lzma: read them as they are
            else:
                with layer.stream:
                    # What a broken layer did produce is what a loader would have acted on.
                    try:
                        yield from self.scan(layer.stream, name.rsplit(".", 1)[0], member,
                                             depth + 1)
                    except Unreadable as exc:
                        if layer.error is None:
                            raise
                        yield _unreadable(self.label, member, str(exc))
                if layer.error is not None:
                    raise Unreadable(layer.error)
                return
        if kind == "npy":
            yield from self._npy(fh, where, member)
            return
        from ci_ml.scan.pickles import looks_like_pickle

        size = size_of(fh)
        suffix = Path(name).suffix.lower()
        if looks_like_pickle(head, truncated=size > len(head)) or (
                depth == 0 and suffix in PICKLE_SUFFIXES):
            yield from self._pickle(fh, where, member, "")

    def _npy(self, fh: IO[bytes], where: str, member: str | None) -> Iterator[Finding]:
        header = npy_header(fh, where)
        if not header.has_object:
            return   # plain numbers: np.load reads them without unpickling
        fh.seek(header.data_offset)
        yield from self._pickle(fh, where, member, "a numpy object array (np.load needs "
                                "allow_pickle=True): ")

    def _pickle(self, fh: IO[bytes], where: str, member: str | None,
                prefix: str) -> Iterator[Finding]:
        from ci_ml.scan.pickles import analyze_pickle

        start = fh.tell()
        report = analyze_pickle(fh, size_of(fh))
        yield from _pickle_findings(report, self.label, member, prefix, start)


def _interesting(name: str, head: bytes) -> bool:
    """Which archive members to read whole: anything that is a container, a pickle or an npy
    (by content), or named like a pickle. Raw tensor data is only read through for its CRC."""
    from ci_ml.scan.pickles import looks_like_pickle

    return (sniff(head) != "data" or looks_like_pickle(head)
            or Path(name).suffix.lower() in PICKLE_SUFFIXES)


def _unreadable(label: str, member: str | None, reason: str) -> Finding:
    return _finding("model-unreadable", label, reason, {"member": member, "reason": reason},
                    key=f"{member or ''}:unreadable")


def _import_rule(imp: PickleImport) -> str | None:
    from ci_ml.scan.pickle_rules import Kind
    from ci_ml.scan.pickles import Use

    severity = imp.severity
    if severity is None:
        return None
    if severity is Severity.CRITICAL:
        return "pickle-dangerous-import"
    if imp.kind is Kind.GADGET:
        return "pickle-gadget-import"
    if Use.MUTATED in imp.uses:
        return "pickle-global-patched"
    if severity is Severity.HIGH:
        return "pickle-unknown-call"
    return "pickle-unknown-import"


def _pickle_findings(report: PickleReport, label: str, member: str | None, prefix: str,
                     start: int) -> Iterator[Finding]:
    where = f"{label}!{member}" if member else label
    base_raw = {"member": member, "protocol": report.protocol, "opcodes": report.opcodes,
                "calls": report.calls, "pickles": report.pickles,
                "skipped": list(report.skipped)}
    count = f"{report.pickles} pickles" if report.pickles > 1 else "a pickle"
    yield _finding("pickle-format", label, f"{where} is {prefix}{count} (protocol "
                   f"{report.protocol})", base_raw, key=member or "")
    grouped: dict[tuple[str, str], list[PickleImport]] = {}
    for imp in (*report.imports, *report.raw_imports):
        rule = _import_rule(imp)
        if rule is not None:
            grouped.setdefault((rule, imp.qualname), []).append(imp)
    for (rule, qualname), hits in grouped.items():
        first = hits[0]
        reach = f" (reaches {first.reaches})" if first.reaches not in (qualname, "") else ""
        found_in = (" in bytes that do not decode as a pickle"
                    if first in report.raw_imports else "")
        yield _finding(rule, label, f"{where}: {first.use} {qualname}{reach} "
                       f"({first.opcode} at byte {start + first.offset}){found_in}",
                       {**base_raw, "global": qualname, "reaches": first.reaches,
                        "use": first.use, "offsets": [start + h.offset for h in hits]},
                       key=f"{member or ''}:{qualname}")
    if report.computed_calls:
        offsets = [start + o for o in report.computed_calls]
        yield _finding("pickle-computed-call", label, f"{where}: calls a value computed during "
                       f"the load (a reducer of a reducer) at byte {offsets[0]}"
                       + (f" and {len(offsets) - 1} more" if len(offsets) > 1 else ""),
                       {**base_raw, "offsets": offsets}, key=f"{member or ''}:computed")
    if report.error is not None:
        rule = ("pickle-embedded-array-data" if report.joblib_arrays else
                "pickle-trailing-data" if report.trailing else "pickle-unverifiable")
        offset = start + report.error_offset if report.error_offset is not None else None
        yield _finding(rule, label, f"{where}: decoding stopped at byte {offset}: "
                       f"{report.error}", {**base_raw, "error": report.error, "offset": offset},
                       key=member or "")


def _finding(rule_name: str, label: str, title: str, raw: Mapping[str, object],
             key: str = "") -> Finding:
    rule = RULES[rule_name]
    return Finding(
        id=rule.id, rule=rule.name, scanner="model", severity=rule.severity,
        confidence=Confidence.HIGH, title=title, location=Location(path=label),
        references=(rule.reference,),
        # code_hash keys the fingerprint: one finding per file, member and imported callable.
        raw={**raw, "description": rule.title, "code_hash": sha256_bytes(key.encode())[:16]},
    )
