"""Promote a pipeline's model into a stage, or roll a stage back; attest every promotion.

``promote`` admits a model only on a passing gate decision for the same stage,
the same model digest and the same policy (``decision.json`` in ``--out``).
``--force`` overrides that, and is recorded with the reason given in the event's
signed statement, so an auditor sees every bypass. The registry re-checks, against
its own verified history, that a production candidate holds staging through a gated
promotion: a decision made on a forged registry view cannot promote.
"""

from __future__ import annotations

import datetime
import getpass
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ci_ml.attest.keys import key_is_exposed, signing_key_path
from ci_ml.attest.statement import git_state
from ci_ml.config import Config
from ci_ml.console import Reporter
from ci_ml.errors import BlockedError, InputError, UsageError
from ci_ml.fsutil import sha256_file
from ci_ml.gate.interface import policy_digest
from ci_ml.gate.step import configured_waivers
from ci_ml.model.steps import served_metrics_path
from ci_ml.registry.backends import open_registry
from ci_ml.registry.interface import (
    PREVIOUS_STAGE,
    HistoryEntry,
    ModelIdentity,
    Promotion,
    VersionRecord,
)
from ci_ml.report.markdown import scalar_metrics

EVIDENCE_FILES = ("decision.json", "findings.json", "metrics.json", "data-report.json",
                  "prune-report.json")
USER_ENVS = ("CI_ML_USER", "GITHUB_ACTOR", "GITLAB_USER_LOGIN")


def current_user() -> str:
    for name in USER_ENVS:
        if os.environ.get(name):
            return os.environ[name]
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from exc


def decision_problems(decision: Mapping[str, Any] | None, stage: str, digest: str,
                      policy_sha: str) -> list[str]:
    """Why a decision does not admit this model into this stage (empty: it does)."""
    if decision is None:
        return [f"no gate decision (decision.json): run `ci-ml gate --stage {stage}` first"]
    problems = []
    if decision.get("stage") != stage:
        problems.append(f"the decision is for {decision.get('stage')!r}, not {stage!r}: run "
                        f"`ci-ml gate --stage {stage}`")
    if decision.get("decision") != "pass":
        blocking = ", ".join(decision.get("blocking") or []) or "?"
        problems.append(f"the gate blocked (blocking: {blocking})")
    decided = (decision.get("model") or {}).get("digest")
    if decided != digest:
        problems.append(f"the decision is for model {str(decided)[7:19] or 'none'}, the out "
                        f"dir holds {digest[7:19]}: re-run the gate")
    if decision.get("stage") == stage and decision.get("policy_sha256") != policy_sha:
        problems.append("the policy changed since the gate ran: re-run the gate")
    return problems


@dataclass(frozen=True)
class PromoteResult:
    entry: HistoryEntry
    version: VersionRecord
    problems: tuple[str, ...]   # what --force overrode (empty when the gate admitted it)
    registry: str
    signing: str                # "required", or "off" (the event may be unsigned)


def _findings_summary(findings: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not isinstance(findings, Mapping):
        return None
    return {"counts": findings.get("counts"),
            "counts_after_waivers": findings.get("counts_after_waivers"),
            "waived": findings.get("waived", 0),
            "scans": {name: s.get("status") for name, s in (findings.get("scans") or {}).items()}}


def promote(config: Config, out_dir: Path, stage: str, *, force: bool, reason: str | None,
            reporter: Reporter) -> PromoteResult:
    if force and not (reason and reason.strip()):
        raise UsageError("--force needs --reason TEXT: a forced promotion is recorded with why")
    if not out_dir.is_dir():
        raise InputError(f"--out {out_dir}: not a directory (point it at a pipeline's out dir)")
    identity = ModelIdentity.from_out_dir(out_dir)
    decision = _read_json(out_dir / "decision.json")
    if decision is not None and not isinstance(decision, dict):
        raise InputError(f"{out_dir / 'decision.json'}: expected a JSON object")
    policy_sha = policy_digest(config.section("policy")[stage])
    problems = decision_problems(decision, stage, identity.digest, policy_sha)
    if problems and not force:
        raise BlockedError(f"promotion to {stage} refused: {problems[0]}",
                           hint="pass --force --reason TEXT to override (recorded)")
    # The keys are loaded before anything is written: a bad key leaves the registry untouched.
    registry = open_registry(config, write=True)
    key_path = signing_key_path(config)
    if key_path is not None and key_is_exposed(key_path):
        reporter.warn(f"{key_path}: signing key is readable by group/others (chmod 600 it)")
    metrics = _read_json(served_metrics_path(out_dir)) or {}
    data_report = _read_json(out_dir / "data-report.json") or {}
    findings = _read_json(out_dir / "findings.json")
    if decision is not None:
        waivers = list((decision.get("waivers") or {}).get("applied", []))
    else:
        today = datetime.date.today()
        waivers = [w.to_json() for w in configured_waivers(config) if not w.expired(today)]
    evidence = {name: out_dir / name for name in EVIDENCE_FILES if (out_dir / name).is_file()}
    context = {
        "findings": _findings_summary(findings),
        "waivers": waivers,
        "policy": {"stage": stage, "sha256": (decision or {}).get("policy_sha256", policy_sha)},
        "decision": None if decision is None else {
            "stage": decision.get("stage"), "outcome": decision.get("decision"),
            "blocking": decision.get("blocking", []),
            "sha256": sha256_file(out_dir / "decision.json")},
        "git": git_state(config.root),
    }

    sha = data_report.get("sha256") if isinstance(data_report, dict) else None
    requires = (PREVIOUS_STAGE[stage] if config.section("policy")[stage].get(
        "require_previous_stage", True) else None)
    entry = registry.promote(Promotion(
        stage=stage, identity=identity, sources=ModelIdentity.source_paths(out_dir),
        metrics=scalar_metrics(metrics if isinstance(metrics, dict) else {}),
        data={str(k): str(v) for k, v in sha.items()} if isinstance(sha, dict) else {},
        evidence=evidence,
        gate={"decision": (decision or {}).get("decision"), "policy_sha256": policy_sha,
              "force_requested": force},
        problems=tuple(problems), force=force, reason=reason, user=current_user(),
        requires=requires, context=context))
    version = registry.state().version(entry.version)
    return PromoteResult(entry, version, tuple(entry.gate.get("problems", ())),
                         registry.location, registry.trust.mode)


def rollback(config: Config, stage: str, reason: str | None) -> HistoryEntry:
    return open_registry(config, write=True).rollback(stage, current_user(), reason)
