"""Station signing keys: Ed25519, PKCS#8 PEM files readable by the owner only."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from station.errors import KeyFileError


def init_key(path: Path) -> Ed25519PrivateKey:
    """Create a new key file with mode 0600. Never overwrites: a lost key breaks the chain's provenance."""
    path = Path(path)
    if path.exists():
        raise KeyFileError(
            f"key file {path} already exists",
            "keep it (records already signed with it stay verifiable); to replace it, move it away first",
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise KeyFileError(
            f"cannot create key file {path}: {exc.strerror}",
            f"make {path.parent} writable by this user, or set station.key_file to a writable path",
        ) from exc
    return key


def load_private_key(path: Path) -> Ed25519PrivateKey:
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyFileError(
            f"key file {path} does not exist", "create it with `station keys init` (same --config)"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}", "check the path and its permissions") from exc
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"key file {path} is readable by group or others (mode {stat.S_IMODE(st.st_mode):04o})",
            f"run `chmod 600 {path}`",
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(
            f"cannot read key file {path}: {exc.strerror}",
            "run the station as the key's owner, or fix ownership with chown",
        ) from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(
            f"key file {path} is not an unencrypted PEM private key",
            "restore it from backup, or create a new key with `station keys init` after moving this file away",
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"key file {path} holds a {type(key).__name__}, not Ed25519", "create one with `station keys init`")
    return key


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def raw_public(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def kid_for(public_key: Ed25519PublicKey) -> str:
    """RFC 7638 JWK thumbprint: any consumer can recompute it from the public key."""
    canonical = json.dumps(
        {"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw_public(public_key))}, separators=(",", ":"), sort_keys=True
    )
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def public_jwk(public_key: Ed25519PublicKey) -> dict[str, str]:
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": _b64url(raw_public(public_key)),
        "kid": kid_for(public_key),
        "alg": "EdDSA",
        "use": "sig",
    }


def public_key_from_jwk(jwk: dict) -> Ed25519PublicKey:
    try:
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            raise ValueError("not an OKP Ed25519 key")
        x = jwk["x"]
        return Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(x + "=" * (-len(x) % 4)))
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise KeyFileError(
            f"not an Ed25519 public JWK ({exc})",
            "export the key with `station keys public --jwk` on the station",
        ) from exc


def load_public_jwk_file(path: Path) -> Ed25519PublicKey:
    try:
        return public_key_from_jwk(json.loads(Path(path).read_text()))
    except FileNotFoundError:
        raise KeyFileError(f"public key file {path} does not exist", "export it with `station keys public --jwk > FILE`") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise KeyFileError(f"cannot read public key {path}: {exc}", "it must be the JSON from `station keys public --jwk`") from exc
