"""`ci-ml deploy render` through the real CLI; the manifests pass both validators, run here
independently of the command (kubernetes-validate's API, and the trivy binary)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from ci_ml.deploy.validate import trivy_config, validate_schemas
from ci_ml.scan.interface import Severity
from tests.conftest import run_cli
from tests.gate.trained import cli, edit_config, variant

TRIVY = Path(sys.executable).parent / "trivy"


def docs(directory: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(directory.glob("*.yaml")):
        (doc,) = [d for d in yaml.safe_load_all(path.read_text()) if d]
        out[path.name] = doc
    return out


def with_canary(project: Path, tmp_path: Path) -> None:
    """production holds v1 (gated), staging holds v2 (a different model)."""
    assert cli(project, "promote", "--stage", "staging").code == 0
    assert cli(project, "gate", "--stage", "production").code == 0
    assert cli(project, "promote", "--stage", "production").code == 0
    two = variant(project / "out", tmp_path / "two", "2")
    forced = run_cli("promote", "--stage", "staging", "--force", "--reason", "canary",
                     "--config", project / "ci-ml.yaml", "--out", two, cwd=project)
    assert forced.code == 0, forced.output


def independent_checks(directory: Path) -> None:
    for doc in docs(directory).values():
        kubernetes_validate.validate(doc, "1.30", strict=True)  # raises on any problem
    proc = subprocess.run([str(TRIVY), "config", "--skip-check-update", "--format", "json",
                           "--quiet", str(directory)], capture_output=True, text=True,
                          check=True)
    report = json.loads(proc.stdout)
    severities = [m["Severity"] for r in report.get("Results") or []
                  for m in r.get("Misconfigurations") or [] if m.get("Status") == "FAIL"]
    assert "HIGH" not in severities and "CRITICAL" not in severities, severities
    scanned = {Path(r["Target"]).name for r in report.get("Results") or []}
    assert scanned >= {"deployment.yaml"}, scanned  # trivy really looked at the manifests


def test_renders_stable_and_canary_that_pass_both_validators(project: Path,
                                                            tmp_path: Path) -> None:
    with_canary(project, tmp_path)
    result = cli(project, "deploy", "render")
    assert result.code == 0, result.output
    k8s = project / "out" / "k8s"
    rendered = docs(k8s)
    assert set(rendered) == {"deployment.yaml", "deployment-canary.yaml", "service.yaml",
                             "service-canary.yaml", "hpa.yaml", "pdb.yaml",
                             "networkpolicy.yaml", "ingress.yaml", "ingress-canary.yaml"}
    kinds = {d["kind"] for d in rendered.values()}
    assert kinds == {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
                     "NetworkPolicy", "Ingress"}
    stable, canary = rendered["deployment.yaml"], rendered["deployment-canary.yaml"]
    idx = json.loads(cli(project, "registry", "list", "--json").stdout)
    # Each track names the image `deploy build` makes of its model: the tag is the model's.
    for doc, version in ((stable, 0), (canary, 1)):
        tag = idx["versions"][version]["digest"].removeprefix("sha256:")[:12]
        assert doc["spec"]["template"]["spec"]["containers"][0]["image"] == f"ci-ml/digits:{tag}"
    assert canary["metadata"]["annotations"]["ci-ml/model-digest"] == idx["versions"][1]["digest"]
    ingress = rendered["ingress-canary.yaml"]["metadata"]["annotations"]
    assert ingress["nginx.ingress.kubernetes.io/canary"] == "true"
    assert ingress["nginx.ingress.kubernetes.io/canary-weight"] == "10"
    pod = stable["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "512Mi"}
    assert rendered["networkpolicy.yaml"]["spec"]["egress"] == []
    for deployment in (stable, canary):      # Prometheus finds every pod's /metrics
        scrape = deployment["spec"]["template"]["metadata"]["annotations"]
        assert (scrape["prometheus.io/scrape"], scrape["prometheus.io/path"]) == \
            ("true", "/metrics")
        assert scrape["prometheus.io/port"] == str(container["ports"][0]["containerPort"])
    report = json.loads((k8s / "validation.json").read_text())
    assert report["canary"]["version"] == 2 and report["validated"] is True
    assert "canary v2 (ci-ml/digits:" in result.stdout and "at 10% (ingress-nginx)" in result.stdout
    independent_checks(k8s)


def test_canary_weight_and_replicas_mode(project: Path, tmp_path: Path) -> None:
    with_canary(project, tmp_path)
    edit_config(project, lambda d: d.__setitem__("deploy", {"kubernetes": {
        "replicas": 3, "canary": {"mode": "replicas"}, "namespace": "models"}}))
    result = cli(project, "deploy", "render", "--canary-weight", "25")
    assert result.code == 0, result.output
    k8s = project / "out" / "k8s"
    rendered = docs(k8s)
    assert "ingress.yaml" not in rendered and "service-canary.yaml" not in rendered
    # One Service over both tracks; 1 canary pod beside 3 stable ones is 25% of traffic.
    assert "ci-ml/track" not in rendered["service.yaml"]["spec"]["selector"]
    assert rendered["deployment-canary.yaml"]["spec"]["replicas"] == 1
    assert rendered["deployment.yaml"]["metadata"]["namespace"] == "models"
    assert "at 25% (replicas)" in result.stdout
    independent_checks(k8s)


def test_no_canary_when_staging_equals_production(project: Path) -> None:
    assert cli(project, "promote", "--stage", "staging").code == 0
    assert cli(project, "gate", "--stage", "production").code == 0
    assert cli(project, "promote", "--stage", "production").code == 0
    result = cli(project, "deploy", "render")
    assert result.code == 0, result.output
    assert "no canary: staging holds v1, the same as production" in result.stderr
    assert not (project / "out" / "k8s" / "deployment-canary.yaml").exists()


def test_nothing_promoted_is_a_usage_error(project: Path) -> None:
    result = cli(project, "deploy", "render")
    assert result.code == 2
    assert result.stderr.startswith("error: no model to deploy")
    assert not (project / "out" / "k8s").exists()
    assert not list((project / "out").glob(".k8s.*"))


def test_first_deployment_deploys_staging_without_a_canary(project: Path) -> None:
    """Nothing in production yet: staging's model is the stable track, and no canary."""
    assert cli(project, "promote", "--stage", "staging").code == 0
    result = cli(project, "deploy", "render")
    assert result.code == 0, result.output
    assert "first deployment: nothing in production yet" in result.stderr
    k8s = project / "out" / "k8s"
    rendered = docs(k8s)
    assert "deployment-canary.yaml" not in rendered and "ingress-canary.yaml" not in rendered
    report = json.loads((k8s / "validation.json").read_text())
    assert report["stable"]["version"] == 1 and report["canary"] is None
    assert oct(k8s.stat().st_mode & 0o777) != oct(0o700)   # readable by others, as written files


