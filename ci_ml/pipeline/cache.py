"""The content-hash step cache: ``<dir>/<step>/<key>/{outcome.json, out/...}``.

An entry is assembled in a private temporary directory and renamed into place,
so concurrent runs never see a partial entry; if two runs race to store the
same key, the first rename wins and the second simply discards its copy.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from ci_ml.fsutil import copy_path, hash_path
from ci_ml.pipeline.interface import StepOutcome


class StepCache:
    def __init__(self, root: Path, enabled: bool = True) -> None:
        self.root = root
        self.enabled = enabled

    def _entry(self, step: str, key: str) -> Path:
        return self.root / step / key

    def lookup(self, step: str, key: str) -> StepOutcome | None:
        if not self.enabled:
            return None
        marker = self._entry(step, key) / "outcome.json"
        try:
            return StepOutcome.from_json(json.loads(marker.read_text("utf-8")))
        except (OSError, ValueError, KeyError):
            return None

    def output_hashes(self, step: str, key: str, outputs: tuple[str, ...]) -> dict[str, str] | None:
        """The hashes of a complete entry's outputs, without touching the outputs themselves."""
        if self.lookup(step, key) is None:
            return None
        entry = self._entry(step, key)
        try:
            data = json.loads((entry / "outputs.json").read_text("utf-8"))
            return {str(k): str(v) for k, v in data.items()}
        except (OSError, ValueError, AttributeError):
            # An entry from before outputs.json was recorded: hash what it holds.
            out = entry / "out"
            return {rel: hash_path(out / rel) for rel in outputs if (out / rel).exists()}

    def restore(self, step: str, key: str, outputs: tuple[str, ...], dest: Path) -> None:
        """Copy a cached step's outputs into ``dest`` (the staging directory)."""
        entry = self._entry(step, key) / "out"
        for rel in outputs:
            src = entry / rel
            if src.exists():
                copy_path(src, dest / rel)

    def store(self, step: str, key: str, outcome: StepOutcome, outputs: tuple[str, ...],
              src: Path) -> None:
        if not self.enabled:
            return
        final = self._entry(step, key)
        if final.exists():
            return
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{key[:12]}."))
        try:
            hashes = {}
            for rel in outputs:
                if (src / rel).exists():
                    copy_path(src / rel, tmp / "out" / rel)
                    hashes[rel] = hash_path(tmp / "out" / rel)
            (tmp / "outputs.json").write_text(json.dumps(hashes, indent=2), "utf-8")
            # outcome.json last: its presence is what marks an entry complete.
            (tmp / "outcome.json").write_text(json.dumps(outcome.to_json(), indent=2), "utf-8")
            os.rename(tmp, final)
        except OSError:
            # Lost a race to an identical entry, or the cache is not writable: never fatal.
            shutil.rmtree(tmp, ignore_errors=True)
