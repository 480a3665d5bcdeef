"""The OCI backend: the registry in an OCI repository (GHCR, GitLab's registry, CNCF
distribution, ...), through the ``oras`` client.

Layout in one repository::

    v<n>              a model version: an OCI artifact (artifactType
                      application/vnd.ci-ml.model.v1) whose layers are the model files,
                      its card, metrics.json and the training run manifest, each with
                      its own media type, pushed by digest
    event-<seq:06d>   an event: artifactType application/vnd.dsse.envelope.v1+json, the
                      signed envelope and the promotion's evidence as layers, and the
                      version's manifest as its ``subject``: the attestations are
                      referrers of the model artifact (also listed under the
                      referrers tag sha256-<hex> for registries without the referrers API)
    staging, production   tags moved to the version a stage holds, by promote/rollback
    lock-<token>      a writer's claim on the lock (see ``TagLock``)

ci-ml reads the history from the event tags and verifies it; the stage tags are
written for other tools (``oras pull REPO:production``, KServe) and never trusted.
Credentials: ``CI_ML_OCI_USERNAME``/``CI_ML_OCI_PASSWORD``, else GitLab's
``CI_REGISTRY_USER``/``CI_REGISTRY_PASSWORD`` for ``CI_REGISTRY``, else the Docker
config; never printed. Loopback registries are spoken to over HTTP, like Docker does.
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ci_ml.errors import ToolError
from ci_ml.fsutil import sha256_bytes, sha256_file
from ci_ml.registry.interface import (
    STAGES,
    BlobRef,
    NewEvent,
    RegistryBackend,
    RegistryError,
    RegistryState,
    RegistryTampered,
    StoredEvent,
    Upload,
    VersionRecord,
)

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_BYTES = b"{}"
MODEL_ARTIFACT = "application/vnd.ci-ml.model.v1"
ENVELOPE = "application/vnd.dsse.envelope.v1+json"
LOCK_ARTIFACT = "application/vnd.ci-ml.lock.v1"
TITLE = "org.opencontainers.image.title"
# The layers' own media types: a reader can pick the ONNX graph without reading names.
MEDIA_TYPES: Mapping[str, str] = {
    "model.onnx": "application/vnd.ci-ml.model.onnx.v1",
    "model.onnx.data": "application/vnd.ci-ml.model.onnx-data.v1",
    "model.json": "application/vnd.ci-ml.model.card.v1+json",
    "model.safetensors": "application/vnd.ci-ml.model.safetensors.v1",
    "metrics.json": "application/vnd.ci-ml.metrics.v1+json",
    "train-run.json": "application/vnd.ci-ml.run-manifest.v1+json",
}
EVIDENCE = "application/vnd.ci-ml.evidence.v1+json"
# Evidence of the event that creates a version that also describes the version itself.
VERSION_EVIDENCE = ("metrics.json", "train-run.json")
EVENT_TAG = re.compile(r"^event-(\d{6,})$")
LOCK_TAG = re.compile(r"^lock-[0-9a-f]{32}$")
LOOPBACK = ("localhost", "127.", "[::1]")


def _descriptor(media_type: str, data_digest: str, size: int,
                title: str | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"mediaType": media_type, "digest": data_digest, "size": size}
    if title:
        d["annotations"] = {TITLE: title}
    return d


def _manifest(artifact_type: str, layers: list[dict[str, Any]],
              annotations: Mapping[str, str], subject: dict[str, Any] | None = None) -> bytes:
    doc: dict[str, Any] = {
        "schemaVersion": 2, "mediaType": MANIFEST, "artifactType": artifact_type,
        "config": _descriptor(EMPTY, "sha256:" + sha256_bytes(EMPTY_BYTES), len(EMPTY_BYTES)),
        "layers": layers or [_descriptor(EMPTY, "sha256:" + sha256_bytes(EMPTY_BYTES),
                                         len(EMPTY_BYTES))],
        "annotations": dict(annotations)}
    if subject:
        doc["subject"] = subject
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def parse_reference(ref: str) -> tuple[str, str]:
    """``[oci://]host[:port]/path`` -> (host, repository path)."""
    text = ref.removeprefix("oci://").strip("/")
    host, _, repo = text.partition("/")
    repo = repo.lower()    # OCI names are lower-case; GitHub owners and repositories may not be
    if not host or not repo or not re.fullmatch(r"[a-z0-9]+(?:[._/-][a-z0-9]+)*", repo):
        raise RegistryError(f"registry reference {ref!r}: expected [oci://]HOST/REPOSITORY "
                            "(lower-case path)")
    return host, repo


def _credentials(host: str) -> tuple[str, str] | None:
    user, password = os.environ.get("CI_ML_OCI_USERNAME"), os.environ.get("CI_ML_OCI_PASSWORD")
    if user and password:
        return user, password
    gitlab = os.environ.get("CI_REGISTRY", "")
    if gitlab and gitlab == host and os.environ.get("CI_REGISTRY_PASSWORD"):
        return os.environ.get("CI_REGISTRY_USER", "gitlab-ci-token"), \
            os.environ["CI_REGISTRY_PASSWORD"]
    return None


@dataclass(frozen=True)
class Staged:
    upload: Upload
    descriptors: Mapping[str, dict[str, Any]]   # file name -> layer descriptor


class OciBackend(RegistryBackend):
    name = "oci"

    def __init__(self, reference: str, *, insecure: bool = False,
                 lock_timeout_s: float = 60.0) -> None:
        import oras.provider

        self.host, self.repo = parse_reference(reference)
        plain = insecure or self.host.startswith(LOOPBACK)
        self.client = oras.provider.Registry(hostname=self.host, insecure=plain)
        creds = _credentials(self.host)
        if creds:
            self.client.auth.set_basic_auth(*creds)
        else:
            self.client.auth.load_configs(self.client.get_container(self._ref("x")))
        self.base = f"{'http' if plain else 'https'}://{self.host}/v2/{self.repo}"
        self.lock_timeout_s = lock_timeout_s
        self._blobs: dict[str, bytes] = {}      # immutable by digest: safe to keep
        self._empty_pushed = False

    @property
    def location(self) -> str:
        return f"oci://{self.host}/{self.repo}"

    def _ref(self, tag: str) -> str:
        return f"{self.host}/{self.repo}:{tag}"

    # ------------------------------------------------------------------ HTTP

    def _request(self, method: str, url: str, what: str, **kwargs: Any) -> Any:
        try:
            response = self.client.do_request(url, method, **kwargs)
        except (OSError, ValueError) as exc:   # requests' errors are OSErrors
            raise ToolError(f"{self.location}: {what} failed: {type(exc).__name__}") from exc
        return response

    def _check(self, response: Any, what: str, ok: tuple[int, ...] = (200, 201, 202)) -> Any:
        if response.status_code not in ok:
            detail = ""
            try:
                errors = response.json().get("errors") or []
                detail = "; ".join(str(e.get("message", e.get("code"))) for e in errors)
            except ValueError:
                pass
            raise ToolError(f"{self.location}: {what}: HTTP {response.status_code}"
                            + (f" ({detail})" if detail else ""))
        return response

    def tags(self) -> list[str]:
        found: list[str] = []
        url = f"{self.base}/tags/list?n=1000"
        while url:
            response = self._request("GET", url, "listing tags")
            if response.status_code == 404:
                return []          # a repository nobody pushed to yet
            body = self._check(response, "listing tags").json()
            found += body.get("tags") or []
            link = response.headers.get("Link", "")
            match = re.match(r'<([^>]+)>', link)
            url = (f"{self.base.split('/v2/')[0]}{match.group(1)}" if match else "")
        return found

    def get_manifest(self, reference: str) -> tuple[bytes, str] | None:
        response = self._request("GET", f"{self.base}/manifests/{reference}",
                                 f"reading {reference}",
                                 headers={"Accept": f"{MANIFEST}, {INDEX}"})
        if response.status_code == 404:
            return None
        self._check(response, f"reading {reference}")
        digest = response.headers.get("Docker-Content-Digest") or \
            "sha256:" + sha256_bytes(response.content)
        return response.content, digest

    def put_manifest(self, reference: str, body: bytes, media_type: str = MANIFEST) -> str:
        for attempt in range(5):
            if media_type == MANIFEST and not self._empty_pushed:
                self.put_blob(None, EMPTY_BYTES, EMPTY)   # every manifest's config is this blob
                self._empty_pushed = True
            response = self._request("PUT", f"{self.base}/manifests/{reference}",
                                     f"pushing {reference}", data=body,
                                     headers={"Content-Type": media_type})
            # Writers that push the same blob at once can leave it unreadable for a moment
            # in distribution's filesystem storage ("blob unknown"): push it again.
            if response.status_code == 400 and attempt < 4 and b"BLOB_UNKNOWN" in \
                    response.content.upper().replace(b" ", b"_"):
                self._empty_pushed = False
                time.sleep(random.uniform(0.05, 0.3))   # noqa: S311 - jitter, not crypto
                continue
            break
        self._check(response, f"pushing {reference}")
        return "sha256:" + sha256_bytes(body)

    def delete_manifest(self, digest: str) -> bool:
        response = self._request("DELETE", f"{self.base}/manifests/{digest}", "deleting")
        return response.status_code in (200, 202)

    def get_blob(self, digest: str) -> bytes:
        if digest in self._blobs:
            return self._blobs[digest]
        response = self._request("GET", f"{self.base}/blobs/{digest}", f"reading {digest[:19]}")
        if response.status_code == 404:
            raise RegistryError(f"{self.location}: blob {digest[:19]} is not in the registry")
        data: bytes = self._check(response, f"reading blob {digest[:19]}").content
        if len(data) < 1 << 20:
            self._blobs[digest] = data
        return data

    def put_blob(self, path: Path | None, data: bytes | None, media_type: str,
                 title: str | None = None) -> dict[str, Any]:
        if path is not None:
            digest, size = "sha256:" + sha256_file(path), path.stat().st_size
        else:
            assert data is not None
            digest, size = "sha256:" + sha256_bytes(data), len(data)
        layer = _descriptor(media_type, digest, size, title)
        head = self._request("HEAD", f"{self.base}/blobs/{digest}", "checking a blob")
        if head.status_code == 200 and data != EMPTY_BYTES:
            return layer
        if path is None:
            tmp = self.scratch() / digest.removeprefix("sha256:")
            tmp.write_bytes(data or b"")
            path = tmp
        try:
            response = self.client.upload_blob(str(path), self.client.get_container(
                self._ref("x")), layer)
        except (OSError, ValueError) as exc:
            raise ToolError(f"{self.location}: pushing {title or digest[:19]} failed: "
                            f"{type(exc).__name__}") from exc
        self._check(response, f"pushing {title or digest[:19]}")
        return layer

    # ------------------------------------------------------------------ reading

    def _event_tags(self) -> list[str]:
        events = [(int(m.group(1)), t) for t in self.tags() if (m := EVENT_TAG.match(t))]
        return [t for _, t in sorted(events)]

    def read_events(self) -> list[StoredEvent]:
        out = []
        for tag in self._event_tags():
            found = self.get_manifest(tag)
            if found is None:
                continue                  # deleted between the listing and now
            body, digest = found
            try:
                manifest = json.loads(body)
                layer = next(la for la in manifest["layers"] if la["mediaType"] == ENVELOPE)
                envelope = self.get_blob(layer["digest"])
            except (ValueError, KeyError, TypeError, StopIteration):
                envelope = body          # not an event artifact: verification names it
            out.append(StoredEvent(f"{self.location}:{tag}@{digest}", envelope))
        return out

    def fetch(self, ref: BlobRef) -> Path:
        data = self.get_blob("sha256:" + ref.sha256)
        path = self.scratch() / f"{ref.sha256}-{ref.name}"
        path.write_bytes(data)
        return path

    # ------------------------------------------------------------------ writing

    def upload(self, upload: Upload) -> object:
        descriptors = {}
        for name, (path, _) in upload.files.items():
            descriptors[name] = self.put_blob(path, None, MEDIA_TYPES.get(name, EVIDENCE), name)
        for name, (path, _) in upload.evidence.items():
            descriptors[f"evidence/{name}"] = self.put_blob(
                path, None, MEDIA_TYPES.get(name, EVIDENCE), name)
        return Staged(upload, descriptors)

    def write_event(self, event: NewEvent, staged: object | None) -> str:
        version_tag = f"v{event.version.version}"
        subject = self._version_manifest(event, staged, version_tag)
        layers = [self.put_blob(None, event.envelope, ENVELOPE, f"{event.seq:06d}.dsse.json")]
        if isinstance(staged, Staged):
            layers += [d for n, d in sorted(staged.descriptors.items())
                       if n.startswith("evidence/")]
        tag = f"event-{event.seq:06d}"
        if self.get_manifest(tag) is not None:
            raise RegistryError(f"{self.location}: {tag} exists already (written outside "
                                "the registry lock?)")
        body = _manifest(ENVELOPE, layers, {
            "ci-ml.seq": str(event.seq), "ci-ml.action": event.entry.action.value,
            "ci-ml.stage": event.entry.stage, "ci-ml.version": str(event.version.version),
            "org.opencontainers.image.created": event.entry.at}, subject)
        digest = self.put_manifest(tag, body)
        self._add_referrer(subject["digest"], _descriptor(MANIFEST, digest, len(body)) |
                           {"artifactType": ENVELOPE})
        return f"{self.location}:{tag}@{digest}"

    def _version_manifest(self, event: NewEvent, staged: object | None,
                          tag: str) -> dict[str, Any]:
        """The version artifact's descriptor; pushed when the event creates the version."""
        if not event.new_version:
            found = self.get_manifest(tag)
            if found is None:
                raise RegistryError(f"{self.location}: {tag} is missing")
            return _descriptor(MANIFEST, found[1], len(found[0]))
        assert isinstance(staged, Staged)
        layers = [staged.descriptors[n] for n in sorted(event.version.files)]
        layers += [staged.descriptors[f"evidence/{n}"] for n in VERSION_EVIDENCE
                   if f"evidence/{n}" in staged.descriptors]
        body = _manifest(MODEL_ARTIFACT, layers, {
            "ci-ml.version": str(event.version.version), "ci-ml.digest": event.version.digest,
            "org.opencontainers.image.created": event.version.created_at})
        digest = self.put_manifest(tag, body)
        return _descriptor(MANIFEST, digest, len(body))

    def _add_referrer(self, subject: str, descriptor: dict[str, Any]) -> None:
        """The referrers tag schema (OCI distribution 1.1) for registries without the API."""
        tag = subject.replace(":", "-")
        found = self.get_manifest(tag)
        manifests = []
        if found is not None:
            try:
                manifests = list(json.loads(found[0]).get("manifests") or [])
            except ValueError:
                manifests = []
        manifests.append(descriptor)
        index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests}
        self.put_manifest(tag, json.dumps(index, sort_keys=True).encode(), INDEX)

    def artifact_reference(self, record: VersionRecord) -> str:
        """``HOST/REPO@sha256:...`` of version ``record``'s artifact, after checking that its
        layers are exactly the attested files (RegistryTampered otherwise)."""
        found = self.get_manifest(f"v{record.version}")
        if found is None:
            raise RegistryError(f"{self.location}: v{record.version} is missing")
        try:
            layers = {la["annotations"][TITLE]: la["digest"] for la in
                      json.loads(found[0])["layers"] if la["annotations"][TITLE] in
                      record.files}
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistryTampered(f"{self.location}: v{record.version} is not a ci-ml model "
                                   "artifact") from exc
        attested = {name: "sha256:" + sha for name, sha in record.files.items()}
        if layers != attested:
            raise RegistryTampered(f"{self.location}: the layers of v{record.version} differ "
                                   "from the files its signed history attests")
        return f"{self.host}/{self.repo}@{found[1]}"

    def publish(self, state: RegistryState) -> None:
        for stage in STAGES:
            record = state.current(stage)
            if record is None:
                continue
            found = self.get_manifest(f"v{record.version}")
            if found is not None:
                self.put_manifest(stage, found[0])

    # ------------------------------------------------------------------ the lock

    @contextmanager
    def lock(self) -> Iterator[None]:
        lock = TagLock(self, self.lock_timeout_s)
        lock.acquire()
        try:
            yield
        finally:
            lock.release()


