"""Pruning benchmark on the example CNN: base vs pruned, side by side, in one run.

Trains SmallCNN on fixtures/example (sklearn digits) from scratch, prunes it with
``ci_ml.model.prune.search.prune_model`` for a batch-1 speedup target under a 1-point accuracy
budget, and prints parameters, MACs, ONNX bytes, ONNX Runtime latency at batch 1 and 256
(1 thread, interleaved rounds, median of medians), accuracy and parity, as ratios.

    python benchmarks/prune.py [--out DIR] [--target-speedup 2.5 | --ratio 0.75]

Exits 1 if the issue's bar is missed: >= 2.5x at batch 1, >= 4x at batch 256, <= 1.0
point accuracy drop, parity max-abs <= 1e-4 with 100% argmax agreement.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ci_ml.model.prune.measure import compare_models  # noqa: E402
from ci_ml.model.prune.persist import load_pruned, save_pruned  # noqa: E402
from ci_ml.model.prune.report import write_prune_report  # noqa: E402
from ci_ml.model.prune.search import fit, prune_model  # noqa: E402
from ci_ml.model.prune.settings import PruneSettings  # noqa: E402
from ci_ml.model.zoo import ModelSpec, build_model  # noqa: E402

DATA = ROOT / "fixtures" / "example" / "data"
BAR = {"b1": 2.5, "b256": 4.0, "drop": 1.0, "atol": 1e-4}


def load(split: str) -> tuple[np.ndarray, np.ndarray]:
    raw = np.loadtxt(DATA / f"{split}.csv", delimiter=",", skiprows=1, dtype=np.float32)
    x = (raw[:, :64] / 16.0).reshape(-1, 1, 8, 8).astype(np.float32)
    return x, raw[:, 64].astype(np.int64)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="artifacts (default: a temp dir)")
    ap.add_argument("--epochs", type=int, default=20, help="base model training epochs")
    ap.add_argument("--seed", type=int, default=0)
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--target-speedup", type=float, default=None)
    group.add_argument("--ratio", type=float, default=None)
    ap.add_argument("--max-accuracy-drop", type=float, default=1.0)
    ap.add_argument("--finetune-epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=21, help="interleaved latency rounds")
    ap.add_argument("--quantize", default="auto", choices=["auto", "off", "on"])
    args = ap.parse_args()
    if args.ratio is None and args.target_speedup is None:
        args.target_speedup = BAR["b1"]

    out = args.out or Path(tempfile.mkdtemp(prefix="ci-ml-bench-prune-"))
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    xtr, ytr = load("train")
    xte, yte = load("test")
    spec = ModelSpec("cnn", (1, 8, 8), 10)
    torch.manual_seed(args.seed)
    base = build_model(spec)
    fit(base, xtr, ytr, epochs=args.epochs, lr=1e-3, batch_size=64, seed=args.seed)
    print(f"trained base SmallCNN: {args.epochs} epochs in {time.perf_counter() - t_start:.1f}s",
          flush=True)

    settings = PruneSettings(
        ratio=args.ratio, target_speedup=args.target_speedup,
        max_accuracy_drop=args.max_accuracy_drop, finetune_epochs=args.finetune_epochs,
        quantize=args.quantize, latency_rounds=args.rounds, seed=args.seed,
    )
    result = prune_model(base, spec, (xtr, ytr), (xte, yte), settings,
                         progress=lambda m: print(m, flush=True), work_dir=out)
    report, plot = write_prune_report(result, out)
    comp = result.comparison
    print()
    print(f"met_budget: {result.met_budget}: {result.reason}")
    if comp is None:
        print("no candidate within the budget")
        return 1
    b, c = comp.base, comp.candidate
    rows = [
        ("parameters", f"{b.params:,}", f"{c.params:,}", comp.params_ratio),
        ("MACs (batch 1)", f"{b.macs:,}", f"{c.macs:,}", comp.macs_ratio),
        ("ONNX bytes (+ext. data)", f"{b.onnx.bytes_total:,}", f"{c.onnx.bytes_total:,}",
         comp.size_ratio),
        ("ONNX nodes", f"{b.onnx.nodes}", f"{c.onnx.nodes}", None),
    ]
    for bs in settings.latency_batches:
        rows.append((f"ORT latency b{bs} (us)", f"{b.latency_us[bs]:.1f}",
                     f"{c.latency_us[bs]:.1f}", comp.speedup(bs)))
    for bs in settings.latency_batches:
        rows.append((f"  thread CPU b{bs} (us)", f"{b.cpu_us[bs]:.1f}",
                     f"{c.cpu_us[bs]:.1f}", comp.cpu_speedup(bs)))
    rows.append(("accuracy (%)", f"{b.accuracy:.2f}", f"{c.accuracy:.2f}", None))
    print(f"{'':26}{'base':>14}{'pruned':>14}{'ratio':>9}")
    for name, vb, vc, r in rows:
        print(f"{name:26}{vb:>14}{vc:>14}{'' if r is None else f'{r:.2f}x':>9}")
    p = comp.parity
    print(f"accuracy drop: {comp.accuracy_drop:.2f} points; parity on {p.n} test inputs: "
          f"max abs {p.max_abs_diff:.2e}, argmax agreement {p.argmax_agreement:.2%}")
    for q in result.quantization:
        print(f"quantization {q.name} ({'+'.join(q.op_types)}): "
              + ", ".join(f"{v:.2f}x vs float at b{k}" for k, v in q.gain.items())
              + f" -> {'kept' if q.kept else 'not kept'} ({q.why})")
    print(f"verdict: {comp.verdict}")

    # Negative control: 50% unstructured magnitude masking, measured the same way.
    masked = copy.deepcopy(base)
    for m in masked.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            torch_prune.l1_unstructured(m, name="weight", amount=0.5)
            torch_prune.remove(m, "weight")
    control = compare_models(base, masked, spec.input_shape, (xte, yte), out / "control",
                             rounds=args.rounds, candidate_name="masked")
    print("negative control (50% unstructured masking): "
          + ", ".join(f"{v:.2f}x (CPU {control.cpu_speedup(k):.2f}x) at b{k}"
                      for k, v in control.speedups.items())
          + f", size {control.size_ratio:.2f}x -> {control.verdict}")

    # Round trip: history JSON + safetensors, rebuilt from the spec.
    saved = out / "pruned-model"
    save_pruned(result.model, result.history, saved, spec=spec)
    again = load_pruned(spec, saved)
    with torch.no_grad():
        same = torch.equal(result.model.eval()(torch.from_numpy(xte)), again(torch.from_numpy(xte)))
    print(f"save/load round trip identical: {same}")
    print(f"artifacts: {report}, {plot}, {saved}")
    loadavg = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"cpu count {os.cpu_count()}, load average {loadavg}, "
          f"total time {time.perf_counter() - t_start:.0f}s")

    checks = {
        # Wall clock and thread CPU time must both clear the bar.
        f"speedup b1 >= {BAR['b1']}": comp.sure_speedup(1) >= BAR["b1"],
        f"speedup b256 >= {BAR['b256']}": comp.sure_speedup(256) >= BAR["b256"],
        f"accuracy drop <= {BAR['drop']}": comp.accuracy_drop <= BAR["drop"],
        f"parity max-abs <= {BAR['atol']}": p.max_abs_diff <= BAR["atol"],
        "argmax agreement 100%": p.argmax_agreement == 1.0,
        "met_budget": result.met_budget,
        "round trip": same,
        "negative control ~1.0x": not control.real_speedup
        and all(0.8 <= control.speedup(k) <= 1.25 and 0.8 <= control.cpu_speedup(k) <= 1.25
                for k in control.speedups),
    }
    for k, v in checks.items():
        print(f"  [{'PASS' if v else 'FAIL'}] {k}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
