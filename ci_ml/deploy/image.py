"""The model server's container image: a minimal build context, a rendered Dockerfile, a build.

The context holds only ``ci_ml/__init__.py``, ``ci_ml/errors.py``, ``ci_ml/serve/`` and the
torch-free modules that turn a tabular model's raw rows into its input (``SERVER_MODULES``),
the model files, pinned onnxruntime and numpy requirements and the server settings, so
the image carries no torch and no training code. It is built through the docker SDK
(``network_mode=host``: the only network this machine has) from the base image in
the config, and runs as an unprivileged user with a HEALTHCHECK on /health.
"""

from __future__ import annotations

import importlib.metadata
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jinja2

import ci_ml
from ci_ml.deploy.reference import IMAGE_RECORD, ImageReference, reference_for
from ci_ml.errors import InputError, ToolError
from ci_ml.fsutil import atomic_write_json, atomic_write_text
from ci_ml.resources import render_template, template_environment
from ci_ml.serve.settings import LogSettings, ServeSettings

# The server's whole runtime: no torch, no training code (uvloop is optional).
SERVER_PACKAGES = ("onnxruntime", "numpy", "uvicorn", "httptools", "prometheus-client",
                   "orjson")
OPTIONAL_SERVER_PACKAGES = ("uvloop",)
HOST_CA_BUNDLES = (Path("/etc/ssl/certs/ca-certificates.crt"),
                   Path("/etc/pki/tls/certs/ca-bundle.crt"))
LOG_DIR = "/var/lib/ci-ml/log"
CONTEXT_DIR = "image"


@dataclass(frozen=True)
class ImageSpec:
    name: str
    tag: str
    base_image: str
    user: str
    uid: int
    port: int
    model: Path
    model_digest: str        # the registry digest of the model (``sha256:...``): the default tag

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.tag}"


@dataclass(frozen=True)
class BuiltImage:
    ref: str
    id: str
    size_bytes: int
    model_sha256: str
    repo_digest: str | None = None      # the registry's manifest digest, after a push

    def to_json(self) -> dict[str, Any]:
        return {"image": self.ref, "id": self.id, "size_bytes": self.size_bytes,
                "model_sha256": self.model_sha256, "repo_digest": self.repo_digest}

# Modules outside serve/ that the server imports for tabular models (raw rows -> ONNX
# feed, the model card): torch-free, numpy only.
SERVER_MODULES = ("data/__init__.py", "data/features.py", "data/source.py", "model/__init__.py",
                  "model/card.py", "model/inference.py", "model/metrics.py")


def image_spec(section: Mapping[str, Any], project: str, model: Path, model_digest: str,
               name: str | None = None, tag: str | None = None) -> ImageSpec:
    default = reference_for(section, project, model_digest)
    return ImageSpec(name=name or default.name, tag=tag or default.tag,
                     base_image=str(section.get("base_image", "ci-ml/python-base:bookworm")),
                     user=str(section.get("user", "ciml")), uid=int(section.get("uid", 10001)),
                     port=int(section.get("port", 8080)), model=model, model_digest=model_digest)


def _pins() -> list[str]:
    pins = []
    for name in SERVER_PACKAGES + OPTIONAL_SERVER_PACKAGES:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            if name in OPTIONAL_SERVER_PACKAGES:
                continue
            raise ToolError(f"{name} is not installed here; the image pins the server's "
                            "versions to this environment's") from None
    return pins


def _model_files(model: Path) -> list[Path]:
    files = [model, *sorted(model.parent.glob(model.name + ".data")), model.parent / "model.json"]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise InputError(f"{missing[0]}: not found (the image needs {model.name} and model.json; "
                         "run `ci-ml prune`)")
    return files


