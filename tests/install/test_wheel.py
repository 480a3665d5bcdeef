"""The built wheel, installed in fresh virtual environments outside the checkout, runs the
example end to end, generates both pipelines and renders the deployment; its core install
(no torch) gates from the step cache and names the extra any other command needs."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import EXAMPLE, FIXTURES, REPO
from tests.install.conftest import Venv

# One wheel, one full venv and one example run serve every test here: keep them on one worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("wheel")]


@dataclass(frozen=True)
class Run:
    project: Path
    out: Path
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def example_run(full_venv: Venv, tmp_path_factory: pytest.TempPathFactory) -> Run:
    work = tmp_path_factory.mktemp("wheel-example")
    project = work / "example"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns(
        ".ci-ml-cache", "__pycache__", ".github", ".gitlab", ".gitlab-ci.yml"))
    (work / "advisories").symlink_to(FIXTURES / "advisories", target_is_directory=True)
    # Promotions are signed: the project's key pair, made by the wheel as `ci-ml init` would.
    keygen = full_venv.run("registry", "keygen", "keys/signing.pem", cwd=project)
    assert keygen.returncode == 0, keygen.stderr
    cfg = yaml.safe_load((project / "ci-ml.yaml").read_text())
    cfg["registry"] = {**cfg.get("registry", {}), "signing_key": "keys/signing.pem",
                       "verify_key": "keys/signing.pem.pub"}
    (project / "ci-ml.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = full_venv.run("run", "--config", "example/ci-ml.yaml", "--out", "out", cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    return Run(project, work / "out", proc.stdout, proc.stderr)


def test_the_wheel_holds_its_templates_and_runs_outside_the_checkout(full_venv: Venv,
                                                                     tmp_path: Path) -> None:
    proc = full_venv.run("--version", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "ci-ml, version 0.1.0"
    where = subprocess_python(full_venv, "import ci_ml, ci_ml.resources as r; "
                              "print(ci_ml.__file__); print(r.template_dir('k8s').is_dir())")
    location, has_templates = where.splitlines()
    assert not Path(location).is_relative_to(REPO) and has_templates == "True"


def subprocess_python(venv: Venv, code: str) -> str:
    import subprocess

    proc = subprocess.run([str(venv.bin / "python"), "-c", code], env=venv.env(), cwd="/",
                          capture_output=True, text=True, timeout=120, check=True)
    return proc.stdout


def test_the_example_runs_end_to_end(example_run: Run) -> None:
    out = example_run.out
    assert "decision: PASS for staging" in example_run.stdout
    for name in ("data-report.json", "metrics.json", "prune-report.json", "decision.json",
                 "summary.md", "report.html", "junit.xml", "manifest.json", "candidate/model.onnx",
                 "candidate/metrics.json", "plots/training-curve.png"):
        assert (out / name).is_file(), name
    html = (out / "report.html").read_text()
    for section in ("data", "training", "pruning", "metrics", "findings", "rules"):
        assert f'<section id="{section}">' in html
    # Every file a report names is under --out; the candidate is named as such.
    prune = json.loads((out / "prune-report.json").read_text())
    named = [prune["output_onnx"], *prune["candidate"]["files"]]
    named += [q["file"] for q in prune["quantization"] if q["file"]]
    for side in ("base", "candidate"):
        path = prune["comparison"][side]["onnx"]["path"]
        named += [path] if path else []
    assert named and all((out / name).is_file() for name in named), named
    assert json.loads((out / "candidate/metrics.json").read_text())["model"] == "candidate"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["ci_ml_version"] == "0.1.0"
    run = json.loads((out / "train-run.json").read_text())
    assert run["environment"]["packages"]["ci-ml"] == "0.1.0"
    assert run["environment"]["torch"] == run["environment"]["packages"]["torch"]


@pytest.mark.parametrize("target", ["github", "gitlab"])
def test_generate_from_the_wheel(full_venv: Venv, example_run: Run, target: str) -> None:
    proc = full_venv.run("generate", target, "--config", example_run.project / "ci-ml.yaml",
                         cwd=example_run.project)
    assert proc.returncode == 0, proc.stderr
    check = full_venv.run("generate", target, "--config", example_run.project / "ci-ml.yaml",
                          "--check", cwd=example_run.project)
    assert check.returncode == 0, check.stdout + check.stderr
    # The same bytes as the checkout's golden files: the templates are the package's.
    golden = EXAMPLE / (".github/workflows/ci-ml.yml" if target == "github" else ".gitlab-ci.yml")
    written = example_run.project / golden.relative_to(EXAMPLE)
    assert written.read_text() == golden.read_text()


def test_deploy_render_from_the_wheel(full_venv: Venv, example_run: Run) -> None:
    cfg = example_run.project / "ci-ml.yaml"
    promoted = full_venv.run("promote", "--stage", "staging", "--config", cfg, "--out",
                             example_run.out, cwd=example_run.project)
    assert promoted.returncode == 0, promoted.stderr
    proc = full_venv.run("deploy", "render", "--config", cfg, "--out", example_run.out,
                         cwd=example_run.project)
    assert proc.returncode == 0, proc.stderr
    assert "first deployment" in proc.stderr
    (deployment,) = [d for d in yaml.safe_load_all(
        (example_run.out / "k8s" / "deployment.yaml").read_text()) if d]
    digest = json.loads((example_run.out / "promotion.json").read_text())["digest"]
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"ci-ml/digits:{digest.removeprefix('sha256:')[:12]}"
    assert not (example_run.out / "k8s" / "deployment-canary.yaml").exists()


def test_the_core_install_gates_from_the_cache_and_names_missing_extras(
        core_venv: Venv, example_run: Run) -> None:
    """What a gate job has: no torch. Train and prune come from the cache made with torch."""
    assert "torch" not in subprocess_python(core_venv, "import sys, ci_ml.cli; "
                                                       "print(sorted(sys.modules))")
    cfg = example_run.project / "ci-ml.yaml"
    gate = core_venv.run("gate", "--config", cfg, "--out", example_run.out,
                         cwd=example_run.project)
    assert gate.returncode == 0, gate.stderr
    # Train and prune (torch's) come from the cache; the gate itself runs again only if the
    # registry changed since the full run (a test above promotes).
    assert "train cached" in gate.stderr and "prune cached" in gate.stderr
    assert re.search(r"^steps: [01] ran, \d+ from cache", gate.stdout, re.M), gate.stdout
    production = core_venv.run("gate", "--stage", "production", "--config", cfg, "--out",
                               example_run.out, cwd=example_run.project)
    assert production.returncode in (0, 1), production.stderr
    assert "steps: 1 ran," in production.stdout and "train cached" in production.stderr
    assert '<section id="pruning">' in (example_run.out / "report.html").read_text()
    # A forced training runs the data check too: one line names both extras.
    for args, extra in ((["train", "--force"], "data,train"), (["serve"], "serve"),
                        (["deploy", "render"], "deploy"), (["data", "infer"], "data")):
        proc = core_venv.run(*args, "--config", cfg, "--out", example_run.out / "core",
                             cwd=example_run.project)
        assert proc.returncode == 2, (args, proc.stderr)
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and f"pip install 'ci-ml[{extra}]'" in errors[0], proc.stderr
        assert "Traceback" not in proc.stderr
