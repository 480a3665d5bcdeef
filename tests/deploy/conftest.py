"""A Docker engine for the image tests: the running one, or Debian's dockerd started as in
ENVIRONMENT.md. Tests marked ``docker`` fail (never skip) when no engine can be had."""

from __future__ import annotations

import shutil
import subprocess
import time
from typing import Any

import pytest

from tests.gate.trained import project, trained  # noqa: F401  (fixtures)


def _ping() -> Any:
    import docker

    try:
        client = docker.from_env()
        client.ping()
        return client
    except Exception:
        return None


@pytest.fixture(scope="session")
def docker_client() -> Any:
    client = _ping()
    if client is None and shutil.which("dockerd"):
        with open("/tmp/dockerd.log", "ab") as log:
            subprocess.Popen(["dockerd", "--storage-driver=vfs", "--iptables=false",
                              "--bridge=none"], stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 60
        while client is None and time.monotonic() < deadline:
            time.sleep(1)
            client = _ping()
    if client is None:
        pytest.fail("no Docker engine: start dockerd (see shared/ENVIRONMENT.md)")
    return client


@pytest.fixture(scope="session")
def oci_registry(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A CNCF distribution registry (Debian's docker-registry) on a free loopback port."""
    import socket
    import urllib.request

    registry = shutil.which("docker-registry")
    if registry is None:
        pytest.fail("docker-registry is not installed (.ci/provision installs it)")
    root = tmp_path_factory.mktemp("oci-registry")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = root / "config.yml"
    config.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
                      f"http:\n  addr: 127.0.0.1:{port}\n")
    with open(root / "registry.log", "wb") as log:
        proc = subprocess.Popen([registry, "serve", str(config)], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url + "/v2/", timeout=2) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"docker-registry did not start: {(root / 'registry.log').read_text()}")
        time.sleep(0.2)
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)
