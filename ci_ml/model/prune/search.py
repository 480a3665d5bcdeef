"""Finding the pruning setting: a fixed ratio, or the ladder of ratios walked towards a target speedup."""

from __future__ import annotations

import copy
import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from ci_ml.errors import InputError
from ci_ml.model.bench import measure_latency
from ci_ml.model.export import export_onnx
from ci_ml.model.prune.channels import ChannelPruner
from ci_ml.model.prune.measure import Data, compare_models, model_accuracy
from ci_ml.model.prune.quantize import QuantVariant, judge_quantization, quantize
from ci_ml.model.prune.result import PruneResult, Trial
from ci_ml.model.prune.settings import REAL_SPEEDUP, PruneSettings
from ci_ml.model.zoo import ModelSpec, count_macs, count_params

Progress = Callable[[str], None]


def check_data(name: str, data: Data, spec: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    try:
        x, y = data
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: expected a pair (x, y) of arrays") from exc
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    y = np.asarray(y).astype(np.int64)
    if x.ndim < 1 or tuple(x.shape[1:]) != tuple(spec.input_shape):
        raise InputError(f"{name}: x has shape {tuple(x.shape)}, expected (N, "
                         f"{', '.join(map(str, spec.input_shape))})")
    if len(x) != len(y) or len(x) == 0:
        raise InputError(f"{name}: {len(x)} inputs but {len(y)} labels")
    if y.min() < 0 or y.max() >= spec.num_classes:
        raise InputError(f"{name}: labels must lie in [0, {spec.num_classes - 1}]")
    return x, y


def fit(model: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float,
         batch_size: int, seed: int) -> None:
    """A small deterministic fine-tuning loop (Adam, cross-entropy)."""
    if epochs <= 0:
        return
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xs), generator=gen)
        for i in range(0, len(xs), batch_size):
            idx = perm[i : i + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xs[idx]), ys[idx])
            loss.backward()
            opt.step()
    model.eval()


def prune_model(
    model: nn.Module,
    spec: ModelSpec,
    train_data: Data,
    test_data: Data,
    settings: PruneSettings,
    progress: Progress | None = None,
    *,
    work_dir: Path | None = None,
) -> PruneResult:
    """Prune ``model`` structurally within the accuracy budget and measure what it gained.

    ``train_data`` is used for fine-tuning, ``test_data`` for accuracy, the budget and the
    parity check; both are ``(x float32 (N, *input_shape), y int64 (N,))``. ONNX files
    (``base.onnx``, ``pruned.onnx``, quantized variants) are written to ``work_dir`` (a
    temporary directory if None, in which case ``onnx_path`` of the result is None).
    The input model is not modified. Raises :class:`InputError` if the model cannot be
    traced; an unmet budget is not an error: ``met_budget`` is False and ``model`` is the
    unpruned model.
    """
    if work_dir is None:
        with tempfile.TemporaryDirectory(prefix="ci-ml-prune-") as tmp:
            result = _prune(model, spec, train_data, test_data, settings, progress, Path(tmp))
            return replace(result, onnx_path=None)
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    return _prune(model, spec, train_data, test_data, settings, progress, work)


