"""Where a monitoring run's inputs are: the command line first, then the config.

Command-line paths are taken as given (relative to the working directory); paths
in the config are relative to the config file, like every other path there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ci_ml.artifacts import CANDIDATE_ONNX
from ci_ml.config import Config
from ci_ml.monitor.interface import MonitorInputError


@dataclass(frozen=True)
class MonitorPaths:
    logs: tuple[Path, ...]
    labels: tuple[Path, ...]
    model: Path | None
    reference: Path | None
    train: Path | None
    target: str | None


def _configured(config: Config, value: object) -> Path | None:
    return config.resolve(str(value)) if value else None


def resolve_paths(config: Config, out_dir: Path, *, logs: Sequence[Path] = (),
                  labels: Sequence[Path] = (), model: Path | None = None,
                  reference: Path | None = None) -> MonitorPaths:
    section = config.section("monitor")
    serve = config.section("serve")
    log_paths = tuple(logs) or tuple(p for p in (
        _configured(config, section["log"]) or _configured(config, serve["log"]["path"]),)
        if p is not None)
    if not log_paths:
        raise MonitorInputError("no request log: pass --log PATH, or set monitor.log or "
                                "serve.log.path in the config")
    label_paths = tuple(labels) or tuple(p for p in (_configured(config, section["labels"]),)
                                         if p is not None)
    model_path = model or _configured(config, section["model"]) or \
        _configured(config, serve["model"])
    if model_path is None and (out_dir / CANDIDATE_ONNX).is_file():
        model_path = out_dir / CANDIDATE_ONNX
    data = config.section("data")
    train = _configured(config, data.get("train"))
    return MonitorPaths(
        logs=log_paths, labels=label_paths, model=model_path,
        reference=reference or _configured(config, section["reference"]),
        train=train, target=str(data["target"]) if data.get("target") else None)
