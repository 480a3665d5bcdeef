"""`ci-ml deploy build`: the context and Dockerfile, then (marked docker) the real image, run in a
container and scanned by the built-in DAST engine."""

from __future__ import annotations

import importlib.metadata
import json
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_cli
from tests.serve.factory import make_model


def _with_model(project: Path, extra: str = "") -> Path:
    make_model(project / "exported")
    cfg = project / "ci-ml.yaml"
    cfg.write_text(cfg.read_text() + "\nserve:\n  model: exported/model.onnx\n  log:\n"
                   "    path: logs/requests.jsonl\n" + extra)
    return cfg


def _imports(root: Path) -> set[str]:
    """Every module the tree imports, at the top or inside functions (run time, possibly);
    only ``if TYPE_CHECKING:`` blocks are left out: they never run."""
    import ast

    def runtime_nodes(tree: ast.AST) -> list[ast.AST]:
        skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
                   for child in node.body for n in ast.walk(child)}
        return [n for n in ast.walk(tree) if id(n) not in skipped]

    found: set[str] = set()
    for path in root.rglob("*.py"):
        for node in runtime_nodes(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
    return found


def test_context_holds_only_the_server(example_project: Path, tmp_path: Path) -> None:
    cfg = _with_model(example_project, "deploy:\n  base_image: example/base:1\n  uid: 12345\n")
    out = tmp_path / "out"
    res = run_cli("deploy", "build", "--config", cfg, "--out", out, "--context-only")
    assert res.code == 0, res.stderr
    ctx = out / "image"
    dockerfile = (ctx / "Dockerfile").read_text()
    assert dockerfile.splitlines()[6] == "FROM example/base:1"
    assert "USER 12345:12345" in dockerfile and "HEALTHCHECK" in dockerfile
    assert '"--model", "/srv/model/model.onnx"' in dockerfile
    reqs = (ctx / "requirements.txt").read_text().split()
    assert reqs == [f"{name}=={importlib.metadata.version(name)}"
                    for name in ("onnxruntime", "numpy", "uvicorn", "httptools",
                                 "prometheus-client", "orjson", "uvloop")]
    rootfs = ctx / "rootfs"
    code = sorted(p.relative_to(rootfs).as_posix() for p in rootfs.rglob("*.py"))
    assert all(p.startswith("opt/ci-ml/app/ci_ml/") for p in code)
    assert {"opt/ci-ml/app/ci_ml/__init__.py", "opt/ci-ml/app/ci_ml/errors.py",
            "opt/ci-ml/app/ci_ml/serve/server.py",
            "opt/ci-ml/app/ci_ml/serve/decoders/tensor.py"} <= set(code)
    imported = _imports(rootfs / "opt" / "ci-ml" / "app")
    assert not {m.split(".")[0] for m in imported} & {"torch", "yaml", "jsonschema"}
    for mod in (m for m in imported if m.startswith("ci_ml")):   # every import resolves inside
        rel = Path(*mod.split("."))
        app = rootfs / "opt" / "ci-ml" / "app"
        assert (app / rel).with_suffix(".py").is_file() or (app / rel / "__init__.py").is_file()
    assert sorted(p.name for p in (rootfs / "srv" / "model").iterdir()) == ["model.json",
                                                                           "model.onnx"]
    settings = json.loads((rootfs / "srv" / "serve.json").read_text())
    assert settings["host"] == "0.0.0.0" and settings["port"] == 8080
    assert settings["log"]["path"] == "/var/lib/ci-ml/log/requests.jsonl"


@pytest.mark.parametrize("extra, args, code, message", [
    ("", ["--model", "nope.onnx"], 2, "ONNX model not found"),
    ("deploy:\n  tag: 'bad tag'\n", [], 2, "deploy.tag"),
    ("deploy:\n  user: root\n  uid: 0\n", [], 2, "deploy.uid: must be >= 1000"),
])
def test_bad_input_exits_2(example_project: Path, tmp_path: Path, extra: str, args: list[str],
                           code: int, message: str) -> None:
    cfg = _with_model(example_project, extra)
    res = run_cli("deploy", "build", "--config", cfg, "--out", tmp_path / "out",
                  "--context-only", *args)
    assert res.code == code and message in res.stderr
    assert res.stderr.startswith("error: ") and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "image").exists()


def test_no_docker_engine_exits_3(example_project: Path, tmp_path: Path) -> None:
    cfg = _with_model(example_project)
    res = run_cli("deploy", "build", "--config", cfg, "--out", tmp_path / "out",
                  env={"DOCKER_HOST": f"unix://{tmp_path}/no-such.sock"})
    assert res.code == 3 and "no Docker engine answers" in res.stderr


@pytest.mark.docker
def test_missing_base_image_exits_3(docker_client: Any, example_project: Path,
                                    tmp_path: Path) -> None:
    cfg = _with_model(example_project, "deploy:\n  base_image: ci-ml/no-such-base:0\n")
    res = run_cli("deploy", "build", "--config", cfg, "--out", tmp_path / "out")
    assert res.code == 3 and "base image ci-ml/no-such-base:0 is not on this Docker engine" \
        in res.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status, json.load(resp)
    except OSError:
        return 0, None


@pytest.mark.docker
@pytest.mark.slow
def test_image_runs_healthy_and_passes_its_dast_scan(docker_client: Any, fast_example: Path,
                                                     tmp_path: Path) -> None:
    out = tmp_path / "out"
    cfg = fast_example / "ci-ml.yaml"
    assert run_cli("prune", "--config", cfg, "--out", out).code == 0
    res = run_cli("deploy", "build", "--config", cfg, "--out", out, timeout=1800)
    assert res.code == 0, res.stderr
    record = json.loads((out / "image.json").read_text())
    image = docker_client.images.get(record["image"])
    config = image.attrs["Config"]
    assert config["User"] == "10001:10001"                  # not root
    assert config["Healthcheck"]["Test"][0] == "CMD"
    port = _free_port()
    container = docker_client.containers.create(
        record["image"], network_mode="host", environment={"CI_ML_SERVE_PORT": port},
        read_only=True, tmpfs={"/var/lib/ci-ml/log": ""})
    url = f"http://127.0.0.1:{port}"
    try:
        container.start()
        deadline = time.monotonic() + 60
        while _get(url + "/health")[0] != 200:
            container.reload()
            assert container.status == "running", container.logs().decode()[-2000:]
            assert time.monotonic() < deadline, "server in the container did not come up"
            time.sleep(0.5)
        scan_out = tmp_path / "scan"
        res = run_cli("scan", "dast", "--config", cfg, "--out", scan_out, "--target", url)
        assert res.code == 0, res.stderr
        doc = json.loads((scan_out / "scans" / "dast.json").read_text())
        assert doc["status"] == "ok"
        serious = [f for f in doc["findings"] if f["severity"] in ("medium", "high", "critical")]
        assert serious == []
        assert _get(url + "/health") == (200, {"status": "ok"})   # still healthy afterwards
        deadline = time.monotonic() + 90
        while True:                                     # Docker's own HEALTHCHECK agrees
            container.reload()
            health = container.attrs["State"].get("Health", {}).get("Status")
            if health == "healthy":
                break
            assert health in ("starting", None) and time.monotonic() < deadline, health
            time.sleep(2)
        container.stop(timeout=20)                      # SIGTERM: drains and exits 0
        container.reload()
        assert container.attrs["State"]["ExitCode"] == 0
        assert "Traceback" not in container.logs().decode()
    finally:
        container.remove(force=True)
