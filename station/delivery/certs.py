"""`station certs request`: the station's TLS key and a CSR for the central CA.

The key never leaves the station: it is written 0600 (created with that mode,
never chmod-ed after the fact) and only the CSR goes to the CA.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from station.delivery.tls import TlsError


def write_private(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise TlsError(f"{path} already exists", "pass --force to replace it, or choose another path") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, 0o600)  # an existing file kept its old mode through O_TRUNC


def request(station_id: str, key_path: Path, csr_path: Path, *, force: bool = False) -> x509.CertificateSigningRequest:
    """A new P-256 key (every TLS stack and broker supports it) and a CSR with CN = station ID."""
    key_path, csr_path = Path(key_path), Path(csr_path)
    if not force and csr_path.exists():
        raise TlsError(f"{csr_path} already exists", "pass --force to replace it, or choose another path")
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, station_id)]))
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private(key_path, pem_key, overwrite=force)
    csr_path.parent.mkdir(parents=True, exist_ok=True)
    csr_path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return csr