def render_context(spec: ImageSpec, settings: ServeSettings, model_sha256: str, project: str,
                   dest: Path) -> Path:
    """Write the build context to ``dest`` (replacing it) and return it."""
    files = _model_files(spec.model)
    if dest.exists():
        shutil.rmtree(dest)
    rootfs = dest / "rootfs"
    (rootfs / "srv" / "model").mkdir(parents=True)
    for f in files:
        shutil.copy2(f, rootfs / "srv" / "model" / f.name)
    package = Path(ci_ml.__file__).resolve().parent
    app = rootfs / "opt" / "ci-ml" / "app" / "ci_ml"
    (app / "serve").mkdir(parents=True)
    for rel in ("__init__.py", "errors.py", "py.typed", *SERVER_MODULES):
        if (package / rel).is_file():
            (app / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(package / rel, app / rel)
    for src in sorted((package / "serve").rglob("*.py")):
        dest_file = app / "serve" / src.relative_to(package / "serve")
        dest_file.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest_file)
    atomic_write_text(dest / "requirements.txt", "\n".join(_pins()) + "\n")
    ca = next((p for p in HOST_CA_BUNDLES if p.is_file()), None)
    if ca is not None:
        # pip in the build verifies PyPI with the host's trust store (it may hold a proxy's CA).
        shutil.copy2(ca, dest / "ca-certificates.crt")
    log = settings.log
    in_image = LogSettings(path=Path(LOG_DIR) / log.path.name, sample_rate=log.sample_rate,
                           max_bytes=log.max_bytes) if log.path else LogSettings(path=None)
    image_settings = replace(settings, host="0.0.0.0", port=spec.port,  # noqa: S104 - in a container
                             log=in_image)
    atomic_write_json(rootfs / "srv" / "serve.json", image_settings.to_json())
    env = template_environment("docker", autoescape=False)  # a Dockerfile, not HTML
    values = {"base_image": spec.base_image, "user": spec.user, "uid": spec.uid,
              "port": spec.port, "image": spec.name, "tag": spec.tag, "project": project,
              "model_name": spec.model.name, "model_sha256": model_sha256,
              "ci_ml_version": ci_ml.__version__, "log_dir": LOG_DIR,
              "ca_bundle": "ca-certificates.crt" if ca is not None else ""}
    try:
        atomic_write_text(dest / "Dockerfile", render_template(env, "Dockerfile.j2", **values))
        ignore = render_template(env, "dockerignore.j2", **values)
        atomic_write_text(dest / ".dockerignore", ignore)
    except jinja2.TemplateError as exc:
        raise ToolError(f"Dockerfile template: {exc}") from exc
    _world_readable(dest)
    return dest


def _world_readable(root: Path) -> None:
    """0755 directories, 0644 files: COPY keeps modes, and the server runs as another user
    (atomic writes create 0600 files)."""
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def docker_client() -> Any:
    try:
        import docker

        client = docker.from_env()
        client.ping()
        return client
    except Exception as exc:  # docker raises DockerException, requests and urllib3 errors
        raise ToolError(f"no Docker engine answers ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:160] if str(exc) else 'no detail'}); start "
                        "dockerd or set DOCKER_HOST") from None


def build_image(context: Path, spec: ImageSpec, model_sha256: str,
                client: Any = None) -> BuiltImage:
    import docker

    client = client or docker_client()
    try:
        client.images.get(spec.base_image)
    except docker.errors.ImageNotFound:
        raise ToolError(f"base image {spec.base_image} is not on this Docker engine (no registry "
                        "is reachable: build it locally, e.g. with .ci/provision)") from None
    except docker.errors.APIError as exc:
        raise ToolError(f"docker: {exc.explanation or exc}") from None
    try:
        image, _logs = client.images.build(path=str(context), tag=spec.ref, network_mode="host",
                                           rm=True, forcerm=True, pull=False)
    except docker.errors.BuildError as exc:
        lines = [str(c.get("stream") or c.get("error") or "").strip() for c in exc.build_log]
        tail = " | ".join(x for x in lines if x)[-400:]
        raise ToolError(f"docker build of {spec.ref} failed: {exc.msg}; {tail}") from None
    except docker.errors.APIError as exc:
        raise ToolError(f"docker build of {spec.ref} failed: {exc.explanation or exc}") from None
    size = int(image.attrs.get("Size") or 0)
    return BuiltImage(ref=spec.ref, id=str(image.id), size_bytes=size, model_sha256=model_sha256)


def push_image(spec: ImageSpec, built: BuiltImage, client: Any = None) -> BuiltImage:
    """Push to the registry the image name points at; the result carries its manifest digest."""
    import docker

    client = client or docker_client()
    try:
        for line in client.images.push(spec.name, tag=spec.tag, stream=True, decode=True):
            if isinstance(line, dict) and line.get("error"):
                raise ToolError(f"docker push {spec.ref} failed: {line['error']}")
        image = client.images.get(spec.ref)
    except docker.errors.APIError as exc:
        raise ToolError(f"docker push {spec.ref} failed: {exc.explanation or exc}") from None
    prefix = spec.name + "@"
    digests = [d for d in image.attrs.get("RepoDigests") or [] if d.startswith(prefix)]
    if not digests:
        raise ToolError(f"docker push {spec.ref}: the engine reports no digest for {spec.name}")
    return replace(built, repo_digest=digests[0].removeprefix(prefix))


def write_record(out_dir: Path, built: BuiltImage, spec: ImageSpec) -> Path:
    """``image.json``: what ``deploy render`` pins the manifests of this model to."""
    path = out_dir / IMAGE_RECORD
    reference = ImageReference(spec.name, spec.tag, built.repo_digest)
    atomic_write_json(path, {**built.to_json(), "name": spec.name, "tag": spec.tag,
                             "reference": str(reference), "model_digest": spec.model_digest,
                             "base_image": spec.base_image, "user": spec.user,
                             "uid": spec.uid, "port": spec.port,
                             "context": str(out_dir / CONTEXT_DIR)})
    return path
