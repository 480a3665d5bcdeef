"""``ci-ml deploy render``: Kubernetes manifests for the production model and a canary.

The stable Deployment runs the model in ``production``; the canary runs the
model in ``staging`` when it differs, on a configurable share of traffic:
``ingress-nginx`` mode splits exactly with canary Ingress annotations,
``replicas`` mode splits by replica count behind one Service (approximate; the
effective share is reported). Manifests are rendered into a private directory,
validated (Kubernetes schemas, ``trivy config``), and only then moved to
``<out>/k8s``: a failed render leaves nothing behind.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ci_ml.config import Config
from ci_ml.deploy.reference import built_reference, model_tag, reference_for
from ci_ml.deploy.validate import BLOCKING, Misconfig, trivy_config, validate_schemas
from ci_ml.errors import BlockedError, ConfigError, UsageError
from ci_ml.fsutil import atomic_write_json, replace_path, umask
from ci_ml.registry.interface import RegistryState, VersionRecord
from ci_ml.resources import render_template, template_environment

K8S_DIR = "k8s"
REPORT = "validation.json"


@dataclass(frozen=True)
class Workload:
    track: str
    version: int
    digest: str
    image: str
    replicas: int
    resource: str
    model_ref: str | None = None    # HOST/REPO@sha256:... when the model is pulled from OCI


@dataclass(frozen=True)
class RenderPlan:
    stable: Workload
    canary: Workload | None
    mode: str
    weight: int                 # the configured canary share, percent
    effective_weight: float     # what the cluster will actually send to the canary, percent
    note: str = ""


@dataclass(frozen=True)
class RenderResult:
    plan: RenderPlan
    directory: Path
    files: tuple[str, ...]
    schema_version: str
    misconfigs: tuple[Misconfig, ...]


def _image(config: Config, record: VersionRecord, out_dir: Path | None) -> str:
    """The image of a registry version: the one ``deploy build`` makes of that model (pinned
    by digest when ``out_dir`` holds its pushed build), or deploy.kubernetes.image's template."""
    deploy = config.section("deploy")
    template = deploy["kubernetes"]["image"]
    if template is None:
        expected = reference_for(deploy, config.project_name, record.digest)
        if out_dir is None:
            return str(expected)
        return str(built_reference(out_dir, expected, record.digest))
    try:
        return str(template).format(project=config.project_name, version=record.version,
                                    digest=model_tag(record.digest))
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"{config.path}: deploy.kubernetes.image: bad placeholder in "
                          f"{template!r} (use {{project}}, {{version}}, {{digest}})") from exc


def make_plan(config: Config, state: RegistryState, *, stable: int | None = None,
              canary: int | None = None, canary_enabled: bool | None = None,
              weight: int | None = None, out_dir: Path | None = None) -> RenderPlan:
    """What to deploy: production's model as the stable track and staging's as a canary.

    A project's first deployment (nothing in production yet) has no stable side for a
    canary: staging's model deploys as the stable track, without one.
    """
    k8s = config.section("deploy")["kubernetes"]
    name = str(k8s["name"] or config.project_name).lower()
    first = ""
    if stable is not None:
        stable_rec = state.version(stable)
    else:
        current = state.current("production")
        if current is None:
            current = state.current("staging")
            if current is None:
                raise UsageError("no model to deploy: the registry holds none in production or "
                                 "staging (promote one with `ci-ml promote`, or pass --stable "
                                 "VERSION)")
            first = (f"first deployment: nothing in production yet, so staging's "
                     f"v{current.version} deploys as the stable track, without a canary")
        stable_rec = current
    if int(k8s["max_replicas"]) < int(k8s["replicas"]):
        raise ConfigError(f"{config.path}: deploy.kubernetes.max_replicas "
                          f"({k8s['max_replicas']}) is below replicas ({k8s['replicas']})")
    canary_cfg = k8s["canary"]
    enabled = canary_cfg["enabled"] if canary_enabled is None else canary_enabled
    weight = int(canary_cfg["weight"] if weight is None else weight)
    if not 1 <= weight <= 99:
        raise UsageError(f"--canary-weight {weight}: must be 1..99 (percent)")
    mode = str(canary_cfg["mode"])
    replicas = int(k8s["replicas"])
    stable_w = Workload("stable", stable_rec.version, stable_rec.digest,
                        _image(config, stable_rec, out_dir), replicas, name)
    canary_rec = None
    note = first
    if enabled and not first:
        canary_rec = state.version(canary) if canary is not None else state.current("staging")
        if canary_rec is None:
            note = "no canary: staging holds no model"
        elif canary_rec.version == stable_rec.version:
            note = f"no canary: staging holds v{canary_rec.version}, the same as production"
            canary_rec = None
    if canary_rec is None:
        return RenderPlan(stable_w, None, mode, weight, 0.0, note)
    if mode == "replicas":
        # One Service over both tracks: traffic follows the pod count.
        n = max(1, round(replicas * weight / (100 - weight)))
        effective = 100.0 * n / (n + replicas)
    else:
        n, effective = 1, float(weight)
    canary_w = Workload("canary", canary_rec.version, canary_rec.digest,
                        _image(config, canary_rec, out_dir), n, f"{name}-canary")
    if not math.isclose(effective, weight, abs_tol=0.5):
        note = (f"replicas mode: {n} canary pod(s) beside {replicas} stable pod(s) give about "
                f"{effective:.0f}% of traffic, not {weight}% (use mode ingress-nginx for an exact "
                "split)")
    return RenderPlan(stable_w, canary_w, mode, weight, effective, note)


