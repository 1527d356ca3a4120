"""COSE_Sign1 (RFC 9052 §4.2) with Ed25519, over deterministic CBOR (RFC 8949 §4.2)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from station.errors import RecordError
from station.records.keys import kid_for, public_jwk

COSE_SIGN1_TAG = 18
HDR_ALG, HDR_KID = 1, 4
ALG_EDDSA = -8  # RFC 9864's -19 is more precise, but -8 is what verifiers accept today.


def dumps(obj: object) -> bytes:
    return cbor2.dumps(obj, canonical=True)


def _sig_structure(protected: bytes, payload: bytes) -> bytes:
    return dumps(["Signature1", protected, b"", payload])


class Signer:
    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = private_key.public_key()
        self.kid = kid_for(self.public_key)
        # The protected header never changes for one key, so encode it once.
        self._protected = dumps({HDR_ALG: ALG_EDDSA, HDR_KID: self.kid.encode()})

    def sign(self, payload: bytes) -> bytes:
        signature = self._key.sign(_sig_structure(self._protected, payload))
        return dumps(cbor2.CBORTag(COSE_SIGN1_TAG, [self._protected, {}, payload, signature]))

    def jwk(self) -> dict[str, str]:
        return public_jwk(self.public_key)


@dataclass(frozen=True)
class Verified:
    kid: str
    payload: bytes


def verify(data: bytes, keys: Mapping[str, Ed25519PublicKey]) -> Verified:
    """Check one COSE_Sign1 against the trusted keys (by kid). Raises RecordError."""
    try:
        obj = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several types on malformed input
        raise RecordError(f"not CBOR ({exc})", "the record is damaged; fetch it again from the station's outbox") from None
    if not isinstance(obj, cbor2.CBORTag) or obj.tag != COSE_SIGN1_TAG:
        raise RecordError("not a tagged COSE_Sign1 (tag 18)", "the record is damaged or not a station record")
    if not (isinstance(obj.value, list) and len(obj.value) == 4):
        raise RecordError("COSE_Sign1 is not a 4-element array", "the record is damaged")
    protected, _unprotected, payload, signature = obj.value
    if not all(isinstance(x, bytes) for x in (protected, payload, signature)):
        raise RecordError("COSE_Sign1 fields have wrong types", "the record is damaged")
    try:
        header = cbor2.loads(protected) if protected else {}
    except Exception:
        raise RecordError("protected header is not CBOR", "the record is damaged") from None
    if not isinstance(header, dict) or header.get(HDR_ALG) != ALG_EDDSA:
        raise RecordError("protected header does not declare EdDSA (alg -8)", "the record is damaged or forged")
    kid_raw = header.get(HDR_KID)
    kid = kid_raw.decode("utf-8", "replace") if isinstance(kid_raw, bytes) else None
    if kid is None or kid not in keys:
        raise RecordError(
            f"signed by unknown key {kid!r}",
            "pass the station's public key (`station keys public --jwk`) with --key; "
            "simulated records use the simulation key",
        )
    try:
        keys[kid].verify(signature, _sig_structure(protected, payload))
    except InvalidSignature:
        raise RecordError("signature does not match (record altered or forged)", "reject this record; report it") from None
    return Verified(kid=kid, payload=payload)
