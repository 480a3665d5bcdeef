"""ONNX export: dynamic batch axis, external data counted, full checker, parity, latency."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from ci_ml.errors import InputError, UsageError
from ci_ml.model.bench import measure_latency
from ci_ml.model.export import check_parity, export_onnx, onnx_files, run_onnx
from ci_ml.model.zoo import ModelSpec, build_model

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def cnn() -> nn.Module:
    torch.manual_seed(0)
    model = build_model(ModelSpec("cnn", SHAPE, 10))
    # Non-trivial BatchNorm statistics, so that folding BN into the conv is exercised.
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(64, *SHAPE))
    return model.eval()


def _x(n: int) -> np.ndarray:
    return np.random.default_rng(1).random((n, *SHAPE), dtype=np.float32)


def test_export_has_dynamic_batch_and_folds_batchnorm(cnn: nn.Module, tmp_path: Path) -> None:
    res = export_onnx(cnn, SHAPE, tmp_path / "m.onnx")
    assert res.files == (tmp_path / "m.onnx",)
    assert res.bytes_total == (tmp_path / "m.onnx").stat().st_size
    assert "BatchNormalization" not in res.op_counts  # folded into the convolutions
    assert res.op_counts["Conv"] == 3
    dim0 = onnx.load(str(res.path)).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param  # symbolic, not frozen at the example's batch size
    for n in (1, 7, 300):
        assert run_onnx(res.path, _x(n)).shape == (n, 10)


def test_external_data_files_are_counted(cnn: nn.Module, tmp_path: Path) -> None:
    res = export_onnx(cnn, SHAPE, tmp_path / "ext.onnx", external_data=True)
    assert len(res.files) == 2 and res.files[1].name == "ext.onnx.data"
    assert onnx_files(res.path) == res.files
    assert res.bytes_total == sum(f.stat().st_size for f in res.files)
    # The weights live in the data file: the .onnx file alone is a small fraction.
    assert res.files[0].stat().st_size < res.bytes_total / 4
    parity = check_parity(cnn, res.path, _x(50))
    assert parity.ok


def test_parity_on_many_inputs(cnn: nn.Module, tmp_path: Path) -> None:
    res = export_onnx(cnn, SHAPE, tmp_path / "m.onnx")
    parity = check_parity(cnn, res.path, _x(1500))  # two ORT calls: 1024 + 476 rows
    assert parity.n == 1500
    assert parity.max_abs_diff <= 1e-4
    assert parity.argmax_agreement == 1.0
    assert parity.ok and parity.to_json()["ok"] is True


def test_parity_detects_a_different_model(cnn: nn.Module, tmp_path: Path) -> None:
    res = export_onnx(cnn, SHAPE, tmp_path / "m.onnx")
    other = build_model(ModelSpec("cnn", SHAPE, 10)).eval()
    assert not check_parity(other, res.path, _x(100)).ok


class _DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x).mean((2, 3))
        if h.sum() > 0:  # control flow on data: torch.export cannot capture it
            return self.fc(h)
        return -self.fc(h)


def test_unexportable_model_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot export the model to ONNX") as info:
        export_onnx(_DataDependent(), SHAPE, tmp_path / "bad.onnx")
    assert "\n" not in str(info.value) and "\x1b" not in str(info.value)


def test_measure_latency_interleaves_models(cnn: nn.Module, tmp_path: Path) -> None:
    a = export_onnx(cnn, SHAPE, tmp_path / "a.onnx").path
    small = build_model(ModelSpec("cnn", SHAPE, 10, {"channels": [8, 8, 8]}))
    b = export_onnx(small, SHAPE, tmp_path / "b.onnx").path
    rep = measure_latency([a, b], (1, 32), rounds=3, round_time_s=0.005)
    assert rep.threads == 1 and rep.rounds == 3
    for p in (a, b):
        for batch in (1, 32):
            st = rep.of(p)[batch]
            assert len(st.round_medians_s) == 3 and st.median_s > 0
            assert st.calls_per_round >= 5
            assert 0 < st.cpu_median_s <= st.median_s * 1.5  # ORT computes on this thread
    # 8 channels everywhere is far cheaper than 32/64/128 at batch 32.
    assert rep.speedup(a, b, 32) > 1.5
    with pytest.raises(UsageError):
        measure_latency([], (1,))
