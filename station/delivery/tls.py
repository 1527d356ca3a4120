"""Mutual TLS for the station's MQTT link: load and check the credentials before
connecting, and turn a failed handshake into one line that says what and how to fix.

Every check that can be made locally is made at start-up (file modes, key vs
certificate, validity dates, the station ID in the certificate), so a station
with bad credentials refuses to start instead of retrying a doomed connection.
What only the broker can reveal (its certificate's CA, host name and dates, and
whether it accepts ours) is recorded by the socket class below when paho's
handshake or first read fails, and explained by ``explain``.
"""

from __future__ import annotations

import datetime as dt
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from station.errors import StationError

_RENEW = "request a new one with `station certs request` and have the central CA sign it"

# OpenSSL X509_V_ERR_* codes a client sees for the broker's certificate.
_V_NOT_YET_VALID, _V_EXPIRED = 9, 10
_V_WRONG_CA = {2, 18, 19, 20, 21}  # no issuer found locally, self-signed, chain incomplete
_V_HOSTNAME = {62, 64}  # host name, IP address mismatch


class TlsError(StationError):
    layer = "tls"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


@dataclass(frozen=True)
class ClientTls:
    """A checked client context plus what the messages need to name."""

    context: ssl.SSLContext
    ca_file: Path
    cert_file: Path
    identity: str  # the CN: what the broker uses as the username (use_identity_as_username)
    not_after: dt.datetime

    def last_failure(self) -> OSError | None:
        return getattr(self.context, "last_failure", None)

    def clear_failure(self) -> None:
        self.context.last_failure = None  # type: ignore[attr-defined]


class _RecordingSocket(ssl.SSLSocket):
    """Keeps the TLS error paho swallows (it only reports "connection failed")."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except OSError as exc:
            if not isinstance(exc, (ssl.SSLWantReadError, ssl.SSLWantWriteError)):
                self.context.last_failure = exc  # type: ignore[attr-defined]
            raise

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        # With TLS 1.3 the broker's verdict on our certificate comes after the
        # handshake, as an alert on the first read.
        try:
            return super().recv(buflen, flags)
        except ssl.SSLError as exc:
            if not isinstance(exc, (ssl.SSLWantReadError, ssl.SSLWantWriteError)):
                self.context.last_failure = exc  # type: ignore[attr-defined]
            raise


def check_private_file(path: Path, what: str) -> None:
    """A key or password file that group or others can read is refused."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        raise TlsError(f"{what} {path} does not exist", f"check mqtt settings; {_RENEW}") from None
    except OSError as exc:
        raise TlsError(f"cannot read {what} {path}: {exc}", "check the path and its permissions") from exc
    if mode & 0o077:
        raise TlsError(
            f"{what} {path} is accessible by group/others (mode {mode:04o})",
            f"chmod 600 {path} (and keep it owned by the station's user)",
        )


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise TlsError(f"{what} {path} does not exist", "check the path in the [mqtt] section") from None
    except OSError as exc:
        raise TlsError(f"cannot read {what} {path}: {exc}", "check the path and its permissions") from exc


def certificate_ids(cert: x509.Certificate) -> tuple[str | None, list[str]]:
    """(CN, SAN DNS names and URIs) of a certificate."""
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(cns[0].value) if cns else None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = [str(v) for v in san.get_values_for_type(x509.DNSName)]
        sans += [str(v) for v in san.get_values_for_type(x509.UniformResourceIdentifier)]
    except x509.ExtensionNotFound:
        sans = []
    return cn, sans