def _prune(
    model: nn.Module, spec: ModelSpec, train_data: Data, test_data: Data,
    settings: PruneSettings, progress: Progress | None, work: Path,
) -> PruneResult:
    say: Progress = progress or (lambda _msg: None)
    xtr, ytr = check_data("train data", train_data, spec)
    xte, yte = check_data("test data", test_data, spec)
    s = settings
    shape = spec.input_shape

    base = copy.deepcopy(model).eval()
    work_model = copy.deepcopy(base)
    pruner = ChannelPruner(work_model, shape)  # InputError if untraceable
    base_acc = model_accuracy(base, xte, yte)
    floor = base_acc - s.max_accuracy_drop
    say(f"prune: base model accuracy {base_acc:.2f}%, budget {s.max_accuracy_drop} points "
        f"(>= {floor:.2f}%)")
    base_export = export_onnx(base, shape, work / "base.onnx")
    trial_dir = work / "trials"
    trial_dir.mkdir(exist_ok=True)

    def finetune(step_seed: int) -> None:
        fit(work_model, xtr, ytr, epochs=s.finetune_epochs, lr=s.learning_rate,
             batch_size=s.batch_size, seed=s.seed + step_seed)

    def within(acc: float) -> bool:
        return base_acc - acc <= s.max_accuracy_drop + 1e-9

    trials: list[Trial] = []
    best: tuple[nn.Module, tuple[Any, ...], float, int] | None = None  # model, history, ratio, i
    notes: list[str] = []
    ratio = s.effective_ratio
    if ratio is not None:
        final = pruner.target_widths(ratio, s.round_to)
        for step in range(1, s.steps + 1):
            if step < s.steps:
                widths = tuple(round(o - (o - f) * step / s.steps)
                               for o, f in zip(pruner.original, final, strict=True))
            else:
                widths = final
            pruner.prune_to(widths)
            finetune(step)
            say(f"prune: step {step}/{s.steps} widths {list(pruner.widths)} accuracy "
                f"{model_accuracy(work_model, xte, yte):.2f}%")
        acc = model_accuracy(work_model, xte, yte)
        # Measured even if over budget: the report shows what the ratio would have bought.
        best = (copy.deepcopy(work_model), pruner.history(), ratio, 0)
        trials.append(_trial(pruner, work_model, shape, ratio, acc, base_acc, within(acc), {}))
    else:
        ladder = _ladder(pruner, s)
        if not ladder:
            raise InputError("the model's layers are too narrow to prune with "
                             f"round_to={s.round_to}")
        say(f"prune: searching ratios {', '.join(f'{r:.3f}' for r in ladder)} for "
            f"{s.target_speedup}x at batch {s.speedup_batch}")
        for i, r in enumerate(ladder):
            pruner.prune_to(pruner.target_widths(r, s.round_to))
            finetune(i + 1)
            acc = model_accuracy(work_model, xte, yte)
            ok = within(acc)
            exp = export_onnx(work_model, shape, trial_dir / f"ratio-{r:.3f}.onnx")
            lat = measure_latency([base_export.path, exp.path], s.latency_batches,
                                  input_shape=shape, rounds=max(3, s.latency_rounds // 3))
            speed = {b: lat.speedup(base_export.path, exp.path, b) for b in s.latency_batches}
            cpu_speed = {b: lat.cpu_speedup(base_export.path, exp.path, b)
                         for b in s.latency_batches}
            trials.append(replace(
                _trial(pruner, work_model, shape, r, acc, base_acc, ok, speed,
                       onnx_bytes=exp.bytes_total), cpu_speedup=cpu_speed))
            say(f"prune: ratio {r:.3f} widths {list(pruner.widths)} accuracy {acc:.2f}% "
                "speedup (wall/CPU) " + ", ".join(f"{v:.2f}x/{cpu_speed[b]:.2f}x@{b}"
                                                  for b, v in speed.items())
                + ("" if ok else " (over budget, stopping)"))
            if not ok:
                break
            best = (copy.deepcopy(work_model), pruner.history(), r, len(trials) - 1)

    if best is None:
        t = trials[0]
        reason = (f"even the mildest setting tried (ratio {t.ratio:.3f}) costs "
                  f"{t.accuracy_drop:.2f} accuracy points, more than max_accuracy_drop "
                  f"{s.max_accuracy_drop}; kept the unpruned model. Try more "
                  "prune.finetune_epochs or a larger max_accuracy_drop")
        say(f"prune: {reason}")
        return PruneResult(model=base, met_budget=False, reason=reason, settings=s, spec=spec,
                           history=(), base_accuracy=base_acc, comparison=None,
                           trials=tuple(trials), onnx_path=base_export.path)

    chosen, history, chosen_ratio, chosen_idx = best
    accuracy_ok = trials[chosen_idx].within_budget
    if accuracy_ok:
        trials[chosen_idx] = replace(trials[chosen_idx], chosen=True)

    # Quantized variants of the chosen model join the final, thorough measurement.
    quant_specs: list[tuple[str, tuple[str, ...]]] = []
    if not accuracy_ok:
        pass
    elif s.quantize == "on":
        quant_specs = [("int8-matmul", ("MatMul", "Gemm"))]
    elif s.quantize == "auto":
        quant_specs = [("int8-matmul", ("MatMul", "Gemm")),
                       ("int8-all", ("Conv", "MatMul", "Gemm"))]
    pruned_onnx = work / "pruned.onnx"
    cand_export = export_onnx(chosen, shape, pruned_onnx)
    quant_paths = [quantize(cand_export.path, work / f"pruned.{name}.onnx", ops)
                   for name, ops in quant_specs]
    say("prune: measuring base vs pruned" + (" and int8 variants" if quant_paths else "")
        + f" ({s.latency_rounds} interleaved rounds, 1 thread)")
    comp = compare_models(base, chosen, shape, (xte, yte), work,
                          batch_sizes=s.latency_batches, rounds=s.latency_rounds,
                          base_export=base_export, candidate_export=cand_export,
                          base_accuracy=base_acc,
                          extra_onnx=quant_paths)
    if s.effective_ratio is not None:
        trials[chosen_idx] = replace(
            trials[chosen_idx], speedup=comp.speedups,
            cpu_speedup={b: comp.cpu_speedup(b) for b in comp.speedups},
            onnx_bytes=comp.candidate.onnx.bytes_total)

    variants = judge_quantization(comp, quant_specs, quant_paths, xte, yte, floor,
                                   forced=s.quantize == "on")
    kept_q = [v for v in variants if v.kept]
    fastest: QuantVariant | None = None
    output_onnx = comp.candidate.onnx.path
    if kept_q:
        fastest = min(kept_q, key=lambda v: v.latency_us[s.speedup_batch])
        output_onnx = fastest.path
        variants = tuple(
            v if v is fastest or not v.kept
            else replace(v, kept=False, why=v.why + "; a faster variant was kept")
            for v in variants
        )

    main_speed = comp.sure_speedup(s.speedup_batch)
    drop = comp.accuracy_drop
    met = True
    if not accuracy_ok:
        met = False
        reason = (f"pruning ratio {chosen_ratio} costs {drop:.2f} accuracy points "
                  f"({base_acc:.2f}% -> {comp.candidate.accuracy:.2f}%), more than "
                  f"max_accuracy_drop {s.max_accuracy_drop}; kept the unpruned model. Try a "
                  "smaller prune.ratio, more prune.finetune_epochs or a larger "
                  "max_accuracy_drop")
    elif not comp.parity.ok:
        met = False
        reason = (f"ONNX Runtime parity failed for the pruned model (max abs diff "
                  f"{comp.parity.max_abs_diff:.3g} > {comp.parity.atol:g} or argmax agreement "
                  f"{comp.parity.argmax_agreement:.2%}); kept the unpruned model")
    elif s.target_speedup is not None and main_speed < s.target_speedup:
        met = False
        reason = (f"the most aggressive setting within the {s.max_accuracy_drop}-point budget "
                  f"(ratio {chosen_ratio:.3f}, widths {list(trials[chosen_idx].widths)}) is "
                  f"{main_speed:.2f}x faster at batch {s.speedup_batch}, short of "
                  f"target_speedup {s.target_speedup}; kept the unpruned model. A target of at "
                  f"most {math.floor(main_speed * 10) / 10:.1f} would pass, or allow a larger "
                  "max_accuracy_drop")
    else:
        reason = (f"ratio {chosen_ratio:.3f} (widths {list(trials[chosen_idx].widths)}): "
                  + ", ".join(f"{comp.sure_speedup(b):.2f}x faster at batch {b}"
                              for b in comp.speedups)
                  + f", {comp.size_ratio:.2f}x smaller; accuracy {comp.candidate.accuracy:.2f}% "
                  f"({-drop:+.2f} points, budget -{s.max_accuracy_drop})")
    if not comp.real_speedup:
        notes.append(comp.verdict)
    # What the output would gain over the unpruned model at each batch size served; a
    # pruned model that is not really faster at all of them is not worth its accuracy.
    gains = {b: comp.sure_speedup(b) * (fastest.gain[b] if fastest else 1.0)
             for b in comp.speedups}
    slow = met and min(gains.values()) < REAL_SPEEDUP
    if slow:
        reason = ("no real speedup at the batch sizes served (prune.latency_batches "
                  f"{list(s.latency_batches)}): "
                  + ", ".join(f"{v:.2f}x at batch {b}" for b, v in gains.items())
                  + f" (real is >= {REAL_SPEEDUP}x at each); the unpruned model ships")
    say(f"prune: {reason}")
    if slow:
        return PruneResult(model=base, met_budget=True, reason=reason, settings=s, spec=spec,
                           history=(), base_accuracy=base_acc, comparison=comp,
                           trials=tuple(trials), quantization=variants,
                           onnx_path=base_export.path, notes=tuple(notes))
    if not met:
        return PruneResult(model=base, met_budget=False, reason=reason, settings=s, spec=spec,
                           history=(), base_accuracy=base_acc, comparison=comp,
                           trials=tuple(trials), quantization=variants,
                           onnx_path=base_export.path, notes=tuple(notes))
    return PruneResult(model=chosen, met_budget=True, reason=reason, settings=s, spec=spec,
                       history=history, base_accuracy=base_acc, comparison=comp,
                       trials=tuple(trials), quantization=variants, onnx_path=output_onnx,
                       notes=tuple(notes))


def _ladder(pruner: ChannelPruner, s: PruneSettings) -> list[float]:
    """Ratios to walk, mildest first, skipping those that give the same widths."""
    out: list[float] = []
    seen = {tuple(pruner.original)}
    k = 1
    while k * s.search_step <= s.max_ratio + 1e-9:
        r = round(k * s.search_step, 6)
        widths = pruner.target_widths(r, s.round_to)
        if widths not in seen:
            seen.add(widths)
            out.append(r)
        k += 1
    return out


def _trial(pruner: ChannelPruner, model: nn.Module, shape: Sequence[int], ratio: float,
           acc: float, base_acc: float, ok: bool, speed: Mapping[int, float],
           onnx_bytes: int = 0) -> Trial:
    return Trial(ratio=ratio, widths=pruner.widths, params=count_params(model),
                 macs=count_macs(model, shape), onnx_bytes=onnx_bytes, accuracy=acc,
                 accuracy_drop=base_acc - acc, speedup=dict(speed), within_budget=ok)
