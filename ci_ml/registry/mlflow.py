"""The MLflow backend: the registry in an MLflow tracking server's model registry.

- Each ci-ml version is an MLflow model version of the registered model (tags
  ``ci_ml.version``, ``ci_ml.digest``), whose source is a run (in the experiment
  ``ci-ml/<model>``) holding the model files under ``model/``.
- Each event's signed envelope is a tag of its version, ``ci_ml.event.<seq:06d>`` (the
  envelope itself, or ``artifact:<sha256>`` past MLflow's 100,000-character limit), and
  an artifact of the version's run, ``attestations/<seq:06d>.dsse.json``; the event's
  evidence is stored under ``evidence/<sha256>`` in the same run.
- Stages are the registered model's aliases ``staging`` and ``production``, moved by
  promote and rollback; ci-ml derives the stages from the verified events, never from
  the aliases.
- The lock is a registered model ``<model>.ci-ml-lock``: creating a registered model
  is atomic in MLflow's store (a unique name), so exactly one writer creates it; it is
  created and removed by single, never retried requests, and removed only by the
  writer whose token it carries (or after the lease, when that writer died).

Credentials are MLflow's own (``MLFLOW_TRACKING_USERNAME``/``PASSWORD``/``TOKEN``).
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from ci_ml.errors import ToolError
from ci_ml.fsutil import sha256_bytes
from ci_ml.registry.interface import (
    STAGES,
    BlobRef,
    NewEvent,
    RegistryBackend,
    RegistryError,
    RegistryState,
    StoredEvent,
    Upload,
)

EVENT_TAG = re.compile(r"^ci_ml\.event\.(\d{6,})$")
LOCK_SUFFIX = ".ci-ml-lock"
MAX_TAG_VALUE = 100_000


@dataclass(frozen=True)
class Staged:
    upload: Upload
    run_id: str | None          # a fresh run holding a new model's files (None: known model)


class MlflowBackend(RegistryBackend):
    name = "mlflow"

    def __init__(self, tracking_uri: str, model_name: str, *, lock_timeout_s: float = 60.0) -> None:
        # MLflow logs progress at INFO on the root handler: keep ci-ml's output its own.
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        self.uri = tracking_uri.rstrip("/")
        self.model = model_name
        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        self.lock_timeout_s = lock_timeout_s

    @property
    def location(self) -> str:
        return f"mlflow+{self.uri}#{self.model}"

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS"):
                raise
            raise ToolError(f"{self.location}: {what} failed: {exc.error_code}") from exc
        except OSError as exc:
            raise ToolError(f"{self.location}: {what} failed: {type(exc).__name__}") from exc

    # ------------------------------------------------------------------ reading

    def _versions(self) -> list[Any]:
        try:
            found = self._call("listing model versions", self.client.search_model_versions,
                               f"name='{self.model}'")
        except MlflowException:
            return []
        return list(found)

    def _version_by_number(self, number: int) -> Any:
        for mv in self._versions():
            if mv.tags.get("ci_ml.version") == str(number):
                return mv
        raise RegistryError(f"{self.location}: no model version tagged ci_ml.version={number}")

    def _download(self, run_id: str, path: str) -> Path:
        dest = Path(tempfile.mkdtemp(dir=self.scratch()))
        try:
            got = self._call(f"downloading {path}", self.client.download_artifacts, run_id,
                             path, str(dest))
        except MlflowException as exc:
            raise RegistryError(f"{self.location}: {path} is missing from run {run_id}") from exc
        return Path(got)

    def read_events(self) -> list[StoredEvent]:
        slots: list[tuple[int, str, str, str]] = []
        for mv in self._versions():
            for key, value in mv.tags.items():
                if (match := EVENT_TAG.match(key)) and mv.run_id:
                    slots.append((int(match.group(1)), mv.run_id, mv.version, str(value)))
        events = []
        for seq, run_id, mlflow_version, value in sorted(slots):
            path = f"attestations/{seq:06d}.dsse.json"
            if value.startswith("{"):
                data = value.encode("utf-8")     # the envelope itself: one search reads all
            else:
                try:
                    data = self._download(run_id, path).read_bytes()
                except RegistryError:
                    data = b""         # tagged but missing: verification names the event
            events.append(StoredEvent(f"models:/{self.model}/{mlflow_version}#{path}", data))
        return events

    def fetch(self, ref: BlobRef) -> Path:
        run_id = self._version_by_number(ref.version).run_id
        path = f"evidence/{ref.sha256}" if ref.seq is not None else f"model/{ref.name}"
        return self._download(run_id, path)

    # ------------------------------------------------------------------ writing

    def _experiment(self) -> str:
        name = f"ci-ml/{self.model}"
        exp = self._call("reading the experiment", self.client.get_experiment_by_name, name)
        if exp is not None:
            return str(exp.experiment_id)
        try:
            return str(self._call("creating the experiment", self.client.create_experiment, name))
        except MlflowException:          # created by a concurrent writer
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise ToolError(f"{self.location}: cannot create the experiment {name}") from None
            return str(exp.experiment_id)

    def upload(self, upload: Upload) -> object:
        known = [mv for mv in self._versions() if mv.tags.get("ci_ml.digest") == upload.digest]
        if known:
            return Staged(upload, None)
        run = self._call("creating a run", self.client.create_run, self._experiment(),
                         run_name=f"{self.model} {upload.digest[7:19]}",
                         tags={"ci_ml.digest": upload.digest})
        for name, (path, _) in upload.files.items():
            self._log(run.info.run_id, path, name, "model")
        return Staged(upload, run.info.run_id)

    def _log(self, run_id: str, path: Path, name: str, folder: str) -> None:
        if path.name != name:
            named = Path(tempfile.mkdtemp(dir=self.scratch())) / name
            shutil.copyfile(path, named)
            path = named
        self._call(f"uploading {name}", self.client.log_artifact, run_id, str(path), folder)

    def write_event(self, event: NewEvent, staged: object | None) -> str:
        if event.new_version:
            assert isinstance(staged, Staged) and staged.run_id is not None
            self._ensure_model()
            mv = self._call("creating the model version", self.client.create_model_version,
                            self.model, f"runs:/{staged.run_id}/model", run_id=staged.run_id,
                            tags={"ci_ml.version": str(event.version.version),
                                  "ci_ml.digest": event.version.digest},
                            await_creation_for=0)
        else:
            mv = self._version_by_number(event.version.version)
            if isinstance(staged, Staged) and staged.run_id is not None:
                # Lost a race to register the same model: its run stays unused.
                self._call("deleting an unused run", self.client.delete_run, staged.run_id)
        run_id = mv.run_id
        if isinstance(staged, Staged):
            for _, (path, sha) in sorted(staged.upload.evidence.items()):
                self._log(run_id, path, sha, "evidence")
        name = f"{event.seq:06d}.dsse.json"
        envelope = self.scratch() / name
        envelope.write_bytes(event.envelope)
        self._call("uploading the event", self.client.log_artifact, run_id, str(envelope),
                   "attestations")
        # The tag holds the envelope itself when it fits (MLflow allows 100,000 characters),
        # so reading the history is one search; the artifact is the copy for people.
        text = event.envelope.decode("utf-8")
        value = text if len(text) <= MAX_TAG_VALUE else f"artifact:{sha256_bytes(event.envelope)}"
        self._call("tagging the event", self.client.set_model_version_tag, self.model,
                   mv.version, f"ci_ml.event.{event.seq:06d}", value)
        return f"models:/{self.model}/{mv.version}#attestations/{name}"

    def _ensure_model(self) -> None:
        try:
            self._call("creating the registered model", self.client.create_registered_model,
                       self.model, description="Model versions promoted by ci-ml: the signed "
                       "history is in each version's attestations/ artifacts.")
        except MlflowException:
            pass                          # exists

    def publish(self, state: RegistryState) -> None:
        for stage in STAGES:
            record = state.current(stage)
            if record is not None:
                mv = self._version_by_number(record.version)
                self._call(f"moving the {stage} alias", self.client.set_registered_model_alias,
                           self.model, stage, mv.version)

    # ------------------------------------------------------------------ the lock

    def _lock_call(self, method: str, endpoint: str, body: dict[str, Any]) -> Any:
        """One REST call, never retried: a retried DELETE that had already succeeded
        would remove the next holder's lock (seen under load)."""
        from mlflow.utils.rest_utils import MlflowHostCreds, http_request

        creds = MlflowHostCreds(self.uri, username=os.environ.get("MLFLOW_TRACKING_USERNAME"),
                                password=os.environ.get("MLFLOW_TRACKING_PASSWORD"),
                                token=os.environ.get("MLFLOW_TRACKING_TOKEN"))
        args: dict[str, Any] = {"params": body} if method == "GET" else {"json": body}
        try:
            return http_request(creds, f"/api/2.0/mlflow/registered-models/{endpoint}", method,
                                max_retries=0, raise_on_status=False, **args)
        except (MlflowException, OSError) as exc:
            raise ToolError(f"{self.location}: the registry lock ({endpoint}) failed: "
                            f"{type(exc).__name__}") from exc

    def _holder_of(self, name: str) -> dict[str, str] | None:
        response = self._lock_call("GET", "get", {"name": name})
        if response.status_code != 200:
            return None
        tags = response.json().get("registered_model", {}).get("tags") or []
        return {str(t.get("key")): str(t.get("value")) for t in tags}

    @contextmanager
    def lock(self) -> Iterator[None]:
        name = self.model + LOCK_SUFFIX
        token = uuid.uuid4().hex
        holder = f"{os.environ.get('USER', 'ci-ml')}@{socket.gethostname()}:{os.getpid()}"
        deadline = time.monotonic() + self.lock_timeout_s
        pause = 0.05
        while True:
            response = self._lock_call("POST", "create", {
                "name": name, "description": "ci-ml's registry lock: held while a promotion "
                "writes", "tags": [{"key": "ci_ml.lock.token", "value": token},
                                   {"key": "ci_ml.lock.holder", "value": holder},
                                   {"key": "ci_ml.lock.created", "value": str(time.time())}]})
            if response.status_code == 200:
                break
            held = self._holder_of(name)
            if held is not None and time.time() - float(
                    held.get("ci_ml.lock.created") or time.time()) > self.lock_timeout_s:
                self._lock_call("DELETE", "delete", {"name": name})   # a writer that died
            if time.monotonic() > deadline:
                who = (held or {}).get("ci_ml.lock.holder", "another writer")
                raise ToolError(f"{self.location}: registry is locked by {who} for more "
                                f"than {self.lock_timeout_s:.0f}s")
            time.sleep(random.uniform(pause / 2, pause))   # noqa: S311 - jitter, not crypto
            pause = min(pause * 1.5, 1.0)
        try:
            yield
        finally:
            held = self._holder_of(name)
            if held is not None and held.get("ci_ml.lock.token") == token:
                self._lock_call("DELETE", "delete", {"name": name})
