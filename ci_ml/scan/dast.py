"""The "dast" scanner: a running model endpoint, scanned by ZAP or the built-in engine.

Which engine: ZAP when ``zap_url`` is set (a running ZAP daemon, driven through
zapv2), the built-in engine otherwise. Which target: ``target`` when set; else the
pruned model is served on a loopback port for the duration of the scan, and the
findings' URLs are reported at the configured ``serve.port`` so they stay stable
from run to run (waivers and fingerprints match them).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import ci_ml
from ci_ml.artifacts import CANDIDATE_ONNX
from ci_ml.config import Config
from ci_ml.dast.builtin import BuiltinEngine
from ci_ml.dast.findings import findings_from
from ci_ml.dast.http import Client
from ci_ml.dast.interface import DastEngine, DastError, DastOptions, DastReport, DastTarget
from ci_ml.dast.rules import Rules
from ci_ml.dast.target import discover
from ci_ml.extras import require
from ci_ml.pipeline.interface import StepContext
from ci_ml.scan.interface import Scanner, ScanRequest, ScanResult, ScanStatus

PRUNED_MODEL = CANDIDATE_ONNX


def dast_request(config: Config, ctx: StepContext | None) -> ScanRequest:
    section = config.section("scan")["dast"]
    serve = config.section("serve")
    target = section["target"]
    model: Path | None = None
    if section.get("model"):
        model = config.resolve(str(section["model"]))
    elif target is None:
        if serve["model"]:
            model = config.resolve(str(serve["model"]))
        elif ctx is not None:
            model = ctx.artifact(PRUNED_MODEL)
    rules = config.resolve(str(section["rules"])) if section["rules"] else None
    report = config.resolve(str(section["zap_report"])) if section["zap_report"] else None
    if report is not None:
        model = None
    files = tuple(p for p in (model, rules, report) if p is not None)
    return ScanRequest(root=config.root, targets=files, options={
        "target": target, "model": str(model) if model else None,
        "rules": str(rules) if rules else None, "active": bool(section["active"]),
        "zap_report": str(report) if report else None,
        "zap_url": section["zap_url"], "zap_api_key_env": section["zap_api_key_env"],
        "timeout_s": float(section["timeout_s"]),
        "max_duration_s": float(section["max_duration_s"]),
        "serve": dict(serve),
    })


def _zapv2_version() -> str:
    try:
        return importlib.metadata.version("zaproxy")
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def make_engine(options: Mapping[str, Any]) -> DastEngine:
    zap_url = options.get("zap_url")
    if not zap_url:
        return BuiltinEngine()
    from ci_ml.dast.zap import ZapEngine

    env_name = options.get("zap_api_key_env")
    key = os.environ.get(str(env_name)) if env_name else None
    return ZapEngine(str(zap_url), api_key=key or None, key_env=str(env_name) if env_name else None)


@contextmanager
def served_target(options: Mapping[str, Any]) -> Iterator[tuple[str, str | None]]:
    """(url to scan, url to report) for the target: the given URL, or the model served here."""
    if options.get("target"):
        yield str(options["target"]).rstrip("/"), None
        return
    model_path = options.get("model")
    if not model_path or not Path(model_path).is_file():
        raise DastError(f"no target: scan.dast.target is not set and there is no model to serve "
                        f"at {model_path or PRUNED_MODEL} (run `ci-ml prune` first, or pass "
                        "--target URL)")
    require("serve", "scan dast of the model served here (no --target)")
    from ci_ml.serve.server import load_model, start_background
    from ci_ml.serve.settings import ServeSettings

    section = dict(options.get("serve") or {})
    settings = ServeSettings.from_section(section)
    reported_port = settings.port or 8080
    model = load_model(Path(model_path), settings)
    running = start_background(model, replace(settings, host="127.0.0.1", port=0))
    try:
        yield running.url, f"http://127.0.0.1:{reported_port}"
    finally:
        running.stop()


def _rebase(report: DastReport, actual: str, shown: str) -> DastReport:
    alerts = tuple(replace(a, url=shown + a.url[len(actual):]) if a.url.startswith(actual) else a
                   for a in report.alerts)
    return replace(report, alerts=alerts, target=shown)


class DastScanner(Scanner):
    name: ClassVar[str] = "dast"
    tool: ClassVar[str] = "ci-ml-dast"

    def tool_version(self) -> str:
        return f"ci-ml {ci_ml.__version__}, zapv2 {_zapv2_version()}"

    def scan(self, request: ScanRequest) -> ScanResult:
        options = request.options
        rules = Rules.load(Path(options["rules"])) if options.get("rules") else Rules()
        engine = make_engine(options)
        dast_options = DastOptions(active=bool(options.get("active", True)),
                                   timeout_s=float(options.get("timeout_s", 10.0)),
                                   max_duration_s=float(options.get("max_duration_s", 600.0)))
        if options.get("zap_report"):
            # A report ZAP wrote elsewhere (e.g. a CI job's ZAP container): no target needed here.
            from ci_ml.dast.zap import ZapReportEngine

            imported = ZapReportEngine(Path(options["zap_report"])).scan(
                DastTarget(url=str(options.get("target") or "")), dast_options)
            return ScanResult(scanner=self.name, status=ScanStatus.OK,
                              findings=findings_from(imported, rules), tool="zap",
                              tool_version=imported.engine_version,
                              targets=(Path(options["zap_report"]).name,))
        model = Path(options["model"]) if options.get("model") and options.get("target") else None
        with served_target(options) as (url, shown):
            try:
                target = discover(Client(url, dast_options.timeout_s), model)
            except DastError:
                if engine.name != "zap":
                    raise
                # ZAP reaches the target from where it runs (a service container, say), which
                # may not be where ci-ml runs: let ZAP find out, starting from the bare URL.
                target = DastTarget(url=url)
            report = engine.scan(target, dast_options)
        if shown:
            report = _rebase(report, url, shown)
        findings = findings_from(report, rules)
        tool = "zap" if engine.name == "zap" else self.tool
        return ScanResult(scanner=self.name, status=ScanStatus.OK, findings=findings, tool=tool,
                          tool_version=report.engine_version, targets=(report.target,))


def with_cli_options(config: Config, *, target: str | None = None, model: Path | None = None,
                     zap_url: str | None = None, zap_api_key_env: str | None = None,
                     zap_report: Path | None = None, rules: Path | None = None,
                     active: bool | None = None, timeout_s: float | None = None) -> Config:
    """The config with ``scan dast``'s options laid over ``scan.dast`` (and the step enabled).

    Paths given on the command line are resolved against the working directory, as a
    user typing them expects; config paths stay relative to the config file.
    """
    from ci_ml.errors import InputError, UsageError

    section = dict(config.section("scan")["dast"])
    section["enabled"] = True
    for name, value in (("target", target), ("zap_url", zap_url)):
        if value is not None:
            if not re.match(r"^https?://[^/\s]+", value):
                raise UsageError(f"--{name.replace('_', '-')} {value!r}: expected an http:// or "
                                 "https:// URL")
            section[name] = value.rstrip("/")
    if zap_api_key_env is not None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", zap_api_key_env):
            raise UsageError(f"--zap-api-key-env {zap_api_key_env!r}: expected the NAME of an "
                             "environment variable (never the key itself)")
        section["zap_api_key_env"] = zap_api_key_env
    for name, path in (("rules", rules), ("model", model), ("zap_report", zap_report)):
        if path is not None:
            if not path.is_file():
                raise InputError(f"--{name.replace('_', '-')} {path}: file not found")
            section[name] = str(path.resolve())
    if rules is not None:
        Rules.load(rules)  # a malformed rules file is a usage error before anything runs
    if active is not None:
        section["active"] = active
    if timeout_s is not None:
        if timeout_s <= 0:
            raise UsageError("--timeout must be positive")
        section["timeout_s"] = timeout_s
    scan = {**dict(config.section("scan")), "dast": section}
    return Config(path=config.path, data={**dict(config.data), "scan": scan})