def _context(config: Config, plan: RenderPlan) -> dict[str, Any]:
    k8s = config.section("deploy")["kubernetes"]
    name = plan.stable.resource
    return {
        "name": name, "project": config.project_name,
        "namespace": str(k8s["namespace"] or config.project_name).lower(),
        "port": int(k8s["port"]), "health_path": str(k8s["health_path"]),
        "uid": int(k8s["run_as_user"]), "requests": dict(k8s["requests"]),
        "limits": dict(k8s["limits"]), "max_replicas": int(k8s["max_replicas"]),
        "target_cpu_percent": int(k8s["target_cpu_percent"]),
        "allow_from_namespaces": list(k8s["allow_from_namespaces"]),
        "ingress": dict(k8s["ingress"]), "stable": plan.stable,
        "canary_weight": plan.weight, "puller_image": str(k8s.get("puller_image", "")),
    }


def render_manifests(config: Config, plan: RenderPlan) -> dict[str, str]:
    """File name -> YAML text, for the plan."""
    env = template_environment("k8s", autoescape=False)  # YAML: values go through tojson
    ctx = _context(config, plan)
    name = ctx["name"]
    nginx = plan.mode == "ingress-nginx"

    def render(template: str, **extra: Any) -> str:
        return render_template(env, template, **ctx, **extra)

    files = {
        "deployment.yaml": render("deployment.yaml.j2", track="stable", model=plan.stable),
        # ingress-nginx mode: one Service per track; replicas mode: one Service over both.
        "service.yaml": render("service.yaml.j2", service_name=name,
                               track="stable" if nginx else None),
        "hpa.yaml": render("hpa.yaml.j2"),
        "pdb.yaml": render("pdb.yaml.j2"),
        "networkpolicy.yaml": render("networkpolicy.yaml.j2"),
    }
    if nginx:
        files["ingress.yaml"] = render("ingress.yaml.j2", ingress_name=name, service_name=name,
                                       track="stable")
    if plan.canary is not None:
        files["deployment-canary.yaml"] = render("deployment.yaml.j2", track="canary",
                                                 model=plan.canary)
        if nginx:
            files["service-canary.yaml"] = render("service.yaml.j2",
                                                  service_name=f"{name}-canary", track="canary")
            files["ingress-canary.yaml"] = render("ingress.yaml.j2",
                                                  ingress_name=f"{name}-canary",
                                                  service_name=f"{name}-canary", track="canary")
    return files


def _parse(files: Mapping[str, str]) -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for file, text in files.items():
        for doc in yaml.safe_load_all(text):
            if doc is not None:
                docs.append((file, doc))
    return docs


def render_to(config: Config, out_dir: Path, plan: RenderPlan, *,
              validate: bool = True) -> RenderResult:
    files = render_manifests(config, plan)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out_dir, prefix=f".{K8S_DIR}."))
    try:
        for file, text in files.items():
            (work / file).write_text(text, "utf-8")
        version = str(config.section("deploy")["kubernetes"]["kubernetes_version"])
        misconfigs: list[Misconfig] = []
        if validate:
            version, problems = validate_schemas(_parse(files), version)
            if problems:
                first = problems[0]
                raise ConfigError(f"rendered {first.file} ({first.resource}) fails the "
                                  f"Kubernetes {version} schema: {first.message}")
            misconfigs = trivy_config(work)
            blocking = [m for m in misconfigs if m.severity in BLOCKING]
            if blocking:
                listing = ", ".join(f"{m.id} {m.severity.label} in {m.file}" for m in blocking)
                raise BlockedError(f"trivy config: {len(blocking)} HIGH/CRITICAL "
                                   f"misconfiguration(s): {listing}")
        atomic_write_json(work / REPORT, {
            "validated": validate, "kubernetes_version": version,
            "stable": {"version": plan.stable.version, "digest": plan.stable.digest,
                       "image": plan.stable.image},
            "canary": None if plan.canary is None else {
                "version": plan.canary.version, "digest": plan.canary.digest,
                "image": plan.canary.image, "mode": plan.mode, "weight": plan.weight,
                "effective_weight": round(plan.effective_weight, 2)},
            "files": sorted(files),
            "trivy": [m.to_json() for m in misconfigs],
        })
        work.chmod(0o777 & ~umask())   # mkdtemp's 0700 would hide the manifests from others
        replace_path(work, out_dir / K8S_DIR)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    # The monitor's SLOs as alerting rules, beside k8s/ (so `kubectl apply -f k8s/` needs no
    # Prometheus Operator): a rules file and a PrometheusRule, checked by promtool.
    from ci_ml.monitor.alerts import write_alerts

    ctx = _context(config, plan)
    write_alerts(config, out_dir, namespace=ctx["namespace"], name=ctx["name"],
                 validate=validate)
    return RenderResult(plan, out_dir / K8S_DIR, tuple(sorted(files)), version,
                        tuple(misconfigs))