def test_bad_kubernetes_config_names_the_key(project: Path) -> None:
    edit_config(project, lambda d: d.__setitem__("deploy", {"kubernetes": {"port": 80}}))
    result = cli(project, "deploy", "render")
    assert result.code == 2
    assert "deploy.kubernetes.port: must be >= 1024, got 80" in result.stderr


def test_trivy_blocking_findings_are_parsed(tmp_path: Path) -> None:
    """The blocking path of the validator, on a manifest that is insecure on purpose."""
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
        "spec": {"selector": {"matchLabels": {"a": "x"}}, "template": {
            "metadata": {"labels": {"a": "x"}},
            "spec": {"containers": [{"name": "x", "image": "x:1",
                                     "securityContext": {"privileged": True}}]}}}}))
    found = trivy_config(tmp_path)
    assert any(m.severity >= Severity.HIGH for m in found)
    assert any(m.id.replace("-", "") == "KSV0017" for m in found)  # privileged container


def test_schema_problems_are_reported() -> None:
    bad = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
           "spec": {"ports": [{"port": "eighty"}], "colour": "blue"}}
    _, problems = validate_schemas([("service.yaml", bad)], "1.30")
    assert problems and problems[0].file == "service.yaml"


@pytest.mark.parametrize("weight", ["0", "100"])
def test_canary_weight_out_of_range(project: Path, weight: str) -> None:
    result = cli(project, "deploy", "render", "--canary-weight", weight)
    assert result.code == 2 and "--canary-weight" in result.stderr