def load_client_tls(
    ca_file: Path,
    cert_file: Path,
    key_file: Path,
    *,
    station_id: str | None,
    now: dt.datetime | None = None,
) -> ClientTls:
    """Check the station's credentials and build its TLS context.

    ``station_id`` None skips the identity check (only tests of the broker's ACL
    do that, to play a station that lies about who it is)."""
    ca_file, cert_file, key_file = Path(ca_file), Path(cert_file), Path(key_file)
    now = now or dt.datetime.now(dt.timezone.utc)
    check_private_file(key_file, "mqtt.key_file")
    try:
        cert = x509.load_pem_x509_certificate(_read(cert_file, "mqtt.cert_file"))
    except ValueError as exc:
        raise TlsError(f"mqtt.cert_file {cert_file} is not a PEM certificate ({exc})", _RENEW) from None
    try:
        key = serialization.load_pem_private_key(_read(key_file, "mqtt.key_file"), password=None)
    except (ValueError, TypeError) as exc:
        raise TlsError(
            f"mqtt.key_file {key_file} is not an unencrypted PEM private key ({exc})",
            "use the key `station certs request` wrote next to the CSR",
        ) from None
    raw = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, raw) != cert.public_key().public_bytes(
        serialization.Encoding.DER, raw
    ):
        raise TlsError(
            f"mqtt.key_file {key_file} does not match the certificate {cert_file}",
            "use the key the CSR was made from, or request a new certificate for this key",
        )
    if now > cert.not_valid_after_utc:
        raise TlsError(
            f"the station certificate {cert_file} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC", _RENEW
        )
    if now < cert.not_valid_before_utc:
        raise TlsError(
            f"the station certificate {cert_file} is not valid before "
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC (now {now:%Y-%m-%d %H:%M} UTC)",
            "check the station's clock (NTP), or wait until then",
        )
    cn, sans = certificate_ids(cert)
    if station_id is not None and station_id != cn and station_id not in sans:
        named = ", ".join([f"CN {cn!r}"] + [f"SAN {s!r}" for s in sans])
        raise TlsError(
            f"the station certificate {cert_file} is for {named}, not for this station {station_id!r}",
            f"install the certificate issued for {station_id} (`station certs request` makes its CSR), "
            "or correct station.id",
        )
    _read(ca_file, "mqtt.ca_file")
    try:
        # Given a cafile, Python trusts only it, not the system's CAs: a broker with
        # a certificate from any public CA must not pass for the central one.
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    except ssl.SSLError as exc:
        raise TlsError(f"mqtt.ca_file {ca_file} holds no usable CA certificate ({exc})",
                       "use the central CA's certificate in PEM form") from None
    ctx.sslsocket_class = _RecordingSocket
    ctx.load_cert_chain(str(cert_file), str(key_file))
    ctx.last_failure = None  # type: ignore[attr-defined]
    return ClientTls(ctx, ca_file, cert_file, cn or "", cert.not_valid_after_utc)


def load_credentials(path: Path) -> Credentials:
    """One line, ``username:password``; the file must be private like a key."""
    path = Path(path)
    check_private_file(path, "mqtt.password_file")
    text = _read(path, "mqtt.password_file").decode("utf-8", "replace").strip()
    user, sep, password = text.partition(":")
    if not sep or not user or "\n" in text:
        raise TlsError(f"mqtt.password_file {path} is not one line `username:password`", "rewrite it in that form")
    return Credentials(user, password)


def from_config(mqtt: Any, station_id: str) -> tuple[ClientTls | None, Credentials | None]:
    """The [mqtt] section's credentials, checked: refuses to start on any problem."""
    tls = None
    if mqtt.ca_file is not None:
        tls = load_client_tls(mqtt.ca_file, mqtt.cert_file, mqtt.key_file, station_id=station_id)
    creds = load_credentials(mqtt.password_file) if mqtt.password_file is not None else None
    return tls, creds


def explain(exc: OSError | None, host: str, port: int, tls: ClientTls) -> tuple[str, str] | None:
    """(what, fix) for a TLS failure paho reported only as "connection failed"."""
    if exc is None:
        return None
    where = f"the broker {host}:{port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        if code == _V_EXPIRED:
            return f"{where} presents an expired certificate", "renew the broker's certificate"
        if code == _V_NOT_YET_VALID:
            return (f"{where} presents a certificate that is not valid yet",
                    "check the clocks of the station and the broker (NTP)")
        if code in _V_HOSTNAME:
            return (f"{where} presents a certificate that is not valid for the host name {host!r} "
                    f"({exc.verify_message})",
                    "set mqtt.host to a name the broker's certificate lists, or reissue it with this name")
        if code in _V_WRONG_CA:
            return (f"{where} presents a certificate not signed by the CA in mqtt.ca_file {tls.ca_file} "
                    f"({exc.verify_message})",
                    "set mqtt.ca_file to the CA that signed the broker's certificate")
        return f"{where}: certificate check failed ({exc.verify_message})", "see the broker's certificate"
    reason = (getattr(exc, "reason", None) or str(exc)).upper()
    if any(r in reason for r in ("UNKNOWN_CA", "BAD_CERTIFICATE", "CERTIFICATE_REQUIRED", "CERTIFICATE_UNKNOWN")):
        return (f"{where} refused this station's certificate {tls.cert_file} ({reason.lower()})",
                "have the central CA that the broker trusts sign this station's certificate")
    if "CERTIFICATE_EXPIRED" in reason:
        return (f"{where} says this station's certificate {tls.cert_file} has expired", _RENEW)
    return f"TLS with {where} failed ({exc})", "check mqtt.ca_file, cert_file and key_file, and the broker's TLS log"
