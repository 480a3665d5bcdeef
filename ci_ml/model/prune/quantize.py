"""Optional int8 dynamic quantization of the pruned model, kept only when measurably faster."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ci_ml.errors import ToolError
from ci_ml.model.export import run_onnx
from ci_ml.model.prune.channels import quiet_logs
from ci_ml.model.prune.measure import Comparison

#: a quantized variant must beat the float model by this factor at every batch size.
QUANT_MIN_GAIN = 1.05
#: a quantized variant must agree with the float model's argmax on this share of inputs.
QUANT_MIN_AGREEMENT = 0.99


@dataclass(frozen=True)
class QuantVariant:
    """An int8 dynamic quantization of the pruned ONNX model, as measured."""

    name: str
    op_types: tuple[str, ...]
    path: Path
    onnx_bytes: int
    latency_us: Mapping[int, float]
    gain: Mapping[int, float]  # float latency / quantized latency
    accuracy: float
    argmax_agreement: float  # with the float ONNX model
    kept: bool
    why: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "op_types": list(self.op_types),
            "file": self.path.name,
            "onnx_bytes": self.onnx_bytes,
            "latency_us": {str(b): round(v, 3) for b, v in sorted(self.latency_us.items())},
            "gain_over_float": {str(b): round(v, 3) for b, v in sorted(self.gain.items())},
            "accuracy": round(self.accuracy, 4),
            "argmax_agreement_with_float": self.argmax_agreement,
            "kept": self.kept,
            "why": self.why,
        }


def quantize(src: Path, dst: Path, op_types: Sequence[str]) -> Path:
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:  # pragma: no cover - onnxruntime is a dependency
        raise ToolError(f"onnxruntime.quantization is unavailable: {exc}") from exc
    dst.unlink(missing_ok=True)
    with quiet_logs():
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8,
                         op_types_to_quantize=list(op_types))
    return dst


def judge_quantization(
    comp: Comparison, specs: Sequence[tuple[str, tuple[str, ...]]], paths: Sequence[Path],
    x: np.ndarray, y: np.ndarray, floor: float, *, forced: bool,
) -> tuple[QuantVariant, ...]:
    if not paths:
        return ()
    float_lat, float_cpu = comp.candidate.latency_us, comp.candidate.cpu_us
    float_out = run_onnx(comp.candidate.onnx.path, x)
    out = []
    for (name, ops), path in zip(specs, paths, strict=True):
        lat = {b: st.median_us for b, st in comp.latency.of(path).items()}
        cpu = {b: st.cpu_median_us for b, st in comp.latency.of(path).items()}
        # Both clocks must agree that it is faster (see ci_ml.model.bench).
        gain = {b: min(float_lat[b] / lat[b], float_cpu[b] / cpu[b]) for b in lat}
        q_out = run_onnx(path, x)
        acc = 100.0 * float(np.mean(q_out.argmax(1) == y))
        agree = float(np.mean(q_out.argmax(1) == float_out.argmax(1)))
        size = sum(f.stat().st_size for f in (path,))
        gains = ", ".join(f"{v:.2f}x at batch {b}" for b, v in gain.items())
        if acc < floor - 1e-9:
            kept, why = False, f"accuracy {acc:.2f}% is below the budget floor {floor:.2f}%"
        elif agree < QUANT_MIN_AGREEMENT:
            kept, why = False, f"agrees with the float model on only {agree:.1%} of inputs"
        elif forced:
            kept, why = True, f"quantize: on ({gains} vs float)"
        elif min(gain.values()) >= QUANT_MIN_GAIN:
            kept, why = True, f"measurably faster: {gains} vs float"
        else:
            kept, why = False, f"not measurably faster: {gains} vs float"
        out.append(QuantVariant(name=name, op_types=ops, path=path, onnx_bytes=size,
                                latency_us=lat, gain=gain, accuracy=acc, argmax_agreement=agree,
                                kept=kept, why=why))
    return tuple(out)
