"""Prometheus alerting rules for the served model's SLOs (``ci-ml deploy render``).

The rules use the same PromQL as ``ci-ml monitor``'s health check
(``ci_ml.monitor.prometheus.Queries``) over a short rate window, so an alert and the
scheduled check agree on what a breach is. Two forms of the same rule groups:
a plain rules file for any Prometheus (``rule_files:``) and a ``PrometheusRule``
for the Prometheus Operator. Both are checked with ``promtool check rules``.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ci_ml.config import Config
from ci_ml.errors import ToolError, UsageError
from ci_ml.fsutil import replace_path
from ci_ml.monitor.interface import HealthError
from ci_ml.monitor.policy import MonitorPolicy
from ci_ml.monitor.prometheus import Queries

ALERTS_DIR = "alerts"
RULES_FILE = "ci-ml.rules.yml"
PROMETHEUS_RULE_FILE = "prometheusrule.yaml"


def rule_groups(config: Config) -> dict[str, Any]:
    """The rules file's document: one group with the SLO alerts of this project."""
    section = config.section("monitor")
    policy = MonitorPolicy.from_config(section)
    slo = section["slo"]
    prom = section["prometheus"]
    try:
        queries = Queries(str(prom["selector"]), str(prom["routes"]))
    except HealthError as exc:
        raise UsageError(f"{config.path}: {exc.message}") from exc
    rng, hold = str(slo["rate_window"]), str(slo["for"])
    project = config.project_name
    labels = {"service": project}
    rules: list[dict[str, Any]] = []
    if policy.error_rate is not None:
        rules.append({
            "alert": "CiMlErrorRateHigh",
            "expr": f"{queries.error_rate(rng)} > {policy.error_rate:g}",
            "for": hold, "labels": {**labels, "severity": "critical", "slo": "error_rate"},
            "annotations": {
                "summary": f"{project}: more than {policy.error_rate:.2%} of inference requests "
                           "fail (5xx)",
                "description": "Error rate {{ $value | humanizePercentage }} over " + rng
                               + f" (SLO {policy.error_rate:.2%}).",
            }})
    for latency in policy.latency:
        seconds = latency.max_ms / 1000.0
        quantile = f"{latency.quantile * 100:g}".replace(".", "_")
        rules.append({
            "alert": f"CiMlLatencyP{quantile}High",
            "expr": f"{queries.latency(latency.quantile, rng)} > {seconds:g}",
            "for": hold, "labels": {**labels, "severity": "warning", "slo": latency.name},
            "annotations": {
                "summary": f"{project}: p{latency.quantile * 100:g} latency of inference "
                           f"requests over {latency.max_ms:g} ms",
                "description": "p" + f"{latency.quantile * 100:g}" + " latency "
                               "{{ $value | humanizeDuration }} over " + rng
                               + f" (SLO {latency.max_ms:g} ms).",
            }})
    rules.append({
        "alert": "CiMlModelAbsent",
        "expr": f"absent(ci_ml_model_info{{{queries.selector}}})" if queries.selector
                else "absent(ci_ml_model_info)",
        "for": hold, "labels": {**labels, "severity": "critical", "slo": "availability"},
        "annotations": {"summary": f"{project}: no model server is scraped",
                        "description": "No ci_ml_model_info series for " + hold + "."}})
    return {"groups": [{"name": f"ci-ml-{project}-slo", "rules": rules}]}


def prometheus_rule(config: Config, groups: Mapping[str, Any], namespace: str,
                    name: str) -> dict[str, Any]:
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": f"{name}-slo", "namespace": namespace,
                         "labels": {"app.kubernetes.io/name": name,
                                    "app.kubernetes.io/part-of": config.project_name}},
            "spec": dict(groups)}


def promtool_check(path: Path) -> None:
    """``promtool check rules``; a missing promtool or a failed check is a tool error."""
    binary = shutil.which("promtool")
    if binary is None:
        raise ToolError("promtool is not installed (Debian package prometheus); the alerting "
                        "rules were not checked")
    proc = subprocess.run([binary, "check", "rules", str(path)], capture_output=True, text=True,
                          timeout=60, check=False)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ToolError(f"promtool check rules {path.name} failed: {' | '.join(detail)}")


def write_alerts(config: Config, out_dir: Path, *, namespace: str, name: str,
                 validate: bool = True) -> Path:
    """Write ``<out>/alerts/`` (rules file and PrometheusRule), checked, all or nothing."""
    groups = rule_groups(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out_dir, prefix=f".{ALERTS_DIR}."))
    try:
        rules = work / RULES_FILE
        rules.write_text(yaml.safe_dump(groups, sort_keys=False, width=200), "utf-8")
        (work / PROMETHEUS_RULE_FILE).write_text(
            yaml.safe_dump(prometheus_rule(config, groups, namespace, name), sort_keys=False,
                           width=200), "utf-8")
        if validate:
            promtool_check(rules)
        replace_path(work, out_dir / ALERTS_DIR)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out_dir / ALERTS_DIR
