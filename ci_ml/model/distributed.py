"""Data-parallel training over several processes: PyTorch DDP with the gloo backend.

``ci-ml train --nproc N`` (or ``train.nproc: N``) runs, from the train step::

    python -m torch.distributed.run --standalone --nproc-per-node N \\
        -m ci_ml.model.distributed --job JOB.json --out STAGING --errors DIR

Every rank loads the same data, builds the same model from the same seed and cuts
the same seeded permutation into the single-process run's batches, taking every
N-th sample of each; the loss is scaled so the averaged gradient is that of the
whole batch, and batch norm normalizes over the whole batch too (statistics summed
across ranks). So N processes take the one-process run's steps: the same global
batch and schedule. Rank 0 evaluates, decides early stopping for everyone, and
writes all the outputs.

On several machines, start the same module with torchrun's rendezvous on each of
them (see docs/train.md): ``--config ci-ml.yaml --out DIR`` instead of ``--job``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ci_ml
from ci_ml.config import Config, load_config
from ci_ml.errors import EXIT_USAGE, CiMlError, InputError, ToolError
from ci_ml.fsutil import atomic_write_json
from ci_ml.model.train import Group, ProgressFn

if TYPE_CHECKING:
    import torch
    from torch import nn

_PROGRESS = re.compile(r"^epoch (\d+)/(\d+) ?(.*)$")
ERROR_FILE = "rank-{rank}.json"


class GlooGroup(Group):
    """The loop's view of a torch.distributed process group."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self.rank = dist.get_rank()
        self.world = dist.get_world_size()

    def all_sum(self, values: tuple[float, ...]) -> tuple[float, ...]:
        import torch
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return tuple(float(v) for v in t.tolist())

    def from_leader(self, value: int) -> int:
        import torch
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.int64)
        dist.broadcast(t, src=0)
        return int(t.item())

    def average_buffers(self, model: nn.Module) -> None:
        import torch
        import torch.distributed as dist

        # GlobalBatchNorm keeps the ranks' running statistics equal; averaging them once
        # an epoch also covers buffers of other layers a model may have.
        with torch.no_grad():
            for buf in model.buffers():
                if buf.is_floating_point():
                    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
                    buf.div_(self.world)


class GlobalBatchNorm:
    """Batch norm over the global batch on CPU: torch's SyncBatchNorm runs on GPUs only.

    Each rank's sums (per channel: x and x squared, and the sample count) are added up
    across ranks with an autograd-aware all-reduce, so the forward pass normalizes with
    the statistics of the whole batch and the backward pass is that of one process.
    Applied by swapping the class of the model's BatchNorm layers (parameters, buffers
    and the state dict stay as they are) and undone before the model is saved.
    """

    @staticmethod
    def forward(bn: Any, x: torch.Tensor) -> torch.Tensor:
        import torch
        from torch.distributed.nn.functional import all_reduce
        from torch.nn.modules.batchnorm import _BatchNorm

        if not bn.training:
            out: torch.Tensor = _BatchNorm.forward(bn, x)
            return out
        channels = x.shape[1]
        dims = [0, *range(2, x.dim())]
        count = torch.tensor([x.numel() / max(channels, 1)], dtype=x.dtype)
        totals = all_reduce(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        n = totals[-1]
        mean = totals[:channels] / n
        var = (totals[channels:2 * channels] / n - mean * mean).clamp_min(0.0)
        if bn.track_running_stats:
            with torch.no_grad():
                bn.num_batches_tracked += 1
                momentum = (1.0 / float(bn.num_batches_tracked) if bn.momentum is None
                            else bn.momentum)
                unbiased = var * n / (n - 1).clamp_min(1.0)
                bn.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                bn.running_var.mul_(1 - momentum).add_(unbiased.detach(), alpha=momentum)
        shape = [1, channels] + [1] * (x.dim() - 2)
        out = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + bn.eps)
        if bn.affine:
            out = out * bn.weight.view(shape) + bn.bias.view(shape)
        return out

    @classmethod
    def apply(cls, model: nn.Module) -> list[tuple[nn.Module, type]]:
        from torch import nn

        swapped: list[tuple[nn.Module, type]] = []
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                original = type(module)
                module.__class__ = type(f"Global{original.__name__}", (_GlobalBN, original), {})
                swapped.append((module, original))
        return swapped

    @staticmethod
    def undo(swapped: list[tuple[nn.Module, type]]) -> None:
        for module, original in swapped:
            module.__class__ = original


class _GlobalBN:
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return GlobalBatchNorm.forward(self, x)


# ---------------------------------------------------------------- launcher (the train step)

