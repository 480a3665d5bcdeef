"""Model-file scanning: files that would run code when loaded, and malformed weights.

Pickle-based formats (.pt/.pth/.pkl/.bin/.joblib/.ckpt, and torch's zip
archives with ``data.pkl`` inside) are decoded opcode by opcode, never loaded;
safetensors and ONNX files are checked structurally. Files are recognized by
content as well as by suffix, so a pickle renamed ``weights.dat`` is still one.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, ClassVar

import ci_ml
from ci_ml.fsutil import iter_files, sha256_bytes
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
from ci_ml.scan.pickles import Verdict, looks_like_pickle

if TYPE_CHECKING:  # pickletools' opcode tables load only when there is a pickle to read
    from ci_ml.scan.pickles import PickleImport, PickleReport

PICKLE_SUFFIXES = frozenset({".pt", ".pth", ".pkl", ".pickle", ".bin", ".joblib", ".ckpt",
                             ".sav", ".dill"})
MAX_DECOMPRESSED = 1 << 30      # a compressed joblib bigger than this is reported, not read
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
         "pickle imports a callable outside the tensor/array allowlist"),
    Rule("CIML-M005", "pickle-unverifiable", Severity.HIGH,
         "pickle stream could not be decoded to the end: the rest is unverified"),
    Rule("CIML-M006", "pickle-embedded-array-data", Severity.MEDIUM,
         "joblib array data interrupts the pickle stream: the rest is unverified"),
    Rule("CIML-M010", "safetensors-malformed", Severity.MEDIUM,
         "safetensors file is malformed: loaders reject it, or parse attacker-chosen offsets"),
    Rule("CIML-M020", "onnx-invalid", Severity.MEDIUM, "ONNX model fails onnx.checker"),
    Rule("CIML-M021", "onnx-external-data-traversal", Severity.HIGH,
         "ONNX external data points outside the model directory (path traversal)"),
)}
_VERDICT_RULE = {Verdict.DANGEROUS: "pickle-dangerous-import",
                 Verdict.GADGET: "pickle-gadget-import",
                 Verdict.UNKNOWN: "pickle-unknown-import"}


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
        findings: list[Finding] = []
        seen: set[Path] = set()
        for target in request.targets:
            if not target.exists():
                raise ScanError(f"model: path to scan does not exist: {target}")
            for path in iter_files(target):
                if path.resolve() in seen:
                    continue
                seen.add(path.resolve())
                label = _label(path, bases)
                try:
                    findings += self._scan_file(path, label)
                except OSError as exc:
                    raise ScanError(f"model: cannot read {label}: {exc.strerror}") from exc
        return ScanResult(scanner=self.name, status=ScanStatus.OK, findings=tuple(findings),
                          tool=self.tool, tool_version=self.tool_version(),
                          targets=tuple(_label(t, bases) for t in request.targets))

    def _scan_file(self, path: Path, label: str) -> Iterator[Finding]:
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
            head = fh.read(8)
            fh.seek(0)
            if head.startswith(b"PK\x03\x04") and zipfile.is_zipfile(fh):
                fh.seek(0)
                yield from _scan_zip(fh, label)
            elif looks_like_pickle(head) or suffix in PICKLE_SUFFIXES:
                stream = _decompressed(fh, head, label) if suffix in (".joblib", ".pkl") else None
                if stream is None:
                    fh.seek(0)
                    stream = fh
                if suffix == ".bin" and not looks_like_pickle(head):
                    return  # raw tensor bytes (e.g. an ONNX .bin or a GGML blob), not a pickle
                from ci_ml.scan.pickles import analyze_pickle

                yield from _pickle_findings(analyze_pickle(stream), label, None)


def _decompressed(fh: BinaryIO, head: bytes, label: str) -> BinaryIO | None:
    """joblib's compressed files: zlib, gzip, bz2 or xz around a pickle."""
    import bz2
    import gzip
    import lzma

    raw: BinaryIO
    if head[:2] == b"\x1f\x8b":
        fh.seek(0)
        raw = gzip.GzipFile(fileobj=fh)  # type: ignore[assignment]
    elif head[:3] == b"BZh":
        fh.seek(0)
        raw = bz2.BZ2File(fh)  # type: ignore[assignment]
    elif head[:6] == b"\xfd7zXZ\x00":
        fh.seek(0)
        raw = lzma.LZMAFile(fh)  # type: ignore[assignment]
    elif head[:1] == b"\x78" and head[1:2] in (b"\x01", b"\x5e", b"\x9c", b"\xda"):
        fh.seek(0)
        return io.BytesIO(_inflate(fh, label))
    else:
        return None
    data = raw.read(MAX_DECOMPRESSED + 1)
    if len(data) > MAX_DECOMPRESSED:
        raise ScanError(f"model: {label} decompresses to more than {MAX_DECOMPRESSED} bytes")
    return io.BytesIO(data)


def _inflate(fh: BinaryIO, label: str) -> bytes:
    decomp = zlib.decompressobj()
    out = bytearray()
    while chunk := fh.read(1 << 20):
        out += decomp.decompress(chunk, MAX_DECOMPRESSED + 1 - len(out))
        if len(out) > MAX_DECOMPRESSED:
            raise ScanError(f"model: {label} decompresses to more than {MAX_DECOMPRESSED} bytes")
    return bytes(out)


def _scan_zip(fh: BinaryIO, label: str) -> Iterator[Finding]:
    """torch.save's zip format: the pickles are ``*.pkl`` members (data.pkl, constants.pkl)."""
    with zipfile.ZipFile(fh) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".pkl"):
                continue
            if info.file_size > MAX_DECOMPRESSED:
                raise ScanError(f"model: {label}!{info.filename} is larger than "
                                f"{MAX_DECOMPRESSED} bytes")
            data = archive.read(info)
            from ci_ml.scan.pickles import analyze_pickle

            yield from _pickle_findings(analyze_pickle(data), label, info.filename)


def _pickle_findings(report: PickleReport, label: str, member: str | None) -> Iterator[Finding]:
    where = f"{label}!{member}" if member else label
    base_raw = {"member": member, "protocol": report.protocol, "opcodes": report.opcodes,
                "calls": report.calls}
    yield _finding("pickle-format", label, f"{where} is a pickle (protocol {report.protocol})",
                   base_raw, key=member or "")
    worst: dict[str, list[PickleImport]] = {}
    for imp in report.imports:
        if imp.verdict is not Verdict.SAFE:
            worst.setdefault(imp.qualname, []).append(imp)
    for qualname, hits in worst.items():
        rule = _VERDICT_RULE[hits[0].verdict]
        yield _finding(rule, label, f"{where} imports {qualname} "
                       f"({hits[0].opcode} at byte {hits[0].offset})",
                       {**base_raw, "global": qualname, "offsets": [h.offset for h in hits]},
                       key=f"{member or ''}:{qualname}")
    if report.error is not None:
        after_joblib = any(i.qualname == "joblib.numpy_pickle.NumpyArrayWrapper"
                           for i in report.imports)
        rule = "pickle-embedded-array-data" if after_joblib else "pickle-unverifiable"
        yield _finding(rule, label, f"{where}: decoding stopped at byte {report.error_offset}: "
                       f"{report.error}", {**base_raw, "error": report.error,
                                           "offset": report.error_offset},
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
