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
