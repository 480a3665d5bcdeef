"""Scan steps: one per scanner, each writing ``scans/<name>.json``.

A tool failure does not abort the run: the step records a "did not run" result
(status ERROR, never cached) so the gate can block on it, and the run exits 3.
What the user can fix (a missing path, a garbage requirements line, a bad
advisory directory) is caught by ``preflight`` before anything runs (exit 2).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from ci_ml.artifacts import CANDIDATE_DIR, TRAINED_DIR
from ci_ml.config import Config
from ci_ml.errors import ConfigError, InputError
from ci_ml.fsutil import atomic_write_json, hash_path, iter_files, sha256_file
from ci_ml.pipeline.interface import Step, StepContext, StepInputs, StepOutcome, StepStatus
from ci_ml.scan.dast import dast_request
from ci_ml.scan.interface import ScanError, ScanRequest, ScanResult, ScanStatus, Severity
from ci_ml.scan.registry import SCANNERS
from ci_ml.scan.tool import find_tool, run_tool
from ci_ml.yamlio import special_file_kind

ADVISORIES_ENV = "CI_ML_ADVISORIES"
IMAGE_SBOM = "scans/image-sbom.cdx.json"
MODEL_ARTIFACTS = (TRAINED_DIR, CANDIDATE_DIR)   # what train and prune write under --out


def scan_result_path(scanner: str) -> str:
    return f"scans/{scanner}.json"


def _common(config: Config) -> dict[str, Any]:
    scan = config.section("scan")
    return {"timeout": float(scan["timeout_s"]), "unscored_severity": scan["unscored_severity"]}


def advisories_dir(config: Config) -> Path | None:
    """The offline OSV mirror: $CI_ML_ADVISORIES, else scan.deps.advisories, else None (online)."""
    env = os.environ.get(ADVISORIES_ENV)
    if env:
        return Path(env).resolve()
    configured = config.section("scan")["deps"]["advisories"]
    return config.resolve(str(configured)) if configured else None


def _code_request(config: Config, ctx: StepContext | None) -> ScanRequest:
    section = config.section("scan")["code"]
    return ScanRequest(root=config.root,
                       targets=tuple(config.resolve(p) for p in section["paths"]),
                       options={"exclude": list(section["exclude"]),
                                "unparsable_severity": section["unparsable_severity"],
                                **_common(config)})


def _deps_request(config: Config, ctx: StepContext | None) -> ScanRequest:
    section = config.section("scan")["deps"]
    return ScanRequest(root=config.root,
                       targets=tuple(config.resolve(p) for p in section["requirements"]),
                       options={"advisories": advisories_dir(config),
                                "service": section["service"], "osv_url": section["osv_url"],
                                **_common(config)})


def _iac_request(config: Config, ctx: StepContext | None) -> ScanRequest:
    section = config.section("scan")["iac"]
    return ScanRequest(root=config.root,
                       targets=tuple(config.resolve(p) for p in section["paths"]),
                       options={"exclude": list(section["exclude"]),
                                "secrets": bool(section["secrets"]),
                                "skip_paths": (ctx.out_dir,) if ctx else (), **_common(config)})


def _image_request(config: Config, ctx: StepContext | None) -> ScanRequest:
    section = config.section("scan")["image"]
    archive = config.resolve(section["input"]) if section["input"] else None
    return ScanRequest(root=config.root, targets=(archive,) if archive else (),
                       options={"image": section["image"], "input": archive,
                                "advisories": advisories_dir(config),
                                "sbom_out": ctx.output(IMAGE_SBOM) if ctx else None,
                                **_common(config)})


def _model_request(config: Config, ctx: StepContext | None) -> ScanRequest:
    section = config.section("scan")["model"]
    targets = []
    if ctx is not None and section["include_artifacts"]:
        targets += [ctx.artifact(rel) for rel in MODEL_ARTIFACTS if ctx.artifact(rel).exists()]
    targets += [config.resolve(p) for p in section["paths"]]
    bases = (ctx.out_dir,) if ctx is not None else ()
    return ScanRequest(root=config.root, targets=tuple(targets),
                       options={"bases": bases, "max_unpacked_mb": section["max_unpacked_mb"],
                                **_common(config)})


RequestBuilder = Callable[[Config, StepContext | None], ScanRequest]
REQUEST_BUILDERS: dict[str, RequestBuilder] = {
    "code": _code_request,
    "dast": dast_request,
    "deps": _deps_request,
    "iac": _iac_request,
    "image": _image_request,
    "model": _model_request,
}
SCAN_TITLES: dict[str, str] = {
    "code": "bandit on the project's code",
    "deps": "pip-audit on the pinned requirements",
    "iac": "trivy on Dockerfiles, Kubernetes manifests and committed secrets",
    "image": "trivy on the container image",
    "model": "model files that run code when loaded",
    "dast": "DAST of the running model endpoint",
}
# DAST scans a live system: its result is never restored from the cache. It declares no
# `after`, so scanning an external --target does not train a model first; in a full run it
# comes after prune and, without a target, serves the pruned model for the scan.
UNCACHEABLE: frozenset[str] = frozenset({"dast"})
SCAN_AFTER: dict[str, tuple[str, ...]] = {"model": ("train", "prune")}
EXTRA_OUTPUTS: dict[str, tuple[str, ...]] = {"image": (IMAGE_SBOM,)}


def _check_readable(path: Path, key: str) -> None:
    """A path the user configured must exist, be a file or a directory, and be readable
    (exit 2 otherwise): /dev/zero or a FIFO would make a scanner read forever or block."""
    if not path.exists():
        what = "dangling symlink" if path.is_symlink() else "does not exist"
        raise ConfigError(f"{key}: {path} {what}")
    kind = special_file_kind(path.stat().st_mode)
    if kind is not None:
        raise ConfigError(f"{key}: {path} is {kind}, not a file or a directory")
    try:
        if path.is_dir():
            next(os.scandir(path), None)
        else:
            with open(path, "rb") as fh:
                fh.read(1)
    except OSError as exc:
        raise InputError(f"{key}: cannot read {path}: {exc.strerror}") from exc


def _preflight_paths(config: Config, scanner: str, key: str) -> None:
    for rel in config.section("scan")[scanner][key]:
        # Not resolved: a dangling symlink must be reported as what the user wrote.
        _check_readable(config.root / rel, f"scan.{scanner}.{key}")


def _preflight_advisories(config: Config) -> None:
    path = advisories_dir(config)
    if path is None:
        return
    key = ADVISORIES_ENV if os.environ.get(ADVISORIES_ENV) else "scan.deps.advisories"
    if not path.is_dir():
        raise ConfigError(f"{key}: {path} is not a directory of OSV advisories")
    if not any(p.suffix in (".yaml", ".yml", ".json") for p in path.rglob("*")):
        raise ConfigError(f"{key}: {path} holds no OSV records (*.yaml, *.json)")


def _preflight_deps(config: Config) -> None:
    from ci_ml.scan.requirements import parse_requirements

    _preflight_paths(config, "deps", "requirements")
    for rel in config.section("scan")["deps"]["requirements"]:
        parse_requirements(config.resolve(rel))
    _preflight_advisories(config)


def _has_unpinned(files: tuple[Path, ...]) -> bool:
    from ci_ml.scan.requirements import parse_requirements

    try:
        return any(not pin.pinned for f in files for pin in parse_requirements(f))
    except InputError:
        return False   # preflight has reported it


def _preflight_image(config: Config) -> None:
    section = config.section("scan")["image"]
    if bool(section["image"]) == bool(section["input"]):
        raise ConfigError("scan.image: set exactly one of 'image' (a local docker image) or "
                          "'input' (a `docker save` archive)")
    if section["input"]:
        _check_readable(config.root / section["input"], "scan.image.input")
    _preflight_advisories(config)


PREFLIGHTS: dict[str, Callable[[Config], None]] = {
    "code": lambda c: _preflight_paths(c, "code", "paths"),
    "deps": _preflight_deps,
    "iac": lambda c: _preflight_paths(c, "iac", "paths"),
    "image": _preflight_image,
    "model": lambda c: _preflight_paths(c, "model", "paths"),
}


def summarize(result: ScanResult) -> str:
    if result.status is ScanStatus.ERROR:
        return f"did not run: {result.error}"
    counts: dict[str, int] = {}
    for f in result.findings:
        counts[f.severity.label] = counts.get(f.severity.label, 0) + 1
    order = [s.label for s in sorted(Severity, reverse=True)]
    parts = [f"{counts[s]} {s}" for s in order if s in counts]
    text = f"{len(result.findings)} finding(s)" + (f" ({', '.join(parts)})" if parts else "")
    if result.status is ScanStatus.INCOMPLETE:
        text += f"; INCOMPLETE, {len(result.gaps)} not covered: {result.gaps[0].title}"
    return text


def run_scan(scanner_name: str, request: ScanRequest) -> ScanResult:
    """Run one scanner; a tool failure becomes a "did not run" result, never an empty one.

    No timestamps are stamped on the result: scans/<name>.json must be identical when
    the findings are, because its hash is part of the gate's cache key.
    """
    scanner = SCANNERS[scanner_name]()
    try:
        return scanner.scan(request)
    except ScanError as exc:
        return ScanResult.failed(scanner_name, scanner.tool, exc.message)


def _label(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name


def _hash_tree(path: Path, skip: Path) -> str:
    """hash_path of a directory without one of its subtrees (the out dir)."""
    digest = hashlib.sha256()
    for file in iter_files(path):
        if file.resolve().is_relative_to(skip):
            continue
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        digest.update(sha256_file(file).encode() + b"\n")
    return digest.hexdigest()


def _image_id(name: str) -> str:
    """The local image's ID, so a rebuilt image under the same tag is a new cache key."""
    try:
        proc = run_tool([find_tool("docker"), "image", "inspect", "--format", "{{.Id}}", name],
                        tool="docker", timeout=30)
        return proc.stdout.strip() or f"unresolved-{uuid.uuid4()}"
    except ScanError:
        return f"unresolved-{uuid.uuid4()}"   # never a cache hit: the scan reports the failure


