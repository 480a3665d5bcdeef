"""One image reference: the manifests `deploy render` writes name the image `deploy build` built."""

from __future__ import annotations

import json
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from ci_ml.deploy.reference import ImageReference, built_reference, reference_for
from tests.gate.trained import cli, edit_config


def _container_image(k8s: Path, file: str = "deployment.yaml") -> str:
    (doc,) = [d for d in yaml.safe_load_all((k8s / file).read_text()) if d]
    return str(doc["spec"]["template"]["spec"]["containers"][0]["image"])


def test_reference_is_name_and_model_tag_unless_configured() -> None:
    digest = "sha256:" + "ab" * 32
    assert str(reference_for({}, "Digits", digest)) == "ci-ml/digits:" + "ab" * 6
    assert str(reference_for({"image": "reg.example/x", "tag": "v1"}, "p", digest)) == "reg.example/x:v1"
    assert str(ImageReference("n", "t", "sha256:" + "cd" * 32)) == "n:t@sha256:" + "cd" * 32


@pytest.mark.parametrize("record", [
    {"model_digest": "sha256:other", "name": "ci-ml/p", "tag": "abababababab"},   # another model
    {"model_digest": "MODEL", "name": "evil/p", "tag": "abababababab"},            # another name
    {"model_digest": "MODEL", "name": "ci-ml/p", "tag": "latest"},                 # another tag
])
def test_a_build_record_of_another_image_lends_no_digest(tmp_path: Path,
                                                         record: dict[str, str]) -> None:
    digest = "sha256:" + "ab" * 32
    record = {**record, "model_digest": digest if record["model_digest"] == "MODEL"
              else record["model_digest"], "repo_digest": "sha256:" + "ee" * 32}
    (tmp_path / "image.json").write_text(json.dumps(record))
    expected = reference_for({}, "p", digest)
    assert built_reference(tmp_path, expected, digest) == expected


@pytest.mark.docker
@pytest.mark.slow
def test_render_names_the_image_build_pushed_pinned_by_digest(
        docker_client: Any, oci_registry: str, project: Path) -> None:
    """The deploy job's order: promote, deploy build (pushes), deploy render, one --out."""
    name = f"{oci_registry}/ci-ml/digits-{uuid.uuid4().hex[:8]}"
    edit_config(project, lambda d: d.__setitem__("deploy", {"image": name, "push": True}))
    assert cli(project, "promote", "--stage", "staging").code == 0
    built = cli(project, "deploy", "build")
    assert built.code == 0, built.output
    record = json.loads((project / "out" / "image.json").read_text())
    rendered = cli(project, "deploy", "render")
    assert rendered.code == 0, rendered.output
    image = _container_image(project / "out" / "k8s")
    assert image == record["reference"] == f"{record['image']}@{record['repo_digest']}"
    # That digest is the manifest the registry holds, and the engine's image under that tag.
    tag = record["tag"]
    index = json.loads(cli(project, "registry", "list", "--json").stdout)
    assert tag == index["versions"][0]["digest"].removeprefix("sha256:")[:12]
    repo = name.split("/", 1)[1]
    request = urllib.request.Request(
        f"http://{oci_registry}/v2/{repo}/manifests/{tag}", method="HEAD",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json, "
                           "application/vnd.oci.image.manifest.v1+json"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.headers["Docker-Content-Digest"] == record["repo_digest"]
    assert docker_client.images.get(record["image"]).id == record["id"]
    docker_client.images.remove(record["image"], force=True)
