"""COSE_Sign1 (RFC 9052 §4.2) with Ed25519, over deterministic CBOR (RFC 8949 §4.2).

A record's identity is its signed content (protected header, payload,
signature), never the bytes it arrived in: `Envelope.digest` is SHA-256 of
the deterministic encoding of that content with an empty unprotected header.
For every record a station emits the two are the same bytes, so `prev` in the
chain is the hash a consumer computes here.
"""

from __future__ import annotations

import hashlib
import io
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
_SIGN1_HEAD = b"\xd2\x84"  # tag 18, array of 4
_SIG1_CONTEXT = b"\x84\x6aSignature1"  # array of 4, text "Signature1"


def dumps(obj: object) -> bytes:
    return cbor2.dumps(obj, canonical=True)


def loads_exactly(data: bytes) -> object:
    """One CBOR item that fills `data` exactly (cbor2.loads alone ignores trailing bytes)."""
    fp = io.BytesIO(data)
    obj = cbor2.CBORDecoder(fp).decode()
    if fp.tell() != len(data):
        raise ValueError(f"{len(data) - fp.tell()} byte(s) after the CBOR item")
    if obj is cbor2.break_marker:
        raise ValueError("a lone break code")
    return obj


def _bstr_head(n: int) -> bytes:
    """The shortest CBOR head of a byte string of length n (major type 2)."""
    if n < 24:
        return bytes((0x40 + n,))
    if n < 0x100:
        return b"\x58" + n.to_bytes(1, "big")
    if n < 0x10000:
        return b"\x59" + n.to_bytes(2, "big")
    if n < 0x100000000:
        return b"\x5a" + n.to_bytes(4, "big")
    return b"\x5b" + n.to_bytes(8, "big")


def _bstr(b: bytes) -> bytes:
    return _bstr_head(len(b)) + b


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    # Concatenated by hand: the same bytes as dumps(["Signature1", protected, b"", payload]),
    # at a fraction of the cost (checked by a property test).
    return _SIG1_CONTEXT + _bstr(protected) + b"\x40" + _bstr(payload)


def encode_sign1(protected: bytes, payload: bytes, signature: bytes) -> bytes:
    """Deterministic COSE_Sign1_Tagged with an empty unprotected header."""
    return _SIGN1_HEAD + _bstr(protected) + b"\xa0" + _bstr(payload) + _bstr(signature)


class Signer:
    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = private_key.public_key()
        self.kid = kid_for(self.public_key)
        # The protected header never changes for one key, so encode it once.
        self._protected = dumps({HDR_ALG: ALG_EDDSA, HDR_KID: self.kid.encode()})

    def sign(self, payload: bytes) -> bytes:
        signature = self._key.sign(sig_structure(self._protected, payload))
        return encode_sign1(self._protected, payload, signature)

    def jwk(self) -> dict[str, str]:
        return public_jwk(self.public_key)


@dataclass(frozen=True, slots=True)
class Envelope:
    """A structurally valid COSE_Sign1 whose signature is not yet checked."""

    protected: bytes
    payload: bytes
    signature: bytes
    kid: str
    digest: bytes  # SHA-256 of the signed content, deterministically encoded


# Protected headers repeat (one per key), so decoding each once is enough.
_kid_cache: dict[bytes, str] = {}


def _kid_of(protected: bytes) -> str:
    kid = _kid_cache.get(protected)
    if kid is not None:
        return kid
    try:
        header = cbor2.loads(protected) if protected else {}
    except Exception:
        raise RecordError("protected header is not CBOR", "the record is damaged") from None
    if not isinstance(header, dict) or header.get(HDR_ALG) != ALG_EDDSA:
        raise RecordError("protected header does not declare EdDSA (alg -8)", "the record is damaged or forged")
    kid_raw = header.get(HDR_KID)
    if not isinstance(kid_raw, bytes):
        raise RecordError("protected header has no kid", "the record is damaged or not a station record")
    kid = kid_raw.decode("utf-8", "replace")
    if len(_kid_cache) < 256:
        _kid_cache[protected] = kid
    return kid


