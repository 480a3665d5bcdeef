"""Bring your own training: run ``train.command``, take the ONNX model it leaves, measure it.

The command (an argv list, never a shell string) runs in the project directory with:

    CI_ML_TRAIN_DATA, CI_ML_TEST_DATA   absolute paths of the two splits (CSV or Parquet)
    CI_ML_TARGET, CI_ML_TASK            the target column; classification | regression
    CI_ML_FEATURES                      JSON list of the feature columns (identifiers left out)
    CI_ML_SEED, PYTHONHASHSEED          train.seed
    CI_ML_OUTPUT_DIR                    an empty directory: leave model.onnx here

It must exit 0 and leave ``$CI_ML_OUTPUT_DIR/model.onnx`` (plus ``model.onnx.data``
if the exporter wrote one). Anything else it writes there is ignored, except a
``metrics.json``, which is recorded as the script's *claim* and never used by the
gate: ci-ml computes the metrics itself by running the ONNX model on the test split.
The environment is the caller's minus ci-ml's own variables (``CI_ML_*``: the signing
key path, the registry) and the DAST API key, so the script cannot reach them by name.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ci_ml.config import Config
from ci_ml.data.loader import DataBundle, load_data
from ci_ml.data.reference import prediction_reference
from ci_ml.errors import ConfigError, InputError, ToolError
from ci_ml.fsutil import IGNORED_DIRS, atomic_write_json, sha256_file
from ci_ml.limits import Limits, ProcessResult, run_limited
from ci_ml.model.binding import class_order, infer_bindings, infer_outputs
from ci_ml.model.card import (
    CARD,
    CLASSIFICATION,
    REFERENCE,
    TRAINER_COMMAND,
    ModelCard,
    fields_from_schema,
)
from ci_ml.model.inference import OnnxModel, Prediction, make_session
from ci_ml.model.metrics import score_predictions
from ci_ml.model.run_manifest import cpu_model, git_state
from ci_ml.model.safety import refuse_pickle

ONNX = "model.onnx"
LOG = "train-command.log"
MAX_CLAIM_BYTES = 1 << 20


def settings(config: Config) -> tuple[list[str], float, int]:
    train = config.section("train")
    argv = [str(a) for a in train.get("command") or ()]
    if not argv or not argv[0].strip():
        raise ConfigError("train.command: expected an argv list such as [python, train.py]")
    # `python` means the interpreter running ci-ml: the project's virtual environment.
    if argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    return argv, float(train["timeout_s"]), int(train["seed"])


def code_inputs(config: Config, exclude: tuple[Path, ...]) -> tuple[Path, ...]:
    """``train.inputs``, or the whole project (less outputs, caches and VCS) if unset."""
    declared = config.section("train").get("inputs")
    if declared is not None:
        paths = tuple(config.resolve(str(p)) for p in declared)
        for p in paths:
            if not p.exists():
                raise ConfigError(f"train.inputs: {p} does not exist")
        return paths
    skip = {p.resolve() for p in exclude}
    out = []
    for entry in sorted(config.root.iterdir()):
        if entry.name in IGNORED_DIRS or entry.name.startswith(".") or entry.resolve() in skip:
            continue
        if any(s.is_relative_to(entry.resolve()) for s in skip):
            continue  # an entry holding --out or the cache: its other files are data, not code
        out.append(entry)
    return tuple(out)


def environment_digest() -> str:
    """sha256 of every installed distribution's name and version: the script's packages."""
    names = sorted({f"{d.metadata['Name']}=={d.version}".lower()
                    for d in importlib.metadata.distributions() if d.metadata["Name"]})
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def installed_packages() -> dict[str, str]:
    return {str(d.metadata["Name"]).lower(): d.version
            for d in sorted(importlib.metadata.distributions(),
                            key=lambda d: str(d.metadata["Name"]).lower())
            if d.metadata["Name"]}


def child_environment(config: Config, bundle: DataBundle, output: Path, seed: int) -> dict[str, str]:
    zap_key = str(config.section("scan").get("dast", {}).get("zap_api_key_env") or "ZAP_API_KEY")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CI_ML_") and k != zap_key}
    env.update({
        "CI_ML_TRAIN_DATA": str(bundle.train.path), "CI_ML_TEST_DATA": str(bundle.test.path),
        "CI_ML_TARGET": bundle.schema.target, "CI_ML_TASK": bundle.task,
        "CI_ML_FEATURES": json.dumps([c.name for c in bundle.schema.features]),
        "CI_ML_SEED": str(seed), "PYTHONHASHSEED": str(seed),
        "CI_ML_OUTPUT_DIR": str(output),
    })
    return env


def _check_result(result: ProcessResult, argv: list[str], timeout_s: float) -> None:
    if result.spawn_error is not None:
        raise InputError(f"train.command: cannot run {argv[0]!r}: {result.spawn_error}")
    last = next((line.strip() for line in reversed(result.log_tail.splitlines()) if line.strip()),
                "no output")[:300]
    shown = " ".join(argv)[:120]
    if result.timed_out:
        raise ToolError(f"train.command timed out after {timeout_s:g} s (train.timeout_s): "
                        f"killed its process group; last output: {last}")
    if result.signal is not None:
        raise ToolError(f"train.command was killed by signal {result.signal} (out of memory?):"
                        f" {shown}; last output: {last}")
    if result.returncode != 0:
        raise InputError(f"train.command exited with code {result.returncode}: {shown}; "
                         f"last output: {last}")


def _check_onnx(output: Path) -> Path:
    model = output / ONNX
    if not model.is_file():
        found = ", ".join(sorted(p.name for p in output.iterdir())[:5]) or "nothing"
        raise InputError(f"train.command exited 0 but left no {ONNX} in $CI_ML_OUTPUT_DIR "
                         f"(it left: {found})")
    refuse_pickle(model)
    import onnx

    try:
        proto = onnx.load(str(model), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends
        raise InputError(f"train.command's {ONNX} is not a valid ONNX model ({exc})"[:300]) \
            from None
    for init in proto.graph.initializer:
        for entry in init.external_data:
            if entry.key == "location":
                target = (output / entry.value).resolve()
                if not target.is_relative_to(output.resolve()) or not target.is_file():
                    raise InputError(f"train.command's {ONNX}: external data {entry.value!r} is "
                                     "not a file beside the model")
    return model


def _claimed(output: Path) -> dict[str, Any] | None:
    path = output / "metrics.json"
    if not path.is_file() or path.stat().st_size > MAX_CLAIM_BYTES:
        return None
    try:
        doc = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    # Only scalars: the claim is for reading, not for executing or rendering as markup.
    return {str(k)[:64]: v for k, v in list(doc.items())[:100]
            if isinstance(v, int | float | bool) or (isinstance(v, str) and len(v) <= 200)}


def measure(model: OnnxModel, bundle: DataBundle) -> tuple[dict[str, Any], Prediction]:
    """ci-ml's own metrics of the model on the test split, from the ONNX graph."""
    test = bundle.test
    pred = model.predict(test.columns, test.rows, strict=False)
    metrics = score_predictions(pred, model.card, test)
    if pred.report is not None:
        metrics["inputs"] = pred.report.to_json()
    return metrics, pred