class TagLock:
    """Mutual exclusion over a registry that offers no compare-and-swap.

    A writer waits until no live ``lock-*`` tag is listed, pushes a tag of its own,
    ``lock-<token>`` (a new token per attempt), then lists again: if its tag is the only
    live one, it holds the lock; otherwise it deletes its tag and retries after a random
    pause. Two writers cannot both see themselves alone: the one that lists second sees
    the other's tag, pushed before that listing. A tag older than the lease
    (``lock_timeout_s`` too: a writer that died) is ignored. No tag is ever rewritten and no
    two writers push the same manifest, because a registry's storage (distribution's
    filesystem driver) does not make rewrites atomic for concurrent readers. Where the
    registry refuses DELETE, a released tag is re-pointed at a "released" manifest."""

    def __init__(self, backend: OciBackend, timeout_s: float, lease_s: float | None = None) -> None:
        self.backend = backend
        self.timeout_s = timeout_s
        self.lease_s = timeout_s if lease_s is None else lease_s
        self.tag: str | None = None
        self.digest: str | None = None

    @staticmethod
    def _body(token: str, state: str) -> bytes:
        holder = f"{os.environ.get('USER', 'ci-ml')}@{socket.gethostname()}:{os.getpid()}"
        return _manifest(LOCK_ARTIFACT, [], {
            "ci-ml.lock": state, "ci-ml.lock.token": token, "ci-ml.lock.holder": holder,
            "ci-ml.lock.created": str(time.time())})

    def _drop(self, tag: str, digest: str) -> None:
        if not self.backend.delete_manifest(digest):
            self.backend.put_manifest(tag, self._body(tag.removeprefix("lock-"), "released"))

    def rivals(self, mine: str | None = None) -> list[str]:
        """Live lock tags of other writers: held, and younger than the lease."""
        live = []
        for tag in self.backend.tags():
            if tag == mine or not LOCK_TAG.match(tag):
                continue
            found = self.backend.get_manifest(tag)
            if found is None:
                continue                       # released meanwhile
            try:
                notes = json.loads(found[0]).get("annotations") or {}
                age = time.time() - float(notes.get("ci-ml.lock.created", "0"))
            except (ValueError, TypeError):
                continue
            if notes.get("ci-ml.lock") == "held" and age < self.lease_s:
                live.append(f"{notes.get('ci-ml.lock.holder', '?')} (for {age:.0f}s)")
        return live

    def acquire(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        pause = 0.1
        while True:
            rivals = self.rivals()
            if not rivals:
                tag = f"lock-{uuid.uuid4().hex}"
                digest = self.backend.put_manifest(tag, self._body(tag[5:], "held"))
                rivals = self.rivals(mine=tag)
                if not rivals:
                    self.tag, self.digest = tag, digest
                    return
                self._drop(tag, digest)
            if time.monotonic() > deadline:
                raise ToolError(f"{self.backend.location}: registry is locked by {rivals[0]} "
                                f"for more than {self.timeout_s:.0f}s")
            time.sleep(random.uniform(pause / 2, pause))   # noqa: S311 - jitter, not crypto
            pause = min(pause * 1.5, 1.0)

    def release(self) -> None:
        if self.tag and self.digest:
            self._drop(self.tag, self.digest)
        self.tag = self.digest = None
