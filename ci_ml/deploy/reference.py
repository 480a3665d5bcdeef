"""One image reference for a model, shared by ``deploy build`` and ``deploy render``.

The name is ``deploy.image`` (default ``ci-ml/<project>``) and the tag ``deploy.tag``
(default: the first 12 hex digits of the model's registry digest), so the manifests
rendered for a registry version name the image built from that model. Once pushed, the
registry's manifest digest pins it: ``name:tag@sha256:...``. ``image.json`` (written by
``deploy build``) carries the digest from the build to the render.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ci_ml.errors import InputError

IMAGE_RECORD = "image.json"


@dataclass(frozen=True)
class ImageReference:
    name: str
    tag: str
    digest: str | None = None     # the registry's manifest digest, once pushed

    @property
    def tagged(self) -> str:
        return f"{self.name}:{self.tag}"

    def __str__(self) -> str:
        return f"{self.tagged}@{self.digest}" if self.digest else self.tagged


def image_name(section: Mapping[str, Any], project: str) -> str:
    return str(section.get("image") or f"ci-ml/{project.lower()}")


def model_tag(model_digest: str) -> str:
    """The default tag of a model's image: 12 hex digits of its digest (``sha256:`` or bare)."""
    return model_digest.removeprefix("sha256:")[:12]


def reference_for(section: Mapping[str, Any], project: str, model_digest: str) -> ImageReference:
    """The image of the model with ``model_digest`` (the ``deploy`` config section)."""
    return ImageReference(image_name(section, project),
                          str(section.get("tag") or model_tag(model_digest)))


def read_record(out_dir: Path) -> dict[str, Any] | None:
    """``image.json`` of the last ``deploy build`` into ``out_dir``, if any."""
    path = out_dir / IMAGE_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(record, dict):
        raise InputError(f"{path}: expected a JSON object")
    return record


def built_reference(out_dir: Path, expected: ImageReference,
                    model_digest: str) -> ImageReference:
    """``expected`` pinned by the digest ``deploy build --push`` recorded for this model.

    The record counts only when it is the image of this very model under this name and
    tag: a record left by another build never lends its digest to a different image.
    """
    record = read_record(out_dir)
    if not record or record.get("model_digest") != model_digest:
        return expected
    if record.get("name") != expected.name or record.get("tag") != expected.tag:
        return expected
    digest = record.get("repo_digest")
    return ImageReference(expected.name, expected.tag,
                          digest if isinstance(digest, str) and digest else None)