def build_card(model_path: Path, bundle: DataBundle) -> ModelCard:
    """The card of a team's ONNX model: which fields feed which input, which output says what."""
    session = make_session(model_path)
    features = bundle.schema.features
    bindings = infer_bindings(model_path, session.get_inputs(), features)
    used = {f for b in bindings for f in b.fields}
    fields = fields_from_schema([c for c in features if c.name in used])
    draft = ModelCard(task=bundle.task, classes=bundle.classes, fields=fields, inputs=bindings,
                      target=bundle.schema.target, trainer=TRAINER_COMMAND)
    probe = OnnxModel(model_path, draft, session=session)
    n = min(bundle.test.rows, 64)
    feed, _ = probe.feed({k: v[:n] for k, v in bundle.test.columns.items()}, n)
    try:
        sample = probe.run(feed)
    except Exception as exc:  # onnxruntime's own error classes
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(f"{model_path}: the model fails on the test split's rows ({first})") \
            from None
    outputs = infer_outputs(model_path, session.get_outputs(), bundle.task, sample)
    card = ModelCard(task=bundle.task, classes=bundle.classes, fields=fields, inputs=bindings,
                     outputs=outputs, target=bundle.schema.target, trainer=TRAINER_COMMAND)
    if bundle.task == CLASSIFICATION and outputs.kind != "zipmap" and outputs.label \
            and outputs.scores:
        decoded = OnnxModel(model_path, card, session=session).decode(sample, n, _empty(n))
        if decoded.probabilities is not None:
            order = class_order(decoded.labels, decoded.probabilities, bundle.classes)
            card = ModelCard(task=card.task, classes=order, fields=fields, inputs=bindings,
                             outputs=outputs, target=card.target, trainer=TRAINER_COMMAND)
    return card