def launch(config: Config, nproc: int, out_dir: Path, exclude: Sequence[Path] = (),
           progress: ProgressFn | None = None) -> None:
    """Run training on ``nproc`` local processes; rank 0 writes the outputs into ``out_dir``."""
    threads = int(config.section("train")["threads"])
    with tempfile.TemporaryDirectory(prefix="ci-ml-ddp-") as tmp:
        job = Path(tmp) / "job.json"
        errors = Path(tmp) / "errors"
        errors.mkdir()
        atomic_write_json(job, {"config_path": str(config.path), "config": config.data,
                                "exclude": [str(p) for p in exclude]})
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
               "--nproc-per-node", str(nproc), "--max-restarts", "0",
               "-m", "ci_ml.model.distributed",
               "--job", str(job), "--out", str(out_dir), "--errors", str(errors)]
        package_root = str(Path(ci_ml.__file__).resolve().parents[1])
        env = {**os.environ, "OMP_NUM_THREADS": str(threads),
               "PYTHONPATH": os.pathsep.join(
                   p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
        log = Path(tmp) / "torchrun.log"
        code = _run(cmd, env, log, progress)
        if code == 0:
            return
        raise _failure(code, errors, log)


def _run(cmd: list[str], env: dict[str, str], log: Path, progress: ProgressFn | None) -> int:
    with open(log, "wb") as err:
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env, text=True,
                                    start_new_session=True)
        except OSError as exc:
            raise ToolError(f"cannot start torchrun: {exc}") from exc
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                m = _PROGRESS.match(line.strip())
                if m and progress:
                    progress(int(m[1]), int(m[2]), m[3])
            return proc.wait()
        finally:
            if proc.poll() is None:  # interrupted: take the workers down with us
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait()


def _failure(code: int, errors: Path, log: Path) -> CiMlError:
    reports = sorted(errors.glob("rank-*.json"))
    if reports:
        first = json.loads(reports[0].read_text("utf-8"))
        cls = InputError if int(first.get("exit_code", 3)) == EXIT_USAGE else ToolError
        return cls(str(first["message"]))
    lines = [ln.strip() for ln in log.read_text("utf-8", "replace").splitlines() if ln.strip()]
    errors_seen = [ln for ln in lines if "Error" in ln or "error" in ln]
    detail = (errors_seen or lines or ["no output"])[-1]
    return ToolError(f"distributed training failed (torchrun exit {code}): {detail[:300]}")


# ---------------------------------------------------------------- worker (one rank)

def train_rank(config: Config, out_dir: Path, exclude: Sequence[Path]) -> None:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from ci_ml.data.loader import load_data
    from ci_ml.model.layout import model_spec
    from ci_ml.model.outputs import write_train_outputs
    from ci_ml.model.train import (
        TrainResult,
        TrainSettings,
        check_fits,
        evaluate_model,
        fit,
        make_deterministic,
        prepare,
    )
    from ci_ml.model.zoo import build_model

    group = GlooGroup()
    bundle = load_data(config)
    spec = model_spec(config, bundle.input_shape, len(bundle.classes))
    # The world size is what torchrun started (several nodes: more than train.nproc).
    settings = replace(TrainSettings.from_config(config.section("train")), nproc=group.world)
    settings.check()
    generator = make_deterministic(settings.seed, settings.threads)
    model = build_model(spec, config.root)  # same seed: the same initial weights on every rank
    torch.manual_seed(settings.seed + group.rank)  # but each rank its own dropout masks
    train_split, val_split, test_split = prepare(bundle, settings)
    check_fits(model, train_split.x, spec)
    swapped = GlobalBatchNorm.apply(model)
    # No per-forward buffer broadcast: the loop averages batch-norm buffers once an epoch.
    # (torch 2.13 renamed broadcast_buffers to forward_sync_buffers; older ones lack it.)
    renamed = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
    sync_off: dict[str, Any] = ({"forward_sync_buffers": False} if renamed
                                else {"broadcast_buffers": False})
    ddp = DistributedDataParallel(model, **sync_off)

    def report(epoch: int, total: int, text: str) -> None:
        print(f"epoch {epoch}/{total} {text}", flush=True)

    result = fit(ddp, train_split, val_split or test_split, bundle.classes, settings, generator,
                 report if group.rank == 0 else None, group,
                 early_stopping=val_split is not None)
    GlobalBatchNorm.undo(swapped)
    if group.rank == 0:
        metrics = evaluate_model(model, test_split, bundle.classes)
        trained = TrainResult(model, spec, result.history, metrics, result.best_epoch,
                              result.stopped_early)

        def output(rel: str) -> Path:
            path = out_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            return path

        write_train_outputs(output, config, bundle, settings, trained, group.world, exclude)
    dist.barrier()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ci_ml.model.distributed",
        description="One rank of ci-ml's DDP training (run by torchrun).")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="ci-ml config file (multi-node use)")
    source.add_argument("--job", type=Path, help="job file written by `ci-ml train --nproc`")
    parser.add_argument("--out", type=Path, required=True, help="where rank 0 writes the outputs")
    parser.add_argument("--errors", type=Path, help="directory for each failed rank's error")
    args = parser.parse_args(argv)

    import torch.distributed as dist

    rank = int(os.environ.get("RANK", "0"))
    try:
        exclude: list[Path] = [args.out]
        if args.job:
            job: dict[str, Any] = json.loads(args.job.read_text("utf-8"))
            config = Config(Path(job["config_path"]), job["config"])
            exclude = [Path(p) for p in job.get("exclude", [])] or exclude
        else:
            config = load_config(args.config)
        dist.init_process_group("gloo")
        rank = dist.get_rank()
        try:
            train_rank(config, args.out, exclude)
        finally:
            dist.destroy_process_group()
    except CiMlError as exc:
        if args.errors:
            atomic_write_json(args.errors / ERROR_FILE.format(rank=rank),
                              {"rank": rank, "message": exc.message, "exit_code": exc.exit_code})
        print(f"error: rank {rank}: {exc.message}", file=sys.stderr, flush=True)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
