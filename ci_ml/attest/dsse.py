"""DSSE envelopes (https://github.com/secure-systems-lab/dsse): sign the payload's PAE.

The signature covers ``PAE(payloadType, payload)``, never a re-serialization of
JSON, so a verifier checks exactly the bytes that were signed.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass

from ci_ml.attest.interface import Signer, Verifier
from ci_ml.errors import InputError


def pae(payload_type: str, payload: bytes) -> bytes:
    """Pre-Authentication Encoding, DSSE v1."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


@dataclass(frozen=True)
class Signature:
    keyid: str
    sig: bytes


@dataclass(frozen=True)
class Envelope:
    payload_type: str
    payload: bytes
    signatures: tuple[Signature, ...] = ()

    def to_bytes(self) -> bytes:
        doc = {
            "payloadType": self.payload_type,
            "payload": base64.b64encode(self.payload).decode("ascii"),
            "signatures": [{"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode("ascii")}
                           for s in self.signatures],
        }
        return (json.dumps(doc, indent=2) + "\n").encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> Envelope:
        try:
            doc = json.loads(data)
            sigs = tuple(Signature(str(s.get("keyid", "")),
                                   base64.b64decode(s["sig"], validate=True))
                         for s in doc.get("signatures", ()))
            return cls(str(doc["payloadType"]), base64.b64decode(doc["payload"], validate=True),
                       sigs)
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
            raise InputError(f"not a DSSE envelope: {exc}") from exc


def sign(payload_type: str, payload: bytes, signers: Sequence[Signer]) -> Envelope:
    message = pae(payload_type, payload)
    return Envelope(payload_type, payload,
                    tuple(Signature(s.keyid, s.sign(message)) for s in signers))


def verify(envelope: Envelope, verifier: Verifier) -> bool:
    """True if some signature in the envelope is a valid one by ``verifier``'s key."""
    message = pae(envelope.payload_type, envelope.payload)
    return any(verifier.verify(s.sig, message) for s in envelope.signatures
               if not s.keyid or s.keyid == verifier.keyid)
