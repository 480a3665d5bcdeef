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
from ci_ml.fsutil import atomic_write_json, sha256_file
from ci_ml.monitor.interface import MonitorInputError

REGISTRY_MODEL_DIR = "monitor-model"
SERVED_FILES = ("model.onnx", "model.onnx.data", "model.json")


@dataclass(frozen=True)
class MonitorPaths:
    logs: tuple[Path, ...]
    labels: tuple[Path, ...]
    model: Path | None
    reference: Path | None
    train: Path | None
    target: str | None
    version: str | None = None


def registry_model(config: Config, stage: str, dest: Path) -> tuple[Path, str]:
    """The model a registry stage holds, copied out of the registry's blobs (each checked
    against its recorded sha256) with its recorded metrics; (model path, version)."""
    from ci_ml.registry.backends import open_registry
    from ci_ml.registry.interface import BlobRef

    registry = open_registry(config)
    record = registry.state().current(stage)
    if record is None:
        raise MonitorInputError(f"--stage {stage}: the registry holds no model in {stage}")
    dest.mkdir(parents=True, exist_ok=True)
    for name in SERVED_FILES:
        sha = record.files.get(name)
        if sha is None:
            continue
        blob = registry.fetch(BlobRef(sha, name, record.version))
        target = dest / name
        target.write_bytes(blob.read_bytes())
        if sha256_file(target) != sha:
            raise MonitorInputError(f"--stage {stage}: the registry's copy of {name} of "
                                    f"v{record.version} does not match its recorded sha256")
    if not (dest / "model.onnx").is_file():
        raise MonitorInputError(f"--stage {stage}: v{record.version} has no ONNX model")
    atomic_write_json(dest / "metrics.json", dict(record.metrics))
    return dest / "model.onnx", str(record.version)


def _configured(config: Config, value: object) -> Path | None:
    return config.resolve(str(value)) if value else None


def resolve_paths(config: Config, out_dir: Path, *, logs: Sequence[Path] = (),
                  labels: Sequence[Path] = (), model: Path | None = None,
                  reference: Path | None = None, stage: str | None = None) -> MonitorPaths:
    section = config.section("monitor")
    serve = config.section("serve")
    log_paths = tuple(logs) or tuple(p for p in (
        _configured(config, section["log"]) or _configured(config, serve["log"]["path"]),)
        if p is not None)
    if not log_paths:
        raise MonitorInputError("no request log: pass --log PATH, or set monitor.log or "
                                "serve.log.path in the config")
    # Labels: --labels, else monitor.labels, else what the server's label route appends to.
    label_paths = tuple(labels) or tuple(p for p in (
        _configured(config, section["labels"])
        or _configured(config, (serve.get("labels") or {}).get("path")),) if p is not None)
    version = None
    model_path = model or _configured(config, section["model"])
    stage = stage or section["stage"]
    if model_path is None and stage:
        model_path, version = registry_model(config, str(stage), out_dir / REGISTRY_MODEL_DIR)
    model_path = model_path or _configured(config, serve["model"])
    if model_path is None and (out_dir / CANDIDATE_ONNX).is_file():
        model_path = out_dir / CANDIDATE_ONNX
    data = config.section("data")
    train = _configured(config, data.get("train"))
    return MonitorPaths(
        logs=log_paths, labels=label_paths, model=model_path,
        reference=reference or _configured(config, section["reference"]),
        train=train, target=str(data["target"]) if data.get("target") else None,
        version=version)
