"""The one reader of the training profile the data step stores beside the model card.

Everything monitoring knows about that file's format is here: its name and how
its per-column statistics become a ``Reference``. Models without one get a
reference computed from the training data (``ci_ml.monitor.sources``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ci_ml.monitor.interface import MonitorInputError, Reference

PROFILE_NAMES: tuple[str, ...] = ()     # file names beside model.json, first match wins


def find_profile(model_dir: Path) -> Path | None:
    for name in PROFILE_NAMES:
        if (model_dir / name).is_file():
            return model_dir / name
    return None


def reference_from_profile(data: Any, where: str, features: Sequence[str]) -> Reference:
    raise MonitorInputError(f"{where}: not a monitoring reference nor a training profile "
                            "this version of ci-ml reads")
