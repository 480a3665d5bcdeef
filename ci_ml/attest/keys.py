"""ed25519 keys from PEM files. Errors name the file, never its contents.

The private key comes from a path: ``CI_ML_SIGNING_KEY`` (env) overrides
``registry.signing_key`` (config). A passphrase, if the PEM is encrypted, comes
from ``CI_ML_SIGNING_KEY_PASSWORD``. The public key for verification comes from
``--key``, ``CI_ML_VERIFY_KEY`` (a path, or the PEM itself), the public half of a
signing key given by the environment, ``registry.verify_key``, or is derived from
the configured signing key.

The environment is the CI system's (its secrets and protected variables); the
config is the repository's, which the change under review may edit. So a key the
environment gives outranks the config, and when both a signing key and a public key
are known they must be one key pair.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ci_ml.attest.interface import KeyFileError, Signer, Verifier
from ci_ml.config import Config

SIGNING_KEY_ENV = "CI_ML_SIGNING_KEY"
SIGNING_PASSWORD_ENV = "CI_ML_SIGNING_KEY_PASSWORD"  # noqa: S105 - the name of a variable
VERIFY_KEY_ENV = "CI_ML_VERIFY_KEY"


def keyid_of(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()[:32]


class Ed25519Signer(Signer):
    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    @property
    def keyid(self) -> str:
        return keyid_of(self._key.public_key())

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def verifier(self) -> Ed25519Verifier:
        return Ed25519Verifier(self._key.public_key())

    def public_pem(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def __repr__(self) -> str:  # never show key material, even in a traceback
        return f"Ed25519Signer(keyid={self.keyid})"


class Ed25519Verifier(Verifier):
    def __init__(self, key: Ed25519PublicKey) -> None:
        self._key = key

    @property
    def keyid(self) -> str:
        return keyid_of(self._key)

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


def _read(path: Path, what: str, missing_hint: str = "") -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise KeyFileError(f"{path}: {what} not found{missing_hint}") from exc
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read {what}: {exc.strerror}") from exc


def load_private_key(path: Path) -> Ed25519Signer:
    # The usual first failure in CI: the key `ci-ml init` made is git-ignored, so the job's
    # checkout has no copy until the CI system hands one over.
    hint = "" if os.environ.get(SIGNING_KEY_ENV) else (
        f" (it is git-ignored: in CI, store it as the secret {SIGNING_KEY_ENV}, a File "
        "variable on GitLab)")
    data = _read(path, "signing key", hint)
    password = os.environ.get(SIGNING_PASSWORD_ENV)
    try:
        key = serialization.load_pem_private_key(
            data, password=password.encode() if password else None)
    except TypeError as exc:
        # Encrypted without a passphrase, or a passphrase for an unencrypted key.
        raise KeyFileError(f"{path}: signing key is encrypted; set {SIGNING_PASSWORD_ENV}"
                        if not password else f"{path}: signing key is not encrypted; "
                        f"unset {SIGNING_PASSWORD_ENV}") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"{path}: not a PEM private key (or wrong passphrase)") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: signing key must be ed25519, got {type(key).__name__}")
    return Ed25519Signer(key)


def load_public_key(path: Path) -> Ed25519Verifier:
    return _public_key(_read(path, "public key"), str(path))


def _public_key(data: bytes, where: str) -> Ed25519Verifier:
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"{where}: not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{where}: public key must be ed25519, got {type(key).__name__}")
    return Ed25519Verifier(key)


def key_is_exposed(path: Path) -> bool:
    """True if group or others may read the private key file."""
    try:
        return bool(path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))
    except OSError:
        return False


def signing_key_path(config: Config) -> Path | None:
    env = os.environ.get(SIGNING_KEY_ENV)
    if env:
        return Path(env)
    configured = config.section("registry")["signing_key"]
    return config.resolve(str(configured)) if configured else None


def configured_signer(config: Config) -> Ed25519Signer | None:
    path = signing_key_path(config)
    return load_private_key(path) if path else None


def env_verifier() -> Ed25519Verifier | None:
    """The public key the CI environment names: ``CI_ML_VERIFY_KEY`` (a path or the PEM)."""
    env = os.environ.get(VERIFY_KEY_ENV, "").strip()
    if not env:
        return None
    if env.startswith("-----BEGIN"):
        return _public_key(env.encode(), f"${VERIFY_KEY_ENV}")
    return load_public_key(Path(env))


def keys_from_environment() -> bool:
    """True when the CI environment hands ci-ml a key: then signatures are required."""
    return bool(os.environ.get(SIGNING_KEY_ENV) or os.environ.get(VERIFY_KEY_ENV, "").strip())


def configured_verifier(config: Config, explicit: Path | None) -> Ed25519Verifier | None:
    """The key the registry's history must be signed with (None: no key known).

    In order: ``--key``, ``CI_ML_VERIFY_KEY``, the public half of ``CI_ML_SIGNING_KEY``
    (both from the CI system), ``registry.verify_key``, the public half of
    ``registry.signing_key`` (both from the repository)."""
    if explicit is not None:
        return load_public_key(explicit)
    from_env = env_verifier()
    if from_env is not None:
        return from_env
    if os.environ.get(SIGNING_KEY_ENV):
        return load_private_key(Path(os.environ[SIGNING_KEY_ENV])).verifier()
    configured = config.section("registry")["verify_key"]
    if configured:
        return load_public_key(config.resolve(str(configured)))
    signer = configured_signer(config)
    return signer.verifier() if signer else None


def generate_keypair(private_path: Path) -> tuple[Path, str]:
    """Write a new ed25519 key (PKCS8 PEM, mode 0600) and its public key beside it (.pub)."""
    if private_path.exists():
        raise KeyFileError(f"{private_path}: already exists; refusing to overwrite a key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub = Ed25519Signer(key).public_pem()
    private_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise KeyFileError(f"{private_path}: cannot create key file: {exc.strerror}") from exc
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public_path = private_path.with_name(private_path.name + ".pub")
    public_path.write_bytes(pub)
    return public_path, keyid_of(key.public_key())