_MIN_FOR_HEAD = {24: (1, 24), 25: (2, 0x100), 26: (4, 0x10000), 27: (8, 0x100000000)}


def _take_bstr(data: bytes, pos: int) -> tuple[bytes, int] | None:
    """A byte string at `pos` in shortest form, or None."""
    if pos >= len(data) or data[pos] >> 5 != 2:
        return None
    ai = data[pos] & 31
    if ai < 24:
        start, n = pos + 1, ai
    elif ai in _MIN_FOR_HEAD:
        width, least = _MIN_FOR_HEAD[ai]
        start = pos + 1 + width
        n = int.from_bytes(data[pos + 1:start], "big")
        if start > len(data) or n < least:
            return None
    else:
        return None
    end = start + n
    return (data[start:end], end) if end <= len(data) else None


def split_canonical(data: bytes) -> tuple[bytes, bytes, bytes] | None:
    """(protected, payload, signature) when `data` is exactly encode_sign1() of them, else None.

    Every record a station writes takes this path; it decodes no CBOR at all."""
    if data[:2] != _SIGN1_HEAD:
        return None
    got = _take_bstr(data, 2)
    if got is None or got[1] >= len(data) or data[got[1]] != 0xA0:
        return None
    protected = got[0]
    got = _take_bstr(data, got[1] + 1)
    if got is None:
        return None
    payload = got[0]
    got = _take_bstr(data, got[1])
    if got is None or got[1] != len(data):
        return None
    return protected, payload, got[0]


def parse(data: bytes) -> Envelope:
    """Decode one COSE_Sign1 and check its shape. Raises RecordError."""
    parts = split_canonical(data)
    if parts is not None:
        return Envelope(*parts, _kid_of(parts[0]), hashlib.sha256(data).digest())
    try:
        obj = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several types on malformed input
        raise RecordError(f"not CBOR ({exc})", "the record is damaged; fetch it again from the station's outbox") from None
    if not isinstance(obj, cbor2.CBORTag) or obj.tag != COSE_SIGN1_TAG:
        raise RecordError("not a tagged COSE_Sign1 (tag 18)", "the record is damaged or not a station record")
    if not (isinstance(obj.value, list) and len(obj.value) == 4):
        raise RecordError("COSE_Sign1 is not a 4-element array", "the record is damaged")
    protected, unprotected, payload, signature = obj.value
    if not all(isinstance(x, bytes) for x in (protected, payload, signature)):
        raise RecordError("COSE_Sign1 fields have wrong types", "the record is damaged")
    if unprotected != {}:
        # Nothing in it is signed, so anything there is someone else's addition.
        raise RecordError("unprotected header is not empty (a station never writes one)",
                          "reject this copy; fetch the record again from the station's outbox")
    kid = _kid_of(protected)
    canonical = encode_sign1(protected, payload, signature)
    if data != canonical:  # rare: not the bytes a station writes, so look closer
        try:
            loads_exactly(data)
        except Exception as exc:
            raise RecordError(f"not one CBOR item ({exc})", "the record is damaged; fetch it again") from None
    digest = hashlib.sha256(canonical).digest()
    return Envelope(protected, payload, signature, kid, digest)


def check_signature(env: Envelope, key: Ed25519PublicKey) -> None:
    try:
        key.verify(env.signature, sig_structure(env.protected, env.payload))
    except InvalidSignature:
        raise RecordError("signature does not match (record altered or forged)", "reject this record; report it") from None


@dataclass(frozen=True)
class Verified:
    kid: str
    payload: bytes
    digest: bytes


def verify(data: bytes, keys: Mapping[str, Ed25519PublicKey]) -> Verified:
    """Check one COSE_Sign1 against the trusted keys (by kid). Raises RecordError."""
    env = parse(data)
    key = keys.get(env.kid)
    if key is None:
        raise RecordError(
            f"signed by unknown key {env.kid!r}",
            "pass the station's public key (`station keys public --jwk`) with --key, or its trust entry with --trust; "
            "simulated records use the simulation key",
        )
    check_signature(env, key)
    return Verified(kid=env.kid, payload=env.payload, digest=env.digest)
