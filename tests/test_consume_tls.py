"""`station consume` over mutual TLS under the shipped ACL: a consumer identity
(CN consumer:central-1) reads records through the shared subscription, and its
acks and replay requests reach the station, which may read only its own."""

from __future__ import annotations

import json
import threading

import pytest

from consumerkit import chain, make_keys, write_trust
from pki import CA
from station.app.broker import BrokerTls, Mosquitto
from station.delivery.mqtt import MqttLink
from station.delivery.subscriber import MqttSubscriber
from station.delivery.tls import load_client_tls
from stationproc import Proc, station_cmd


@pytest.fixture
def tls_broker(tmp_path):
    ca = CA(tmp_path / "pki")
    server = ca.issue("broker", server=True, hosts=("127.0.0.1", "localhost"))
    broker = Mosquitto(tmp_path / "broker", tls=BrokerTls(ca.cert_file, server.cert_file, server.key_file)).start()
    yield ca, broker
    broker.stop()


def test_consumer_over_mutual_tls_acks_and_asks_for_replay_under_the_shipped_acl(tls_broker, tmp_path):
    ca, broker = tls_broker
    keys = make_keys(tmp_path)
    trust = write_trust(tmp_path, keys)
    records = chain(keys["a"], 8)
    me = ca.issue("consumer:central-1")
    st = ca.issue("S1")
    got: list[tuple[str, dict]] = []
    cond = threading.Condition()

    def on(payload, props):
        with cond:
            got.append((props.topic, json.loads(payload)))
            cond.notify_all()

    st_tls = lambda: load_client_tls(ca.cert_file, st.cert_file, st.key_file, station_id="S1")  # noqa: E731
    listeners = [MqttSubscriber(broker.host, broker.port, topic, f"S1-{n}", on, tls=st_tls())
                 for n, topic in enumerate(("stations/S1/acks", "stations/S1/cmd/replay"))]
    for s in listeners:
        s.start()
    c = Proc(station_cmd("consume", "--host", broker.host, "--port", str(broker.port), "--trust", str(trust),
                         "--db", str(tmp_path / "c.sqlite"), "--group", "central", "--client-id", "central-1",
                         "--tls-ca", str(ca.cert_file), "--tls-cert", str(me.cert_file), "--tls-key", str(me.key_file),
                         "--replay-grace", "0.2"))
    c.wait_for("consuming \\$share/central/stations/\\+/records")
    link = MqttLink(broker.host, broker.port, "S1", tls=st_tls())
    link.start()
    assert link.wait_connected(10)
    for data in records[:5] + records[7:]:
        link.publish("stations/S1/records", data)

    def seen():
        acks = {a["seq"] for t, m in got if t.endswith("/acks") for a in m["acks"] if a["verdict"] == "accepted"}
        asks = [m for t, m in got if t.endswith("/cmd/replay")]
        return acks == {1, 2, 3, 4, 5, 8} and asks

    with cond:
        assert cond.wait_for(seen, 20), (got, c.output)
    assert [m for t, m in got if t.endswith("/cmd/replay")][0] == {"from_seq": 6, "to_seq": 7}
    link.stop()
    for s in listeners:
        s.stop()
    c.stop()
    c.wait_for("stored 6 new record")
