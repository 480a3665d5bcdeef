"""Whom the registry trusts: must events be signed, by which key, and who signs new ones.

Signing is required unless the config opts out (``registry.signing: off``). A key the
CI environment hands over (``CI_ML_SIGNING_KEY``, ``CI_ML_VERIFY_KEY``) makes it
required whatever the config says: the config is part of the change under review, the
CI system's secrets and protected variables are not, so a change cannot switch
verification off where the CI system has a key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ci_ml.attest.interface import KeyFileError, Signer, Verifier
from ci_ml.attest.keys import (
    SIGNING_KEY_ENV,
    VERIFY_KEY_ENV,
    configured_signer,
    configured_verifier,
    keys_from_environment,
    load_public_key,
)
from ci_ml.config import Config

SIGNING_REQUIRED = "required"
SIGNING_OFF = "off"


@dataclass(frozen=True)
class Trust:
    required: bool                  # every event must carry a valid signature
    verifier: Verifier | None       # the key events are checked against
    signer: Signer | None = None    # signs new events (writers only)
    project: str | None = None      # events name their project: no splicing across projects
    reason: str = ""                # why signing is (not) required, for messages

    @property
    def mode(self) -> str:
        return SIGNING_REQUIRED if self.required else SIGNING_OFF

    def check_writer(self) -> None:
        """Before anything is written: a required signature needs a key to make it."""
        if self.required and self.signer is None:
            raise KeyFileError(
                f"no signing key: promotions must be signed ({self.reason}); give the key "
                f"in registry.signing_key or {SIGNING_KEY_ENV} (make one with `ci-ml registry "
                "keygen`), or opt out with registry.signing: off")


def configured_trust(config: Config, *, write: bool = False,
                     explicit_key: Path | None = None) -> Trust:
    section = config.section("registry")
    from_env = keys_from_environment()
    required = section.get("signing", SIGNING_REQUIRED) == SIGNING_REQUIRED or from_env
    if from_env:
        reason = f"the CI environment gives a key ({SIGNING_KEY_ENV} or {VERIFY_KEY_ENV})"
    elif required:
        reason = "registry.signing: required"
    else:
        reason = "registry.signing: off"
    signer = configured_signer(config) if write else None
    verifier = configured_verifier(config, explicit_key)
    if signer is not None:
        # The repository's public key must be the signer's: otherwise the gate (which reads
        # the repository's key) and promote (which signs) would trust different histories.
        configured = section.get("verify_key")
        if configured:
            path = config.resolve(str(configured))
            _same_key(signer, load_public_key(path), f"registry.verify_key {path}")
        if verifier is not None:
            _same_key(signer, verifier, "the verification key")
    return Trust(required=required, verifier=verifier, signer=signer,
                 project=config.project_name, reason=reason)


def _same_key(signer: Signer, verifier: Verifier, where: str) -> None:
    if signer.keyid != verifier.keyid:
        raise KeyFileError(f"{where} ({verifier.keyid}) is not the public key of the signing "
                           f"key ({signer.keyid})")
