"""The model-file scanner on real files: pickles, torch archives, safetensors, ONNX."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from safetensors.numpy import save_file

from ci_ml.scan.interface import ScanRequest, Severity
from ci_ml.scan.model_files import ModelFileScanner

PLANTED = Path(__file__).resolve().parents[2] / "fixtures" / "planted" / "models"


def _scan(tmp_path: Path, *targets: Path) -> dict[str, list[tuple[str, str]]]:
    result = ModelFileScanner().scan(ScanRequest(root=tmp_path, targets=targets or (tmp_path,)))
    out: dict[str, list[tuple[str, str]]] = {}
    for f in result.findings:
        out.setdefault(str(f.location.path), []).append((f.id, f.severity.label))
    return out


def _marker_pickle(marker: Path) -> bytes:
    """A pickle whose load would create ``marker`` via os.system: it must never exist."""
    command = f"touch {marker}".encode()
    return (b"\x80\x02cos\nsystem\nX" + len(command).to_bytes(4, "little") + command + b"\x85R.")


def test_planted_pickle_is_critical(tmp_path: Path) -> None:
    found = _scan(PLANTED, PLANTED)
    assert sorted(found["malicious.pkl"]) == [("CIML-M001", "low"), ("CIML-M002", "critical")]


def test_nothing_is_ever_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for name in ("a.pkl", "b.pt", "renamed.dat", "c.joblib"):
        (tmp_path / name).write_bytes(_marker_pickle(marker))
    found = _scan(tmp_path)
    assert not marker.exists()
    for name in ("a.pkl", "b.pt", "renamed.dat", "c.joblib"):
        assert ("CIML-M002", "critical") in found[name]


def test_malicious_data_pkl_inside_a_torch_zip(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buffer)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as src, \
            zipfile.ZipFile(tmp_path / "model.pth", "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("data.pkl"):
                data = b"\x80\x02cposix\nsystem\nX\x02\x00\x00\x00id\x85R."
            dst.writestr(info, data)
    found = _scan(tmp_path)["model.pth"]
    assert ("CIML-M002", "critical") in found


def test_plain_torch_checkpoint_is_only_low(tmp_path: Path) -> None:
    torch.save({"w": torch.zeros(2, 3)}, tmp_path / "ok.pt")
    torch.save({"w": torch.zeros(2)}, tmp_path / "legacy.bin", _use_new_zipfile_serialization=False)
    found = _scan(tmp_path)
    assert found == {"ok.pt": [("CIML-M001", "low")], "legacy.bin": [("CIML-M001", "low")]}


def test_custom_class_and_gadget_imports(tmp_path: Path) -> None:
    (tmp_path / "custom.pkl").write_bytes(
        b"\x80\x02cmylib.models\nNet\n)\x81" + b"coperator\nattrgetter\nX\x01\x00\x00\x00a\x85R"
        + b"\x86.")
    found = sorted(_scan(tmp_path)["custom.pkl"])
    assert found == [("CIML-M001", "low"), ("CIML-M003", "high"), ("CIML-M004", "medium")]


def test_truncated_pickle_is_unverifiable(tmp_path: Path) -> None:
    (tmp_path / "cut.pkl").write_bytes(b"\x80\x02]q\x00(K\x01K\x02")
    assert ("CIML-M005", "high") in _scan(tmp_path)["cut.pkl"]


def test_joblib_with_arrays_is_read_to_the_end(tmp_path: Path) -> None:
    import joblib

    joblib.dump({"w": np.arange(4.0)}, tmp_path / "m.joblib")
    joblib.dump({"w": np.arange(4.0)}, tmp_path / "z.joblib", compress=3)
    found = _scan(tmp_path)
    for name in ("m.joblib", "z.joblib"):
        assert sorted(found[name]) == [("CIML-M001", "low")]


def test_raw_bin_blob_is_not_a_pickle(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(np.arange(16, dtype=np.float32).tobytes())
    assert _scan(tmp_path) == {}


def test_good_safetensors_pass(tmp_path: Path) -> None:
    save_file({"w": np.ones((3, 2), dtype=np.float32), "b": np.zeros(2, dtype=np.int64)},
              str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    assert _scan(tmp_path) == {}


def _safetensors(header: dict[str, object], data: bytes, declared: int | None = None) -> bytes:
    raw = json.dumps(header).encode()
    return (declared if declared is not None else len(raw)).to_bytes(8, "little") + raw + data


@pytest.mark.parametrize(("blob", "problem"), [
    (b"\x01\x02", "shorter than"),
    (_safetensors({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8,
                  declared=10**7), "past the end"),
    (_safetensors({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 64]}}, b"\0" * 8),
     "outside"),
    (_safetensors({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8),
     "expected 12"),
    (_safetensors({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                   "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8),
     "overlaps"),
    (_safetensors({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 8),
     "unreferenced"),
    (_safetensors({"w": {"dtype": "Q4", "shape": [1], "data_offsets": [0, 1]}}, b"\0"),
     "unknown dtype"),
    (b"\x04\x00\x00\x00\x00\x00\x00\x00[1]\x00", "not UTF-8 JSON"),
])
def test_malformed_safetensors(tmp_path: Path, blob: bytes, problem: str) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(blob)
    result = ModelFileScanner().scan(ScanRequest(root=tmp_path, targets=(tmp_path,)))
    (finding,) = result.findings
    assert finding.id == "CIML-M010" and finding.severity is Severity.MEDIUM
    assert problem in finding.title


def _onnx_with_external(location: str, directory: Path) -> Path:
    weight = helper.make_tensor("w", TensorProto.FLOAT, [2], [1.0, 2.0])
    weight.data_location = TensorProto.EXTERNAL
    del weight.float_data[:]
    for key, value in (("location", location), ("offset", "0"), ("length", "8")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
                              initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = directory / "model.onnx"
    onnx.save(model, str(path))
    return path


def test_onnx_external_data_traversal_is_high(tmp_path: Path) -> None:
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    _onnx_with_external("../../../../etc/passwd", model_dir)
    found = _scan(tmp_path)
    assert found == {"m/model.onnx": [("CIML-M021", "high")]}


def test_onnx_external_data_inside_the_directory_passes(tmp_path: Path) -> None:
    (tmp_path / "model.onnx.data").write_bytes(np.array([1, 2], dtype=np.float32).tobytes())
    _onnx_with_external("model.onnx.data", tmp_path)
    assert _scan(tmp_path) == {}


def test_exported_onnx_passes_and_garbage_onnx_is_invalid(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    torch.onnx.export(model, (torch.zeros(1, 3),), str(tmp_path / "good.onnx"), dynamo=False)
    (tmp_path / "bad.onnx").write_bytes(b"this is not protobuf \xff\xff")
    found = _scan(tmp_path)
    assert "good.onnx" not in found
    assert found["bad.onnx"] == [("CIML-M020", "medium")]


def test_fingerprints_are_stable_and_distinct(tmp_path: Path) -> None:
    (tmp_path / "a.pkl").write_bytes(b"\x80\x02cos\nsystem\n)Rcsubprocess\ncall\n)R\x86.")
    first = ModelFileScanner().scan(ScanRequest(root=tmp_path, targets=(tmp_path,)))
    second = ModelFileScanner().scan(ScanRequest(root=tmp_path, targets=(tmp_path,)))
    prints = [f.fingerprint for f in first.findings]
    assert len(set(prints)) == len(prints) == 3
    assert prints == [f.fingerprint for f in second.findings]


def test_safe_pickle_protocols_only_flag_the_format(tmp_path: Path) -> None:
    (tmp_path / "data.pkl").write_bytes(pickle.dumps({"x": [1, 2, 3]}, protocol=0))
    assert _scan(tmp_path) == {"data.pkl": [("CIML-M001", "low")]}


def test_raw_tensor_bytes_that_look_like_zlib_are_not_a_finding(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "model.pth", "w") as archive:
        archive.writestr("archive/data/0", b"\x78\x9c" + np.arange(64, dtype=np.float32).tobytes())
    assert _scan(tmp_path) == {}


def test_what_a_broken_layer_produced_is_still_scanned(tmp_path: Path) -> None:
    import zlib

    marker = tmp_path / "pwned"
    data = zlib.compress(_marker_pickle(marker) + b"\x00" * 4096)
    (tmp_path / "model.z").write_bytes(data[: len(data) // 2])
    found = _scan(tmp_path)["model.z"]
    assert ("CIML-M002", "critical") in found and ("CIML-M030", "high") in found
    assert not marker.exists()
