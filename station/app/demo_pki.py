"""A throw-away certificate authority: what `station demo` needs to run its
private broker, station and consumer over mutual TLS, and what the tests use
to make certificates (valid, expired, for the wrong host, from another CA).

Keys are P-256 (every TLS stack and mosquitto support it) and are written
0600 from the start, as in a real deployment. Dates are relative to ``now``
(injected by the tests, so that expiry is tested without touching the clock).
A demo CA signs nothing but the demo's own processes: its key is kept only so
that a kept demo directory can issue more certificates.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from station.delivery.certs import write_private

DAY = dt.timedelta(days=1)
# The shipped ACL (config/mosquitto/acl) gives this identity the consumer's topics.
DEMO_CONSUMER_CN = "consumer:central-1"


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


@dataclass(frozen=True)
class Issued:
    cert_file: Path
    key_file: Path
    cert: x509.Certificate


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class CA:
    """A self-signed CA in ``directory`` (``<name>.crt``, ``<name>.key``); it issues leaves there too."""

    def __init__(self, directory: Path, name: str = "demo-ca", now: dt.datetime | None = None) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.now = now or utc_now()
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.now - DAY)
            .not_valid_after(self.now + 365 * DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_file = self.dir / f"{name}.crt"
        self.cert_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        write_private(self.dir / f"{name}.key", _pem_key(self.key), overwrite=True)

    def issue(
        self,
        cn: str,
        *,
        server: bool = False,
        hosts: tuple[str, ...] = (),
        sans: tuple[str, ...] = (),
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        key: ec.EllipticCurvePrivateKey | None = None,
        file_stem: str | None = None,
    ) -> Issued:
        """A leaf certificate. ``hosts`` become IP/DNS SANs (for a server),
        ``sans`` DNS SANs (for a client)."""
        key = key or ec.generate_private_key(ec.SECP256R1())
        alt: list[x509.GeneralName] = []
        for h in hosts:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                alt.append(x509.DNSName(h))
        alt += [x509.DNSName(s) for s in sans]
        b = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or self.now - DAY)
            .not_valid_after(not_after or self.now + 30 * DAY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        )
        if alt:
            b = b.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        cert = b.sign(self.key, hashes.SHA256())
        stem = file_stem or cn.replace(":", "_")
        cert_file, key_file = self.dir / f"{stem}.crt", self.dir / f"{stem}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        write_private(key_file, _pem_key(key), overwrite=True)
        return Issued(cert_file, key_file, cert)

    def sign_csr(self, csr: x509.CertificateSigningRequest, stem: str) -> Path:
        """What the central CA does with `station certs request`'s CSR: ``<stem>.crt``."""
        cert = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(self.cert.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.now - DAY)
            .not_valid_after(self.now + 30 * DAY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        path = self.dir / f"{stem}.crt"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path


@dataclass(frozen=True)
class DemoPki:
    ca: CA
    server: Issued  # the broker's: 127.0.0.1 and localhost
    consumer: Issued  # CN DEMO_CONSUMER_CN


def make_demo_pki(directory: Path) -> DemoPki:
    """The demo's CA, the broker's certificate and the consumer's. The station's
    comes from its own key and CSR (`station certs request`), signed by ``ca``."""
    ca = CA(directory, "station-demo-ca")
    return DemoPki(ca=ca, server=ca.issue("broker", server=True, hosts=("127.0.0.1", "localhost")),
                   consumer=ca.issue(DEMO_CONSUMER_CN))
