"""DSSE encoding and ed25519 signatures, against the spec's example."""

from __future__ import annotations

from pathlib import Path

import pytest

from ci_ml.attest import dsse
from ci_ml.attest.interface import KeyFileError
from ci_ml.attest.keys import generate_keypair, load_private_key, load_public_key


def test_pae_matches_the_dsse_spec_example() -> None:
    # https://github.com/secure-systems-lab/dsse/blob/master/protocol.md#test-case
    assert dsse.pae("http://example.com/HelloWorld", b"hello world") == \
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"


def test_sign_verify_round_trip_and_tamper(tmp_path: Path) -> None:
    public_path, keyid = generate_keypair(tmp_path / "k.pem")
    signer = load_private_key(tmp_path / "k.pem")
    verifier = load_public_key(public_path)
    assert signer.keyid == verifier.keyid == keyid
    env = dsse.sign("application/vnd.in-toto+json", b'{"a":1}', [signer])
    back = dsse.Envelope.from_bytes(env.to_bytes())
    assert back == env and dsse.verify(back, verifier)
    assert not dsse.verify(dsse.Envelope(env.payload_type, b'{"a":2}', env.signatures), verifier)
    # The payload type is signed too.
    assert not dsse.verify(dsse.Envelope("text/plain", env.payload, env.signatures), verifier)
    assert repr(signer) == f"Ed25519Signer(keyid={keyid})"  # no key material in reprs


def test_wrong_key_types_are_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "ec.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    with pytest.raises(KeyFileError, match="must be ed25519"):
        load_private_key(tmp_path / "ec.pem")
    with pytest.raises(KeyFileError, match="not found"):
        load_public_key(tmp_path / "missing.pub")


def test_garbage_is_not_an_envelope() -> None:
    from ci_ml.errors import InputError

    with pytest.raises(InputError, match="not a DSSE envelope"):
        dsse.Envelope.from_bytes(b'{"payload": "!!!", "payloadType": "x"}')


def test_a_missing_signing_key_says_where_ci_gets_it(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The first push after `ci-ml init`: the private key is git-ignored, so the job has none."""
    monkeypatch.delenv("CI_ML_SIGNING_KEY", raising=False)
    with pytest.raises(KeyFileError, match=r"signing\.pem: signing key not found .*secret "
                                           r"CI_ML_SIGNING_KEY"):
        load_private_key(tmp_path / "signing.pem")
    # A path the CI system handed over that is missing is just that: not found.
    monkeypatch.setenv("CI_ML_SIGNING_KEY", str(tmp_path / "handed.pem"))
    with pytest.raises(KeyFileError, match=r"handed\.pem: signing key not found$"):
        load_private_key(tmp_path / "handed.pem")
