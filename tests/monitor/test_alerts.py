"""The SLO alerting rules `ci-ml deploy render` writes: `promtool check rules` accepts them and
`promtool test rules` shows each alert firing on a breach and staying quiet without one."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ci_ml.config import load_config
from ci_ml.errors import UsageError
from ci_ml.monitor.alerts import PROMETHEUS_RULE_FILE, RULES_FILE, write_alerts
from tests.gate.trained import cli, edit_config

SELECTOR = {"job": "digits"}
REQ = 'ci_ml_requests_total{job="digits",route="/predict",method="POST",status="%s"}'
BUCKET = 'ci_ml_request_duration_seconds_bucket{job="digits",route="/predict",le="%s"}'
INFO = 'ci_ml_model_info{job="digits",model="digits",version="1",digest="abc"}'


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool is not installed (apt-get install prometheus; .ci/provision)"
    return subprocess.run([binary, *map(str, args)], capture_output=True, text=True, timeout=120,
                          check=False)


@pytest.fixture
def rules(project: Path, tmp_path: Path) -> Path:
    edit_config(project, lambda doc: doc.update(monitor={
        "prometheus": {"selector": 'job="digits"'},
        "slo": {"error_rate": 0.01, "latency": [{"quantile": 0.99, "max_ms": 500},
                                                {"quantile": 0.5, "max_ms": 100}]}}))
    directory = write_alerts(load_config(project / "ci-ml.yaml"), tmp_path, namespace="ml",
                             name="digits")
    return directory / RULES_FILE


def series(healthy: bool) -> list[dict[str, str]]:
    """20 minutes of scrapes, one a minute: 100 requests a minute."""
    errors = "0+0x20" if healthy else "0+5x20"          # 5 % of requests fail
    slow = "0+100x20" if healthy else "0+90x20"         # 10 % take 0.5-1 s
    return [
        {"series": REQ % "200", "values": "0+100x20"},
        {"series": REQ % "500", "values": errors},
        {"series": BUCKET % "0.05", "values": "0+80x20"},
        {"series": BUCKET % "0.25", "values": slow},
        {"series": BUCKET % "0.5", "values": slow},
        {"series": BUCKET % "1", "values": "0+100x20"},
        {"series": BUCKET % "+Inf", "values": "0+100x20"},
        {"series": INFO, "values": "1x20"},
    ]


def alert(slo: str, severity: str, description: str, summary: str,
          **labels: str) -> dict[str, Any]:
    return {"exp_labels": {"service": "digits", "severity": severity, "slo": slo, **labels},
            "exp_annotations": {"description": description, "summary": summary}}


def test_rules_pass_promtool_and_fire_only_on_breaches(rules: Path, tmp_path: Path) -> None:
    assert promtool("check", "rules", rules).returncode == 0
    names = [r["alert"] for r in yaml.safe_load(rules.read_text())["groups"][0]["rules"]]
    assert names == ["CiMlErrorRateHigh", "CiMlLatencyP99High", "CiMlLatencyP50High",
                     "CiMlModelAbsent"]
    test = {"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": [
        {"interval": "1m", "input_series": series(healthy=False), "alert_rule_test": [
            {"eval_time": "4m", "alertname": "CiMlErrorRateHigh", "exp_alerts": []},
            {"eval_time": "12m", "alertname": "CiMlErrorRateHigh",
             "exp_alerts": [alert("error_rate", "critical",
                                  "Error rate 4.762% over 5m (SLO 1.00%).",
                                  "digits: more than 1.00% of inference requests fail (5xx)")]},
            {"eval_time": "12m", "alertname": "CiMlLatencyP99High",
             "exp_alerts": [alert("latency_p99", "warning",
                                  "p99 latency 950ms over 5m (SLO 500 ms).",
                                  "digits: p99 latency of inference requests over 500 ms")]},
            {"eval_time": "12m", "alertname": "CiMlLatencyP50High", "exp_alerts": []},
            {"eval_time": "12m", "alertname": "CiMlModelAbsent", "exp_alerts": []}]},
        {"interval": "1m", "input_series": series(healthy=True), "alert_rule_test": [
            {"eval_time": "15m", "alertname": name, "exp_alerts": []}
            for name in ("CiMlErrorRateHigh", "CiMlLatencyP99High", "CiMlLatencyP50High")]},
        {"interval": "1m", "input_series": [s for s in series(healthy=True)
                                            if not s["series"].startswith("ci_ml_model_info")],
         "alert_rule_test": [
             {"eval_time": "10m", "alertname": "CiMlModelAbsent",
              "exp_alerts": [alert("availability", "critical",
                                   "No ci_ml_model_info series for 5m.",
                                   "digits: no model server is scraped", job="digits")]}]},
        # Another job's failures are not this model's.
        {"interval": "1m", "input_series": [
            {"series": s["series"].replace('job="digits"', 'job="other"'), "values": s["values"]}
            for s in series(healthy=False)] + [{"series": INFO, "values": "1x20"}],
         "alert_rule_test": [{"eval_time": "12m", "alertname": "CiMlErrorRateHigh",
                              "exp_alerts": []}]},
    ]}
    test_file = tmp_path / "rules.test.yml"
    test_file.write_text(yaml.safe_dump(test))
    result = promtool("test", "rules", test_file)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_prometheus_rule_holds_the_same_groups(rules: Path) -> None:
    rule = yaml.safe_load((rules.parent / PROMETHEUS_RULE_FILE).read_text())
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    assert rule["metadata"]["namespace"] == "ml" and rule["metadata"]["name"] == "digits-slo"
    assert rule["spec"] == yaml.safe_load(rules.read_text())
    spec = rules.parent / "spec.yml"
    spec.write_text(yaml.safe_dump(rule["spec"]))
    assert promtool("check", "rules", spec).returncode == 0


def test_a_selector_that_is_not_label_matchers_is_refused(project: Path, tmp_path: Path) -> None:
    edit_config(project, lambda doc: doc.update(
        monitor={"prometheus": {"selector": 'job="x"}) or vector(1) #'}}))
    with pytest.raises(UsageError, match="monitor.prometheus.selector"):
        write_alerts(load_config(project / "ci-ml.yaml"), tmp_path, namespace="ml", name="x")
    assert not (tmp_path / "alerts").exists()


def test_deploy_render_writes_the_checked_rules_beside_the_manifests(project: Path) -> None:
    assert cli(project, "promote", "--stage", "staging").code == 0
    assert cli(project, "gate", "--stage", "production").code == 0
    assert cli(project, "promote", "--stage", "production").code == 0
    result = cli(project, "deploy", "render")
    assert result.code == 0, result.output
    assert "promtool check rules: ok" in result.stdout
    alerts = project / "out" / "alerts"
    assert sorted(p.name for p in alerts.iterdir()) == [RULES_FILE, PROMETHEUS_RULE_FILE]
    assert not list((project / "out" / "k8s").glob("prometheus*"))
