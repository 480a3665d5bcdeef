"""Tracing a model and removing whole channels through torch-pruning's dependency graph."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from ci_ml.errors import InputError

PRUNABLE = (nn.modules.conv._ConvNd, nn.Linear)


def execution_order(model: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    order: list[nn.Module] = []
    handles = [m.register_forward_hook(lambda mod, _i, _o: order.append(mod))
               for m in model.modules() if isinstance(m, PRUNABLE)]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return order


class ChannelPruner:
    """Removes channels through torch-pruning's dependency graph, recording history."""

    def __init__(self, model: nn.Module, input_shape: Sequence[int]) -> None:
        self.model = model.eval()
        self.example = torch.zeros(2, *input_shape)
        try:
            with torch.no_grad():
                out = model(self.example)
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"forward returned {type(out).__name__}, not a tensor")
            self.out_shape = tuple(out.shape)
            order = execution_order(model, self.example)
            with quiet_logs():
                self.dg = tp.DependencyGraph().build_dependency(
                    model, example_inputs=self.example, verbose=False)
        except InputError:
            raise
        except Exception as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise InputError(f"the model cannot be traced for pruning: {type(exc).__name__}: "
                             f"{msg}"[:400]) from exc
        names = {m: n for n, m in model.named_modules()}
        untraced = [names[m] for m in model.modules()
                    if isinstance(m, PRUNABLE) and m not in self.dg.module2node]
        if untraced:
            raise InputError(
                "the model cannot be traced for pruning: layer(s) "
                f"{', '.join(untraced[:5])} are not on the autograd path from input to output "
                "(no_grad, detach, .numpy() or .item() in forward?)")
        # The layer(s) producing the output keep their width: the output shape is fixed.
        ignored = [order[-1]] if order else []
        self.roots: list[nn.Module] = []
        for group in self.dg.get_all_groups(ignored_layers=ignored,
                                            root_module_types=list(PRUNABLE)):
            self.roots.append(group[0].dep.target.module)
        rank = {m: i for i, m in enumerate(order)}
        self.roots.sort(key=lambda m: rank.get(m, len(rank)))
        if not self.roots:
            raise InputError("the model has no prunable channels: no Conv or Linear layer "
                             "besides the output layer is on the traced path")
        self.names = [names[m] for m in self.roots]
        self.original = [self._width(m) for m in self.roots]
        self.importance = tp.importance.GroupMagnitudeImportance(p=2)

    def _width(self, module: nn.Module) -> int:
        return int(self.dg.get_out_channels(module))

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(self._width(m) for m in self.roots)

    def target_widths(self, ratio: float, round_to: int | None) -> tuple[int, ...]:
        out = []
        for orig in self.original:
            keep = orig * (1.0 - ratio)
            if round_to and round_to > 1:
                if orig <= round_to:
                    want = orig
                else:
                    blocks = int(math.floor(keep / round_to + 0.5))
                    want = min(orig, max(round_to, blocks * round_to))
            else:
                want = max(1, int(math.floor(keep + 0.5)))
            out.append(want)
        return tuple(out)

    def prune_to(self, widths: Sequence[int]) -> bool:
        """Prune each root group to ``widths`` (lowest-importance channels go). Changed?"""
        changed = False
        for module, want in zip(self.roots, widths, strict=True):
            cur = self._width(module)
            if cur <= want:
                continue
            pruning_fn = self.dg.get_pruner_of_module(module).prune_out_channels
            group = self.dg.get_pruning_group(module, pruning_fn, list(range(cur)))
            scores = self.importance(group)
            if scores is None:
                continue
            idxs = torch.argsort(scores)[: cur - want].tolist()
            self.dg.get_pruning_group(module, pruning_fn, idxs).prune()
            changed = True
        try:
            with torch.no_grad():
                out = self.model(self.example)
        except Exception as exc:
            raise InputError(f"pruning broke the model's forward pass: {type(exc).__name__}: "
                             f"{exc}"[:400]) from exc
        if tuple(out.shape) != self.out_shape:
            raise InputError(f"pruning changed the model's output shape from {self.out_shape} "
                             f"to {tuple(out.shape)}; the output layer must not be pruned")
        return changed

    def history(self) -> tuple[tuple[str, bool, tuple[int, ...]], ...]:
        return normalize_history(self.dg.pruning_history())


def normalize_history(raw: Any) -> tuple[tuple[str, bool, tuple[int, ...]], ...]:
    out = []
    try:
        for name, is_out, idxs in raw:
            if not isinstance(name, str):
                raise TypeError("module name is not a string")
            seq = idxs.tolist() if isinstance(idxs, torch.Tensor) else list(idxs)
            out.append((name, bool(is_out), tuple(int(i) for i in seq)))
    except (TypeError, ValueError) as exc:
        raise InputError(f"malformed pruning history: {exc}") from exc
    return tuple(out)


@contextmanager
def quiet_logs() -> Iterator[None]:
    root = logging.getLogger()
    old = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(old)
