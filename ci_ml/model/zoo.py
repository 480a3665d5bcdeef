"""The built-in model zoo, and loading a user's own ``package.module:factory``.

A model is always rebuilt from a JSON-able spec plus safetensors weights, never
unpickled, so loading a model cannot execute code that came with it.
"""

from __future__ import annotations

import importlib
import inspect
import math
import re
import sys
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ci_ml.errors import ConfigError, InputError
from ci_ml.model.card import CARD, ModelCard


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model's architecture (not its weights)."""

    name: str
    input_shape: tuple[int, ...]
    # Outputs of the head: one score per class, or 1 for regression (a value).
    num_classes: int
    params: dict[str, Any] = field(default_factory=dict)
    task: str = "classification"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "params": self.params,
            "task": self.task,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelSpec:
        return cls(
            name=str(data["name"]),
            input_shape=tuple(int(v) for v in data["input_shape"]),
            num_classes=int(data["num_classes"]),
            params=dict(data.get("params", {})),
            task=str(data.get("task", "classification")),
        )


class MLP(nn.Module):
    """A plain multi-layer perceptron for tabular data."""

    def __init__(
        self, in_features: int, num_classes: int, hidden: Sequence[int] = (64, 32),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class SmallCNN(nn.Module):
    """conv-bn-relu blocks, a max-pool after the second block, global average pooling.

    With channels (32, 64, 128) on 1x8x8 inputs (sklearn digits) this is about
    2.4M multiply-accumulates: 8x8x9x(1x32 + 32x64) + 4x4x9x64x128 + 128x10.
    """

    def __init__(
        self, in_channels: int, num_classes: int, channels: Sequence[int] = (32, 64, 128),
        pool_after: Sequence[int] = (1,),
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        width = in_channels
        for i, c in enumerate(channels):
            blocks += [
                nn.Conv2d(width, c, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
            ]
            if i in pool_after:
                blocks.append(nn.MaxPool2d(2))
            width = c
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(torch.flatten(self.pool(x), 1))


def _build_mlp(spec: ModelSpec) -> nn.Module:
    p = spec.params
    return MLP(
        in_features=math.prod(spec.input_shape),
        num_classes=spec.num_classes,
        hidden=tuple(p.get("hidden", (64, 32))),
        dropout=float(p.get("dropout", 0.0)),
    )


def _build_cnn(spec: ModelSpec) -> nn.Module:
    if len(spec.input_shape) != 3:
        raise ConfigError(
            f"model 'cnn' needs model.input_shape [channels, height, width], "
            f"got {list(spec.input_shape)}"
        )
    p = spec.params
    return SmallCNN(
        in_channels=spec.input_shape[0],
        num_classes=spec.num_classes,
        channels=tuple(p.get("channels", (32, 64, 128))),
        pool_after=tuple(p.get("pool_after", (1,))),
    )


ZOO: dict[str, Callable[[ModelSpec], nn.Module]] = {
    "mlp": _build_mlp,
    "cnn": _build_cnn,
}


_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _is_module_class(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, nn.Module)


def _project_code(path: str | None, directory: Path) -> bool:
    """A source file of the project itself: inside its directory, and not in an environment
    that happens to live there (a .venv's site-packages is installed code, not the project)."""
    if not path:
        return False
    try:
        resolved = Path(path).resolve()
        environments = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()}
    except OSError:
        return False
    return (resolved.is_relative_to(directory.resolve())
            and not any(resolved.is_relative_to(env) for env in environments)
            and not {"site-packages", "dist-packages"} & set(resolved.parts))


def _returns_a_module(func: Callable[..., Any]) -> bool:
    """The function's return annotation names an nn.Module subclass."""
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # noqa: BLE001 - an annotation that does not evaluate says nothing
        return False
    return _is_module_class(hints.get("return"))


def _import_factory(ref: str, project_dir: Path) -> Callable[..., nn.Module]:
    """``package.module:factory``, checked before anything of it runs.

    A factory is an ``nn.Module`` subclass, a function annotated to return one, or a plain
    function defined in the project itself (its result is checked after the call). Anything
    else (``os:system``, a builtin, a callable object, a standard-library function) is refused
    before it is called; standard-library modules are refused before they are imported, as
    importing some of them acts (``antigravity`` opens a browser).
    """
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr or not _DOTTED.match(module_name) or not _DOTTED.match(attr):
        raise ConfigError(f"model.name {ref!r}: expected a zoo name ({', '.join(ZOO)}) or "
                          "'package.module:factory'")
    top = module_name.split(".")[0]
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        raise ConfigError(f"model.name {ref!r}: {top!r} is a standard-library module, not a "
                          "model factory")
    if any(part.startswith("__") for part in attr.split(".")):
        raise ConfigError(f"model.name {ref!r}: a factory name cannot reach dunder attributes")
    # The user's project is importable the way its own code imports itself.
    for root in (project_dir, project_dir / "src"):
        if root.is_dir() and str(root) not in sys.path:
            sys.path.insert(0, str(root))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"model.name {ref!r}: cannot import {module_name!r}: {exc}") from exc
    factory: Any = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)
    if not callable(factory):
        raise ConfigError(f"model.name {ref!r}: {module_name} has no callable {attr!r}")
    if _is_module_class(factory):
        return factory
    if inspect.isfunction(factory) and (
            _returns_a_module(factory)
            or _project_code(getattr(inspect.getmodule(factory), "__file__", None),
                               project_dir)):
        return factory
    kind = ("a builtin" if inspect.isbuiltin(factory) else
            "a function that is not annotated to return a torch.nn.Module"
            if inspect.isfunction(factory) else f"a {type(factory).__name__} object")
    raise ConfigError(f"model.name {ref!r}: {attr} is {kind}; a factory must be a torch.nn.Module "
                      "subclass, a function annotated '-> torch.nn.Module' (or a subclass), or "
                      "a function defined in the project")


