"""ONNX export with a dynamic batch axis, a full checker pass and an ONNX Runtime parity check.

Every model ci-ml measures (the unpruned base and each pruned candidate) goes through
:func:`export_onnx`, so base and pruned models are always exported the same way and a
comparison between them is fair.

torch 2.13's ``torch.onnx.export`` defaults to the ``torch.export``-based (dynamo)
exporter, which may write the weights to a second ``.onnx.data`` file. The size of an
export is therefore the sum of the ``.onnx`` file and every external-data file it
references (:func:`onnx_files`), and both must be shipped together.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from ci_ml.errors import InputError, ToolError

#: max |torch - onnxruntime| on the logits that still counts as the same model.
PARITY_ATOL = 1e-4
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


@dataclass(frozen=True)
class ExportResult:
    """An ONNX file on disk, with what a report needs to know about it."""

    path: Path
    files: tuple[Path, ...]  # the .onnx file first, then external-data files
    bytes_total: int  # all files, external data included
    opset: int
    op_counts: dict[str, int]  # ONNX op type -> number of nodes in the graph

    @property
    def nodes(self) -> int:
        return sum(self.op_counts.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path.name,
            "files": [f.name for f in self.files],
            "bytes": self.bytes_total,
            "opset": self.opset,
            "nodes": self.nodes,
            "op_counts": dict(sorted(self.op_counts.items())),
        }


@dataclass(frozen=True)
class Parity:
    """How closely an ONNX Runtime session reproduces the torch model."""

    n: int
    max_abs_diff: float
    argmax_agreement: float  # fraction in [0, 1]
    atol: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.atol and self.argmax_agreement == 1.0

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "max_abs_diff": self.max_abs_diff,
            "argmax_agreement": self.argmax_agreement,
            "atol": self.atol,
            "ok": self.ok,
        }


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The dynamo exporter prints progress lines, graph dumps and torchvision warnings."""
    loggers = [logging.getLogger(name) for name in ("torch", "onnxscript", "onnx_ir")]
    old_levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, old_levels, strict=True):
            lg.setLevel(level)


def _first_line(exc: BaseException) -> str:
    text = _ANSI.sub("", str(exc)).strip()
    return text.splitlines()[0].strip() if text else ""


def onnx_files(path: Path) -> tuple[Path, ...]:
    """The ONNX file and every external-data file its tensors reference."""
    model = onnx.load(str(path), load_external_data=False)
    extra: dict[str, None] = {}

    def visit(tensor: onnx.TensorProto) -> None:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location":
                    extra[entry.value] = None

    for init in model.graph.initializer:
        visit(init)
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                visit(attr.t)
            for t in attr.tensors:
                visit(t)
    return (path, *(path.parent / name for name in extra))


def export_onnx(
    model: nn.Module,
    input_shape: Sequence[int],
    path: Path,
    *,
    external_data: bool = False,
    opset: int | None = None,
) -> ExportResult:
    """Export ``model`` (eval mode) to ``path`` with a dynamic batch axis, then check it.

    Uses torch's dynamo exporter (the default of torch 2.13; the TorchScript exporter is
    deprecated) with its graph optimizer, which folds BatchNorm into the preceding
    convolution. Raises :class:`InputError` when the model cannot be exported and
    :class:`ToolError` when the exported file fails ``onnx.checker`` (full check) or has
    lost its dynamic batch axis.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (path, path.with_name(path.name + ".data")):
        stale.unlink(missing_ok=True)
    was_training = model.training
    model.eval()
    # Batch 2, not 1: torch.export specializes dimensions of size 0 and 1.
    example = torch.zeros(2, *input_shape)
    try:
        with _quiet_exporter(), torch.no_grad():
            torch.onnx.export(
                model,
                (example,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                dynamo=True,
                external_data=external_data,
                opset_version=opset,
                optimize=True,
            )
    except Exception as exc:  # the exporter raises many unrelated types
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        raise InputError(
            f"cannot export the model to ONNX: {type(cause).__name__}: {_first_line(cause)}"[:400]
        ) from exc
    finally:
        model.train(was_training)

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise ToolError(f"exported ONNX model {path.name} fails onnx.checker: {exc}") from exc
    proto = onnx.load(str(path), load_external_data=False)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    if not dims or not dims[0].dim_param:
        raise ToolError(
            f"exported ONNX model {path.name} has a fixed batch size, not a dynamic one")
    files = onnx_files(path)
    opset_used = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    return ExportResult(
        path=path,
        files=files,
        bytes_total=sum(f.stat().st_size for f in files),
        opset=int(opset_used),
        op_counts=dict(Counter(n.op_type for n in proto.graph.node)),
    )


def make_session(path: Path, *, threads: int = 1) -> Any:
    """An ONNX Runtime CPU session: full graph optimization, ``threads`` intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ToolError(f"onnxruntime cannot load {Path(path).name}: {exc}") from exc


def run_onnx(path_or_session: Path | Any, x: np.ndarray, *, chunk: int = 1024) -> np.ndarray:
    """Outputs of an ONNX model on ``x`` (float32), in chunks of ``chunk`` rows."""
    sess = make_session(path_or_session) if isinstance(path_or_session, Path) else path_or_session
    name = sess.get_inputs()[0].name
    x = np.ascontiguousarray(x, dtype=np.float32)
    outs = [sess.run(None, {name: x[i : i + chunk]})[0] for i in range(0, len(x), chunk)]
    return np.concatenate(outs, axis=0)


@torch.no_grad()
def run_torch(model: nn.Module, x: np.ndarray, *, chunk: int = 1024) -> np.ndarray:
    was_training = model.training
    model.eval()
    try:
        outs = [
            model(torch.from_numpy(np.ascontiguousarray(x[i : i + chunk], dtype=np.float32)))
            .float()
            .numpy()
            for i in range(0, len(x), chunk)
        ]
    finally:
        model.train(was_training)
    return np.concatenate(outs, axis=0)


def check_parity(
    model: nn.Module, onnx_path: Path, x: np.ndarray, *, atol: float = PARITY_ATOL
) -> Parity:
    """Compare torch and ONNX Runtime outputs on all of ``x`` (e.g. the whole test set).

    ONNX Runtime sees up to 1024 rows per call, so the dynamic batch axis is exercised too.
    """
    if len(x) == 0:
        raise InputError("parity check needs at least one example")
    ref = run_torch(model, x)
    got = run_onnx(Path(onnx_path), x)
    if ref.shape != got.shape:
        raise ToolError(f"ONNX output shape {got.shape} differs from torch's {ref.shape}")
    ref2 = ref.reshape(len(ref), -1)
    got2 = got.reshape(len(got), -1)
    return Parity(
        n=len(x),
        max_abs_diff=float(np.max(np.abs(ref2 - got2))),
        argmax_agreement=float(np.mean(ref2.argmax(1) == got2.argmax(1))),
        atol=atol,
    )
