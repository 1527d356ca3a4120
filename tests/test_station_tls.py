"""`station` over mutual TLS, as an operator does it: `station certs request`,
the central CA signs the CSR, `station run` delivers to the shipped mosquitto
config, and a consumer with its own certificate receives the records. A
certificate for another station is refused at start-up, before connecting."""

from __future__ import annotations

import threading
from pathlib import Path

from cryptography import x509

from pki import CA
from station.app.broker import BrokerTls, Mosquitto
from station.delivery.mqtt import MqttSubscriber
from station.delivery.tls import load_client_tls
from stationproc import Proc, child_env, station, station_cmd, write_config

STATION_ID = "TEST-DESK-01"  # the id in stationproc.CONFIG


def tls_config(tmp_path: Path, sim_port: str, broker: Mosquitto, ca: CA) -> Path:
    cfg = write_config(tmp_path, sim_port, broker.port)
    cfg.write_text(cfg.read_text() + f'ca_file = "{ca.cert_file}"\ncert_file = "tls/station.crt"\n'
                   'key_file = "tls/station.key"\n')
    assert station("keys", "init", "--config", str(cfg)).returncode == 0
    return cfg


def start_broker(tmp_path: Path, ca: CA) -> Mosquitto:
    server = ca.issue("broker", server=True, hosts=("127.0.0.1",))
    return Mosquitto(tmp_path / "broker", tls=BrokerTls(ca.cert_file, server.cert_file, server.key_file)).start()


def test_station_run_over_mutual_tls(tmp_path, sim) -> None:
    ca = CA(tmp_path / "pki")
    broker = start_broker(tmp_path, ca)
    try:
        cfg = tls_config(tmp_path, sim.port, broker, ca)
        req = station("certs", "request", "--config", str(cfg))
        assert req.returncode == 0, req.stderr
        csr = x509.load_pem_x509_csr((tmp_path / "tls/station.csr").read_bytes())
        (tmp_path / "tls/station.crt").write_bytes(ca.sign_csr(csr, "signed").read_bytes())

        consumer = ca.issue("consumer:central-1")
        got: list[bytes] = []
        lock = threading.Lock()

        def on(payload: bytes, props: object) -> None:
            with lock:
                got.append(payload)

        sub = MqttSubscriber(broker.host, broker.port, "stations/+/records", "consumer-1", on,
                             tls=load_client_tls(ca.cert_file, consumer.cert_file, consumer.key_file,
                                                 station_id=None))
        sub.start()
        st = Proc(station_cmd("run", "--config", str(cfg), "--max-stones", "1"), env=child_env())
        st.wait_for(r"Balance .* serial SIM0000001")
        sim.control.place(123_400)
        st.wait_for(r"Recorded #")
        sim.control.remove()
        assert st.wait() == 0
        sub.stop()
        assert len(set(got)) == 1
        assert f"as station-{STATION_ID}" in broker.log_tail(40) and f"u'{STATION_ID}'" in broker.log_tail(40)
    finally:
        broker.stop()


def test_certificate_for_another_station_is_refused_at_start(tmp_path, sim) -> None:
    ca = CA(tmp_path / "pki")
    broker = start_broker(tmp_path, ca)
    try:
        cfg = tls_config(tmp_path, sim.port, broker, ca)
        other = ca.issue("OTHER-DESK-02")
        (tmp_path / "tls").mkdir()
        (tmp_path / "tls/station.crt").write_bytes(other.cert_file.read_bytes())
        (tmp_path / "tls/station.key").write_bytes(other.key_file.read_bytes())
        (tmp_path / "tls/station.key").chmod(0o600)
        res = station("run", "--config", str(cfg), env=child_env())
        assert res.returncode != 0 and "Traceback" not in res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1, res.stderr
        assert f"is for CN 'OTHER-DESK-02', not for this station '{STATION_ID}'" in lines[0]
        assert "New client connected" not in broker.log_tail(40)  # refused before connecting
    finally:
        broker.stop()
