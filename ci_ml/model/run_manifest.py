"""The training run manifest (``train-run.json``): what produced a model, by hash.

It pins the data (sha256 of both CSVs), the config (hash of the whole file and of
the sections training reads), the code (git commit and dirty flag of the project,
hashes of a ``module:factory`` model's sources), the environment (package
versions, Python, CPU model, thread count, process count) and the result (sha256
of the weights). Training is cached by its inputs, so a cached run hands back the
manifest of the run that actually produced the weights, commit included.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ci_ml.config import Config
from ci_ml.fsutil import hash_json, hash_path

PACKAGES = ("ci-ml", "torch", "numpy", "safetensors", "matplotlib")
GIT_TIMEOUT_S = 10.0


def package_versions(*names: str) -> dict[str, str]:
    """Installed versions of distributions ("missing" if absent): recorded, and part of cache keys."""
    out = {}
    for n in names:
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            out[n] = "missing"
    return out


def cpu_model() -> str:
    """The CPU's marketing name (Linux /proc/cpuinfo), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text("utf-8", "replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _git(git: str, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # A clean environment: GIT_DIR and friends from a surrounding hook must not redirect us.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    return subprocess.run([git, "-C", str(root), *args], capture_output=True, text=True,
                          timeout=GIT_TIMEOUT_S, env=env, check=False)


def git_state(root: Path, exclude: Sequence[Path] = ()) -> dict[str, Any]:
    """Commit and dirty flag of the project directory, or why there are none.

    ``dirty`` considers only the project directory (a monorepo's other projects do
    not count) and ignores ``exclude`` (ci-ml's own output and cache directories).
    """
    git = shutil.which("git")
    if git is None:
        return {"repository": False, "reason": "git is not installed"}
    try:
        top = _git(git, root, "rev-parse", "--show-toplevel")
        if top.returncode != 0:
            reason = (top.stderr.strip().splitlines() or ["not a git repository"])[-1]
            return {"repository": False, "reason": reason[:200]}
        head = _git(git, root, "rev-parse", "--verify", "--quiet", "HEAD")
        commit = head.stdout.strip() if head.returncode == 0 else None
        specs = ["."]
        for path in exclude:
            try:
                rel = path.resolve().relative_to(root.resolve())
            except ValueError:
                continue
            if rel.parts:
                specs.append(f":(exclude){rel.as_posix()}")
        status = _git(git, root, "status", "--porcelain", "--untracked-files=normal", "--", *specs)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"repository": False, "reason": f"git failed: {exc}"}
    if status.returncode != 0:
        return {"repository": True, "commit": commit, "dirty": None,
                "reason": status.stderr.strip()[:200]}
    changed = [line[3:] for line in status.stdout.splitlines() if line.strip()]
    return {"repository": True, "commit": commit, "dirty": bool(changed),
            "changed_files": changed[:20], "changed_count": len(changed)}


def build_manifest(*, config: Config, data: Mapping[str, Mapping[str, Any]],
                   code_files: Sequence[Path], settings: Mapping[str, Any], world_size: int,
                   threads: int, seed: int, spec: Mapping[str, Any], weights_sha256: str,
                   result: Mapping[str, Any], exclude: Sequence[Path] = ()) -> dict[str, Any]:
    import torch

    root = config.root
    code = {}
    for path in code_files:
        try:
            label = path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            label = path.resolve().as_posix()
        code[label] = hash_path(path)
    train_sections = {s: config.data.get(s) for s in ("data", "model", "train")}
    return {
        "format": "ci-ml/train-run/1",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "weights_sha256": weights_sha256,
        "model": dict(spec),
        "data": {k: dict(v) for k, v in data.items()},
        "config": {"path": config.path.name, "sha256": config.digest(),
                   "train_sections_sha256": hash_json(train_sections)},
        "code": {"git": git_state(root, exclude), "user_code": code},
        "settings": dict(settings),
        "seed": seed,
        "environment": {
            "python": platform.python_version(),
            "executable": Path(sys.executable).name,
            "platform": platform.platform(),
            "cpu": cpu_model(),
            "cpu_count": os.cpu_count(),
            "threads": threads,
            "world_size": world_size,
            "torch": package_versions("torch")["torch"],
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "packages": package_versions(*PACKAGES),
        },
        "result": dict(result),
    }
