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
from collections.abc import Iterator, Mapping
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

    def recorded_tools(self, step: str) -> Iterator[tuple[str, dict[str, str]]]:
        """(key, tool versions) of every complete entry of ``step`` that recorded them.

        A job without a step's tools (a lean install) cannot compute the key that step had
        where it ran; it can check that an entry's key is what the inputs give with the
        entry's own tool versions (see ``ci_ml.pipeline.runner``).
        """
        base = self.root / step
        if not self.enabled or not base.is_dir():
            return
        for entry in sorted(base.iterdir()):
            try:
                tools = json.loads((entry / "tools.json").read_text("utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(tools, dict) and (entry / "outcome.json").is_file():
                yield entry.name, {str(k): str(v) for k, v in tools.items()}

    def store(self, step: str, key: str, outcome: StepOutcome, outputs: tuple[str, ...],
              src: Path, tools: Mapping[str, str] | None = None) -> None:
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
            if tools is not None:
                (tmp / "tools.json").write_text(json.dumps(dict(tools), indent=2), "utf-8")
            # outcome.json last: its presence is what marks an entry complete.
            (tmp / "outcome.json").write_text(json.dumps(outcome.to_json(), indent=2), "utf-8")
            os.rename(tmp, final)
        except OSError:
            # Lost a race to an identical entry, or the cache is not writable: never fatal.
            shutil.rmtree(tmp, ignore_errors=True)