class ScanStep(Step):
    scanner: ClassVar[str]
    after: ClassVar[tuple[str, ...]] = ()
    version: ClassVar[str] = "2"

    def enabled(self, config: Config) -> bool:
        return bool(config.section("scan")[self.scanner]["enabled"])

    def preflight(self, config: Config) -> None:
        check = PREFLIGHTS.get(self.scanner)
        if check is not None:
            check(config)

    def request(self, config: Config, ctx: StepContext | None) -> ScanRequest:
        return REQUEST_BUILDERS[self.scanner](config, ctx)

    def inputs(self, ctx: StepContext) -> StepInputs:
        req = self.request(ctx.config, ctx)
        scanner = SCANNERS[self.scanner]()
        try:
            version = scanner.tool_version()
        except ScanError:
            version = "missing"  # the run itself reports the failure
        # Keys must not depend on where the project or --out live (laptop vs CI): inputs in
        # the project are hashed under their relative names; model artifacts in --out are
        # covered by the train/prune output hashes (``after``); anything else outside the
        # project (an advisory mirror, an image archive) by its content hash alone.
        files: list[Path] = []
        extra: dict[str, str] = {}
        root, out = ctx.config.root.resolve(), ctx.out_dir.resolve()
        for i, target in enumerate(req.targets):
            resolved = target.resolve()
            if resolved.is_relative_to(out):
                continue
            if out.is_relative_to(resolved):   # e.g. iac over "." with --out inside the project
                extra[f"tree{i}:{_label(resolved, root)}"] = _hash_tree(resolved, skip=out)
            elif resolved.is_relative_to(root):
                files.append(target)
            else:
                extra[f"input{i}:{target.name}"] = hash_path(target)
        advisories = req.options.get("advisories", False)
        today = dt.datetime.now(dt.UTC).date().isoformat()
        if isinstance(advisories, Path):
            extra["advisories"] = hash_path(advisories)
        elif advisories is None:
            # Online advisory services change daily: an online result is reused that day only.
            extra["online_day"] = today
        if self.scanner == "deps" and _has_unpinned(req.targets):
            # What pip resolves an unpinned requirement to changes with new releases.
            extra["resolved_day"] = today
        if req.options.get("image"):
            extra["image_id"] = _image_id(str(req.options["image"]))
        scan = ctx.config.section("scan")
        return StepInputs(files=tuple(files),
                          config={"scan": dict(scan[self.scanner]),
                                  "common": {k: scan[k] for k in ("timeout_s",
                                                                  "unscored_severity")}},
                          tools={scanner.tool: version}, extra=extra)

    def outputs(self, config: Config) -> tuple[str, ...]:
        return (scan_result_path(self.scanner), *EXTRA_OUTPUTS.get(self.scanner, ()))

    def run(self, ctx: StepContext) -> StepOutcome:
        result = run_scan(self.scanner, self.request(ctx.config, ctx))
        atomic_write_json(ctx.output(scan_result_path(self.scanner)), result.to_json())
        status = StepStatus.ERROR if result.status is ScanStatus.ERROR else StepStatus.PASSED
        return StepOutcome(status, summarize(result), {"findings": len(result.findings)})


def make_scan_step(scanner: str, title: str | None = None,
                   after: tuple[str, ...] | None = None) -> type[ScanStep]:
    attrs = {"name": f"scan-{scanner}", "title": title or SCAN_TITLES.get(scanner, scanner),
             "scanner": scanner,
             "after": SCAN_AFTER.get(scanner, ()) if after is None else after,
             "cacheable": scanner not in UNCACHEABLE}
    return type(f"Scan{scanner.title()}Step", (ScanStep,), attrs)


def scan_steps() -> list[type[ScanStep]]:
    """One pipeline step per registered scanner, in registry order."""
    return [make_scan_step(name) for name in SCANNERS]


def load_scan_results(out_dir: Path, names: list[str]) -> dict[str, ScanResult]:
    import json

    results: dict[str, ScanResult] = {}
    for name in names:
        path = out_dir / scan_result_path(name)
        if path.is_file():
            results[name] = ScanResult.from_json(json.loads(path.read_text("utf-8")))
    return results


def present_scan_results(out_dir: Path) -> Mapping[str, ScanResult]:
    """Every scan result under ``out_dir/scans`` (all registered scanners)."""
    return load_scan_results(out_dir, list(SCANNERS))
