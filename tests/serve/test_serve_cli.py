"""`ci-ml serve` and `python -m ci_ml.serve` as a user runs them: start, answer, SIGTERM, exit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, run_cli
from tests.serve.factory import expected, make_model


def _start(args: list[str], cwd: Path) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "CI": "true"}
    proc = subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "serving" not in line:
        proc.kill()
        err = proc.stderr.read() if proc.stderr else ""
        raise AssertionError(f"server did not start: {line!r} {err}")
    return proc, line.split(" on ")[1].split()[0]


def test_serve_answers_then_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    model = make_model(tmp_path / "m")
    proc, url = _start(["-m", "ci_ml", "serve", "--model", str(model), "--port", "0",
                        "--workers", "1"], tmp_path)
    try:
        with urllib.request.urlopen(url + "/health", timeout=5) as resp:
            assert json.load(resp) == {"status": "ok"}
        req = urllib.request.Request(url + "/predict", data=b'{"inputs": [[1, 2, 3, 4]]}',
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert json.load(resp)["predictions"] == expected(np.array([[1.0, 2, 3, 4]]))[0]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert "stopped after 1 prediction request(s)" in err
    assert "Traceback" not in err


def test_container_entry_point_reads_settings_file(tmp_path: Path) -> None:
    model = make_model(tmp_path / "m")
    settings = tmp_path / "serve.json"
    settings.write_text(json.dumps({"host": "127.0.0.1", "port": 0,
                                    "limits": {"max_batch": 1, "max_body_bytes": 2048}}))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "ci_ml.serve", "--model", str(model),
                             "--settings", str(settings)], env=env, text=True,
                            stderr=subprocess.PIPE)
    assert proc.stderr is not None
    try:
        line = proc.stderr.readline()
        url = line.strip().split(" on ")[-1]
        req = urllib.request.Request(url + "/predict", data=b'{"inputs": [[1,2,3,4],[1,2,3,4]]}',
                                     headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=5)
        assert err.value.code == 413                      # max_batch 1 from the settings file
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
    assert proc.returncode == 0


def test_server_modules_do_not_import_torch(tmp_path: Path) -> None:
    # click comes with uvicorn; the config loader's yaml and jsonschema must not.
    code = ("import sys, ci_ml.serve.server, ci_ml.serve.__main__; "
            "bad = [m for m in ('torch', 'yaml', 'jsonschema', 'ci_ml.config') "
            "if m in sys.modules]; "
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("setup, args, message", [
    ("none", ["serve", "--model", "missing.onnx"], "ONNX model not found"),
    ("no-card", ["serve", "--model", "m/model.onnx"], "model.json"),
    ("none", ["serve"], "no config"),
    ("junk", ["serve", "--model", "m/model.onnx"], "not a loadable ONNX model"),
    ("none", ["serve", "--model", "m", "--port", "70000"], "70000"),
])
def test_bad_input_exits_2_with_one_line(tmp_path: Path, setup: str, args: list[str],
                                         message: str) -> None:
    if setup == "no-card":
        make_model(tmp_path / "m", write_card=False)
    if setup == "junk":
        make_model(tmp_path / "m").write_bytes(b"junk")
    result = run_cli(*args, cwd=tmp_path, timeout=60)
    assert result.code == 2
    lines = result.stderr.strip().splitlines()
    assert lines and message in result.stderr
    assert any(line.startswith(("error:", "Error:")) for line in lines)
    assert "Traceback" not in result.stderr


def test_port_in_use_is_a_usage_error(tmp_path: Path) -> None:
    import socket

    model = make_model(tmp_path / "m")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("serve", "--model", model, "--port", port, cwd=tmp_path, timeout=60)
    assert result.code == 2
    assert result.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}")
