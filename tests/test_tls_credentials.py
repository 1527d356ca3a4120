"""Station-side TLS checks made before any connection: each bad credential is one
line that says what is wrong and how to fix it. Broker-side failures are in
test_mqtt_tls.py, against a real mosquitto."""

from __future__ import annotations

import datetime as dt
import os
import random
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from pki import CA, DAY, NOW
from station import config
from station.cli import main
from station.delivery.certs import request
from station.delivery.link_problems import backoff_delay
from station.delivery.tls import TlsError, load_client_tls, load_credentials
from station.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
SECOND = dt.timedelta(seconds=1)


@pytest.fixture
def ca(tmp_path: Path) -> CA:
    return CA(tmp_path / "pki")


def load(ca: CA, issued, station_id: str | None = "st-A", **kw):
    return load_client_tls(ca.cert_file, issued.cert_file, issued.key_file, station_id=station_id, **kw)


def one_line(exc: pytest.ExceptionInfo[TlsError]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and ". Fix: " in msg
    return msg


def test_good_credentials_load(ca: CA) -> None:
    tls = load(ca, ca.issue("st-A"))
    assert tls.identity == "st-A"
    assert tls.context.check_hostname and tls.last_failure() is None
    # Only the central CA is trusted, not the system's public CAs.
    assert [c["subject"] for c in tls.context.get_ca_certs()] == [((("commonName", "test-ca"),),)]


def test_key_readable_by_group_is_refused_before_connecting(ca: CA) -> None:
    st = ca.issue("st-A")
    for mode in (0o640, 0o604, 0o660, 0o700 | 0o004):
        os.chmod(st.key_file, mode)
        with pytest.raises(TlsError) as exc:
            load(ca, st)
        assert f"mode {mode:04o}" in one_line(exc) and f"chmod 600 {st.key_file}" in str(exc.value)
    os.chmod(st.key_file, 0o400)  # owner-only, even read-only, is fine
    load(ca, st)


def test_key_that_does_not_match_the_certificate(ca: CA) -> None:
    st, other = ca.issue("st-A"), ca.issue("st-A", file_stem="other")
    with pytest.raises(TlsError) as exc:
        load_client_tls(ca.cert_file, st.cert_file, other.key_file, station_id="st-A")
    msg = one_line(exc)
    assert f"{other.key_file} does not match the certificate {st.cert_file}" in msg


def test_expired_certificate_boundary(ca: CA) -> None:
    end = NOW + 2 * DAY
    st = ca.issue("st-A", not_after=end)
    load(ca, st, now=end)  # valid up to and including not_after
    with pytest.raises(TlsError) as exc:
        load(ca, st, now=end + SECOND)
    msg = one_line(exc)
    assert "expired on" in msg and "station certs request" in msg


def test_not_yet_valid_certificate_points_at_the_clock(ca: CA) -> None:
    start = NOW + DAY
    st = ca.issue("st-A", not_before=start)
    load(ca, st, now=start)
    with pytest.raises(TlsError, match="not valid before .*check the station's clock"):
        load(ca, st, now=start - SECOND)


def test_certificate_for_another_station_is_refused(ca: CA) -> None:
    st = ca.issue("st-B")
    with pytest.raises(TlsError) as exc:
        load(ca, st, station_id="st-A")
    msg = one_line(exc)
    assert "is for CN 'st-B', not for this station 'st-A'" in msg


def test_station_id_in_a_san_is_accepted(ca: CA) -> None:
    tls = load(ca, ca.issue("desk-01", sans=("st-A",)), station_id="st-A")
    assert tls.identity == "desk-01"


def test_missing_and_garbage_files(ca: CA, tmp_path: Path) -> None:
    st = ca.issue("st-A")
    with pytest.raises(TlsError, match="does not exist"):
        load_client_tls(tmp_path / "nope.crt", st.cert_file, st.key_file, station_id="st-A")
    bad = tmp_path / "bad.crt"
    bad.write_text("not a certificate")
    with pytest.raises(TlsError, match="is not a PEM certificate"):
        load_client_tls(ca.cert_file, bad, st.key_file, station_id="st-A")
    with pytest.raises(TlsError, match="holds no usable CA certificate"):
        load_client_tls(bad, st.cert_file, st.key_file, station_id="st-A")


def test_password_file(tmp_path: Path) -> None:
    p = tmp_path / "mqtt.pass"
    p.write_text("st-A:s3cr:et\n")
    os.chmod(p, 0o600)
    creds = load_credentials(p)
    assert (creds.username, creds.password) == ("st-A", "s3cr:et")
    os.chmod(p, 0o644)
    with pytest.raises(TlsError, match="accessible by group/others"):
        load_credentials(p)
    os.chmod(p, 0o600)
    p.write_text("no-colon\n")
    with pytest.raises(TlsError, match="username:password"):
        load_credentials(p)


def test_certs_request_writes_private_key_and_csr(ca: CA, tmp_path: Path) -> None:
    key, csr_path = tmp_path / "tls" / "st-A.key", tmp_path / "tls" / "st-A.csr"
    csr = request("st-A", key, csr_path)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    loaded = x509.load_pem_x509_csr(csr_path.read_bytes())
    assert loaded.is_signature_valid
    assert loaded.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "st-A"
    # The central CA signs it; the station's key then matches and the checks pass.
    cert = ca.sign_csr(csr, "st-A-signed")
    assert load_client_tls(ca.cert_file, cert, key, station_id="st-A").identity == "st-A"
    with pytest.raises(TlsError, match="already exists.*--force"):
        request("st-A", key, csr_path)
    old = key.read_bytes()
    os.chmod(key, 0o644)
    request("st-A", key, csr_path, force=True)
    assert key.read_bytes() != old and stat.S_IMODE(key.stat().st_mode) == 0o600


def _cfg_file(tmp_path: Path, **mqtt: str) -> Path:
    """The shipped simulator config, whose last table is [mqtt], plus ``mqtt``."""
    text = (ROOT / "config/station.sim.toml").read_text()
    assert text.rfind("[mqtt]") > text.rfind("[devices")
    path = tmp_path / "station.toml"
    path.write_text(text + "".join(f'{k} = "{v}"\n' for k, v in mqtt.items()))
    return path


def test_config_tls_keys_are_paths_relative_to_the_file(tmp_path: Path) -> None:
    path = _cfg_file(tmp_path, ca_file="tls/ca.crt", cert_file="tls/st.crt", key_file="/abs/st.key")
    cfg = config.load(path)
    assert cfg.mqtt.tls
    assert cfg.mqtt.ca_file == (tmp_path / "tls/ca.crt").resolve()
    assert cfg.mqtt.key_file == Path("/abs/st.key")
    assert cfg.mqtt.password_file is None


def test_config_tls_needs_all_three_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing cert_file, key_file"):
        config.load(_cfg_file(tmp_path, ca_file="ca.crt"))


def test_cli_certs_request_and_check(ca: CA, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _cfg_file(tmp_path, ca_file=str(ca.cert_file), cert_file="tls/st.crt", key_file="tls/st.key")
    cfg = config.load(path)
    assert main(["certs", "request", "--config", str(path)]) == 0
    assert "mode 0600" in capsys.readouterr().out
    csr = x509.load_pem_x509_csr((tmp_path / "tls/st.csr").read_bytes())
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == cfg.station.id
    assert main(["certs", "check", "--config", str(path)]) == 1  # no certificate yet
    assert "mqtt.cert_file" in capsys.readouterr().err
    ca.sign_csr(csr, "signed")
    (tmp_path / "tls/st.crt").write_bytes((ca.dir / "signed.crt").read_bytes())
    assert main(["certs", "check", "--config", str(path)]) == 0
    assert f"OK for station {cfg.station.id}" in capsys.readouterr().out


def test_backoff_is_capped_and_jittered() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(n, 0.2, 10.0, rng) for n in range(40)]
    for n, d in enumerate(delays):
        base = min(10.0, 0.2 * 2**n)
        assert base / 2 <= d < base
    assert max(delays) < 10.0
    # Two stations that lost the broker together do not retry together.
    assert backoff_delay(5, 0.2, 10.0, random.Random(1)) != backoff_delay(5, 0.2, 10.0, random.Random(2))