def _check_arguments(factory: Callable[..., Any], spec: ModelSpec) -> None:
    """The factory takes input_shape, num_classes and every key of model.params; checked
    against its signature before the call, so a typo is a config error, not a crash."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(input_shape=spec.input_shape, num_classes=spec.num_classes,
                       **spec.params)
    except TypeError as exc:
        unknown = [k for k in spec.params if k not in signature.parameters]
        takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD
                           for p in signature.parameters.values())
        if unknown and not takes_kwargs:
            raise ConfigError(f"model.params.{unknown[0]}: {spec.name} takes no argument "
                              f"{unknown[0]!r} (it takes: {', '.join(signature.parameters)})"
                              ) from exc
        raise ConfigError(f"model.params: {spec.name} cannot be called with input_shape, "
                          f"num_classes and the params given: {exc}") from exc


def build_model(spec: ModelSpec, project_dir: Path | None = None) -> nn.Module:
    """Build an untrained model from its spec (zoo name or ``module:factory``)."""
    builder = ZOO.get(spec.name)
    if builder is not None:
        return builder(spec)
    factory = _import_factory(spec.name, project_dir or Path.cwd())
    _check_arguments(factory, spec)
    model = factory(
        input_shape=spec.input_shape, num_classes=spec.num_classes, **spec.params
    )
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model.name {spec.name!r}: factory returned {type(model).__name__}, "
                          "not a torch.nn.Module")
    return model


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass at batch 1 (conv and linear layers)."""
    total = 0

    def conv_hook(mod: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(mod, nn.Conv2d)
        kernel = mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups)
        total += int(out.numel() // out.shape[0]) * kernel

    def linear_hook(mod: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(mod, nn.Linear)
        total += int(out.numel() // out.shape[0]) * mod.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *input_shape))
    model.train(was_training)
    for h in handles:
        h.remove()
    return total


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def card_spec(card: ModelCard) -> ModelSpec:
    """The zoo spec a model card records. It lives here, not on the card: the card is read
    by the torch-free server image, the spec only by torch's side (train, prune, evaluate)."""
    if card.spec_json is None:
        raise InputError("this model was not built by ci-ml's model zoo (no spec in "
                         f"{CARD}): it exists only as ONNX")
    return ModelSpec.from_json(dict(card.spec_json))
