"""Real registry servers for the tests, started once per test session on 127.0.0.1.

- The CNCF distribution registry (Debian's ``docker-registry``), filesystem storage,
  deletes enabled (as GitLab's registry has them).
- An MLflow tracking server (``mlflow server``) with a SQLite store and proxied
  artifacts (``--artifacts-destination``), one worker, no job runner.

Both bind a free port (other test runs share the machine) and are stopped at the end
of the session. A missing server binary is a test failure, never a skip: CI installs
them (``.ci/provision``, ``make test``'s dev extras).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

STARTUP_TIMEOUT_S = 600.0   # MLflow imports a lot; on a loaded 2-core machine that is slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited ({proc.returncode}):\n"
                               + log.read_text(errors="replace")[-3000:])
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url}: not up after {timeout:.0f}s:\n"
                       + log.read_text(errors="replace")[-3000:])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@dataclass(frozen=True)
class Distribution:
    host: str          # 127.0.0.1:PORT
    storage: Path      # the registry's filesystem storage (what an attacker on it edits)

    def blob_file(self, digest_hex: str) -> Path:
        return (self.storage / "docker" / "registry" / "v2" / "blobs" / "sha256" /
                digest_hex[:2] / digest_hex / "data")


def start_distribution(root: Path) -> Iterator[Distribution]:
    binary = shutil.which("docker-registry")
    assert binary, "docker-registry is not installed (apt-get install docker-registry)"
    for _ in range(3):
        port = free_port()
        config = root / "config.yml"
        config.write_text(
            "version: 0.1\nlog: {level: error}\n"
            f"storage:\n  filesystem: {{rootdirectory: {root / 'data'}}}\n"
            "  delete: {enabled: true}\n"
            f"http:\n  addr: 127.0.0.1:{port}\n")
        log = root / "registry.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([binary, "serve", str(config)], stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait(f"http://127.0.0.1:{port}/v2/", proc, log, 60)
        except RuntimeError:
            _stop(proc)
            continue              # the port was taken meanwhile: try another
        try:
            yield Distribution(f"127.0.0.1:{port}", root / "data")
        finally:
            _stop(proc)
        return
    raise RuntimeError("could not start docker-registry")


@dataclass(frozen=True)
class Mlflow:
    uri: str


def start_mlflow(root: Path) -> Iterator[Mlflow]:
    binary = Path(sys.executable).parent / "mlflow"
    assert binary.is_file(), "mlflow is not installed (pip install -e '.[dev]')"
    port = free_port()
    log = root / "mlflow.log"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(binary), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
             "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env, cwd=root)
    try:
        _wait(f"http://127.0.0.1:{port}/health", proc, log, STARTUP_TIMEOUT_S)
        yield Mlflow(f"http://127.0.0.1:{port}")
    finally:
        _stop(proc)
