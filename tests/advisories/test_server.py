"""The loopback OSV API, spoken to over real HTTP."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from ci_ml.advisories.server import OSVServer
from ci_ml.advisories.store import AdvisoryDB

PYPA = Path(__file__).resolve().parents[2] / "fixtures" / "advisories" / "pypa-vulns"


def _post(url: str, body: Any) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def server() -> Any:
    with OSVServer(AdvisoryDB(PYPA)) as srv:
        yield srv


def test_binds_loopback_on_an_ephemeral_port(server: OSVServer) -> None:
    assert server.url.startswith("http://127.0.0.1:")
    assert int(server.url.rsplit(":", 1)[1]) > 0


def test_query_by_name_returns_full_records(server: OSVServer) -> None:
    status, body = _post(server.query_url, {"package": {"name": "requests", "ecosystem": "PyPI"},
                                            "version": "2.19.0"})
    assert status == 200
    assert sorted(v["id"] for v in body["vulns"]) == ["PYSEC-2018-28", "PYSEC-2023-74"]
    assert all("affected" in v and "aliases" in v for v in body["vulns"])


def test_query_by_purl_and_empty_answers(server: OSVServer) -> None:
    status, body = _post(server.query_url, {"package": {"purl": "pkg:pypi/pyyaml@5.3"}})
    assert status == 200 and len(body["vulns"]) == 2
    assert _post(server.query_url, {"package": {"name": "requests", "ecosystem": "PyPI"},
                                    "version": "2.32.3"}) == (200, {})
    assert _post(server.query_url, {"package": {"name": "lodash", "ecosystem": "npm"},
                                    "version": "4.17.4"}) == (200, {})


def test_querybatch(server: OSVServer) -> None:
    status, body = _post(f"{server.url}/v1/querybatch", {"queries": [
        {"package": {"name": "jinja2", "ecosystem": "PyPI"}, "version": "2.10"},
        {"package": {"name": "click", "ecosystem": "PyPI"}, "version": "8.1.7"}]})
    assert status == 200
    assert sorted(v["id"] for v in body["results"][0]["vulns"]) == ["PYSEC-2019-217",
                                                                    "PYSEC-2021-66"]
    assert body["results"][1] == {}


@pytest.mark.parametrize("body", [b"{not json", {"version": "1.0"},
                                  {"package": {"name": "x", "ecosystem": "PyPI"}}])
def test_malformed_queries_get_400(server: OSVServer, body: Any) -> None:
    status, answer = _post(server.query_url, body)
    assert status == 400 and answer["message"]


def test_unknown_endpoint_is_404(server: OSVServer) -> None:
    assert _post(f"{server.url}/v1/vulns", {})[0] == 404


def test_accepted_connections_disable_nagle(server: OSVServer) -> None:
    # A client socket kept open: the server's side of it must have TCP_NODELAY set.
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        body = json.dumps({"package": {"purl": "pkg:pypi/click@8.1.7"}}).encode()
        sock.sendall(b"POST /v1/query HTTP/1.1\r\nHost: x\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    assert server.nodelay_connections >= 1


def test_broken_record_is_reported_to_the_client_and_kept(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "BAD.yaml").write_text("id: [")
    with OSVServer(AdvisoryDB(tmp_path)) as srv:
        status, _ = _post(srv.query_url, {"package": {"purl": "pkg:pypi/pkg@1.0"}})
        assert status == 500
        assert "BAD.yaml" in srv.errors[0].message
