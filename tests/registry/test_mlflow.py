"""The MLflow backend against a real tracking server on 127.0.0.1: the conformance suite,
plus what only MLflow has (model versions, aliases, artifacts and tags of the version)."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.registry.conformance import Conformance, Harness, Tamper, model_dir, new_key, promotion
from tests.registry.servers import Mlflow

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("mlflow")]


def open_mlflow(server: Mlflow, model: str):  # type: ignore[no-untyped-def]
    from ci_ml.registry.mlflow import MlflowBackend

    # Twenty writers queue on one lock; on a loaded machine that takes minutes.
    return MlflowBackend(server.uri, model, lock_timeout_s=600)


class MlflowTamper(Tamper):
    """Edits through MLflow's API: artifacts of the versions' runs and their tags."""

    def __init__(self, server: Mlflow, model: str) -> None:
        self.b = open_mlflow(server, model)
        self.client = self.b.client
        self.model = model

    def _slots(self) -> list[tuple[int, object]]:
        found = []
        for mv in self.b._versions():
            for key in mv.tags:
                if key.startswith("ci_ml.event."):
                    found.append((int(key.rsplit(".", 1)[1]), mv))
        return sorted(found, key=lambda s: s[0])

    def events(self) -> list[bytes]:
        return [e.envelope for e in self.b.read_events()]

    def _upload(self, mv: object, seq: int, envelope: bytes) -> None:
        folder = Path(tempfile.mkdtemp())
        (folder / f"{seq:06d}.dsse.json").write_bytes(envelope)
        self.client.log_artifact(mv.run_id, str(folder / f"{seq:06d}.dsse.json"),  # type: ignore
                                 "attestations")
        self.client.set_model_version_tag(self.model, mv.version,  # type: ignore[attr-defined]
                                          f"ci_ml.event.{seq:06d}", envelope.decode())

    def replace(self, seq: int, envelope: bytes) -> None:
        mv = dict(self._slots())[seq]
        self._upload(mv, seq, envelope)

    def remove(self, seq: int) -> None:
        mv = dict(self._slots())[seq]
        self.client.delete_model_version_tag(self.model, mv.version,  # type: ignore[attr-defined]
                                             f"ci_ml.event.{seq:06d}")

    def append(self, envelope: bytes) -> None:
        slots = self._slots()
        self._upload(slots[-1][1], slots[-1][0] + 1, envelope)

    def corrupt_blob(self, sha256: str, version: int, name: str) -> None:
        mv = self.b._version_by_number(version)
        path = self.b.fetch(__import__("ci_ml.registry.interface", fromlist=["BlobRef"]
                                       ).BlobRef(sha256, name, version))
        changed = Path(tempfile.mkdtemp()) / name
        changed.write_bytes(path.read_bytes() + b"\0")
        self.client.log_artifact(mv.run_id, str(changed), "model")


class TestMlflowConformance(Conformance):
    @pytest.fixture
    def harness(self, mlflow_server: Mlflow) -> Iterator[Harness]:
        model = f"conformance-{uuid.uuid4().hex[:12]}"
        yield Harness(lambda: open_mlflow(mlflow_server, model),
                      MlflowTamper(mlflow_server, model), new_key())


def test_versions_aliases_artifacts_and_tags(mlflow_server: Mlflow, tmp_path: Path) -> None:
    model = f"layout-{uuid.uuid4().hex[:12]}"
    harness = Harness(lambda: open_mlflow(mlflow_server, model),
                      MlflowTamper(mlflow_server, model), new_key())
    one, two = model_dir(tmp_path / "m1", "1"), model_dir(tmp_path / "m2", "2")
    reg = harness.registry()
    reg.promote(promotion(one, "staging"))
    reg.promote(promotion(one, "production", requires="staging"))
    reg.promote(promotion(two, "staging"))
    client = open_mlflow(mlflow_server, model).client
    versions = {mv.tags["ci_ml.version"]: mv for mv in
                client.search_model_versions(f"name='{model}'")}
    assert set(versions) == {"1", "2"}
    assert client.get_model_version_by_alias(model, "production").version == \
        versions["1"].version
    assert client.get_model_version_by_alias(model, "staging").version == versions["2"].version
    v1 = versions["1"]
    assert {"ci_ml.event.000001", "ci_ml.event.000002"} <= set(v1.tags)
    names = {f.path for f in client.list_artifacts(v1.run_id, "model")}
    assert names == {"model/model.onnx", "model/model.json", "model/model.safetensors"}
    attestations = {f.path for f in client.list_artifacts(v1.run_id, "attestations")}
    assert attestations == {"attestations/000001.dsse.json", "attestations/000002.dsse.json"}
    reg.rollback("staging", "tester", "bad")
    assert client.get_model_version_by_alias(model, "staging").version == versions["1"].version
