"""What ci-ml refuses to load: pickle-based checkpoints, recognised by content, not by name.

Torch-free, so the ONNX-only paths (evaluate, a team's own model) use it without torch.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from ci_ml.errors import InputError

PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt", ".joblib")


def looks_like_pickle(path: Path) -> bool:
    """By content, not by name: torch.save's zip (with a data.pkl) or a raw pickle stream."""
    if not path.is_file():
        return False
    with open(path, "rb") as fh:
        head = fh.read(2)
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return True  # PROTO opcode: pickle protocol 2-5 (torch's legacy format starts so too)
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                return any(n.endswith(".pkl") for n in zf.namelist())
        except (zipfile.BadZipFile, OSError):
            return False
    return False


def refuse_pickle(path: Path) -> None:
    """Explain why a pickle-based checkpoint is not loaded, instead of loading it."""
    if path.suffix in PICKLE_SUFFIXES or looks_like_pickle(path):
        raise InputError(
            f"{path}: refusing a pickle-based checkpoint (torch.save / pickle): loading a "
            "pickle can execute code, and torch.load(weights_only=True) still runs the pickle "
            "machine on untrusted bytes; save the weights with safetensors "
            "(ci-ml's model/ directory, or safetensors.torch.save_file) or export to ONNX"
        )