def _empty(rows: int) -> Any:
    from ci_ml.data.features import EncodeReport

    return EncodeReport(rows)


def train_with_command(config: Config, staging: Path, model_dir: Path, exclude: tuple[Path, ...],
                       say: Any) -> dict[str, Any]:
    """Run the command, then write model_dir (ONNX, card, reference) and return the metrics
    document and the run manifest fields."""
    argv, timeout_s, seed = settings(config)
    bundle = load_data(config)
    work = staging / ".train-command"
    output = work / "output"
    shutil.rmtree(work, ignore_errors=True)
    output.mkdir(parents=True)
    say(f"train.command: {' '.join(argv)[:120]} (timeout {timeout_s:g} s)")
    # The step's own limits (memory, cgroup) hold the whole tree already; this adds the
    # command's timeout, and ends its process group however it exits.
    result = run_limited(argv, Limits(timeout_s=timeout_s), cwd=config.root,
                         env=child_environment(config, bundle, output, seed),
                         log_path=work / LOG, measure=False)
    _check_result(result, argv, timeout_s)
    onnx_path = _check_onnx(output)
    card = build_card(onnx_path, bundle)
    model = OnnxModel(onnx_path, card)
    metrics, pred = measure(model, bundle)
    claimed = _claimed(output)
    model_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(onnx_path, model_dir / ONNX)
    for extra in output.glob(ONNX + ".data"):
        shutil.copy2(extra, model_dir / extra.name)
    atomic_write_json(model_dir / CARD, {**card.to_json(),
                                         "onnx_sha256": sha256_file(model_dir / ONNX)})
    prediction = (prediction_reference(bundle.task, values=pred.values)
                  if pred.values is not None else prediction_reference(bundle.task, pred.labels))
    from ci_ml.model.records import reference_profile

    atomic_write_json(model_dir / REFERENCE, reference_profile(bundle, prediction))
    shutil.copy2(work / LOG, staging / LOG)
    shutil.rmtree(work, ignore_errors=True)
    return {"metrics": metrics, "claimed": claimed, "bundle": bundle, "card": card,
            "run": {"argv": argv, "returncode": result.returncode,
                    "duration_s": round(result.usage.wall_s, 3), "timeout_s": timeout_s,
                    "seed": seed}}


def command_manifest(config: Config, run: Mapping[str, Any], data: Mapping[str, Any],
                     code: Mapping[str, str], onnx_sha256: str, result: Mapping[str, Any],
                     claimed: Mapping[str, Any] | None, exclude: tuple[Path, ...]) -> dict[str, Any]:
    """train-run.json for a model made by train.command: what ran, on what, in what."""
    import platform
    from datetime import UTC, datetime

    from ci_ml.fsutil import hash_json

    return {
        "format": "ci-ml/train-run/1",
        "trainer": TRAINER_COMMAND,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": list(config.section("train")["command"]), "argv": list(run["argv"]),
        "returncode": run["returncode"],
        "duration_s": run["duration_s"], "timeout_s": run["timeout_s"],
        "seed": run["seed"],
        "onnx_sha256": onnx_sha256,
        "data": {k: dict(v) for k, v in data.items()},
        "config": {"path": config.path.name, "sha256": config.digest(),
                   "train_sections_sha256": hash_json({s: config.data.get(s)
                                                       for s in ("data", "model", "train")})},
        "code": {"git": git_state(config.root, exclude), "inputs": dict(code)},
        "environment": {"python": platform.python_version(), "platform": platform.platform(),
                        "cpu": cpu_model(), "cpu_count": os.cpu_count(),
                        "packages_sha256": environment_digest(),
                        "packages": installed_packages()},
        "result": dict(result),
        # What the script said about itself: recorded, never trusted (the gate reads
        # metrics.json, which ci-ml measured from the ONNX model).
        "claimed_metrics": dict(claimed) if claimed else None,
    }

