"""Value types of attestation: signers, verifiers, and the result of a verification."""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass

from ci_ml.errors import ConfigError

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
# One statement per registry event (promotion or rollback); v2 links each to the one before.
PREDICATE_TYPE = "https://ci-ml.invalid/attestation/registry-event/v2"


class KeyFileError(ConfigError):
    """A signing or verification key is missing, unreadable or not an ed25519 key (exit 2).

    Messages name the key's path, never its contents."""


class Signer(ABC):
    @property
    @abstractmethod
    def keyid(self) -> str: ...

    @abstractmethod
    def sign(self, message: bytes) -> bytes: ...


class Verifier(ABC):
    @property
    @abstractmethod
    def keyid(self) -> str: ...

    @abstractmethod
    def verify(self, signature: bytes, message: bytes) -> bool: ...


class CheckStatus(enum.Enum):
    OK = "ok"
    FAIL = "FAIL"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Check:
    name: str
    status: CheckStatus
    detail: str


@dataclass(frozen=True)
class Verification:
    """The checks of one attested promotion."""

    target: str
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.status is not CheckStatus.FAIL for c in self.checks)

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.status is CheckStatus.FAIL)
