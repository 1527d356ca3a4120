"""Mutual TLS and the ACL against a real mosquitto running the shipped
config/mosquitto/ files (require_certificate, identity = CN, per-station ACL).
Certificates come from a throwaway CA made per test (tests/pki.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pki import CA, DAY, NOW, Issued
from station.app.broker import BrokerTls, Mosquitto
from station.delivery.mqtt import Ack, MessageProperties, MqttLink, MqttSubscriber
from station.delivery.outbox import Outbox, StoredRecord
from station.delivery.publisher import Publisher
from station.delivery.tls import ClientTls, load_client_tls

CONSUMER = "consumer:central-1"  # a consumer identity in the shipped ACL


def wait_until(pred: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def ca(tmp_path: Path) -> CA:
    return CA(tmp_path / "pki")


@pytest.fixture
def start_broker(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    started: list[Mosquitto] = []

    def start(ca: CA, server: Issued | None = None) -> Mosquitto:
        server = server or ca.issue("broker", server=True, hosts=("127.0.0.1", "localhost"))
        broker = Mosquitto(tmp_path / f"broker{len(started)}", tls=BrokerTls(ca.cert_file, server.cert_file,
                                                                               server.key_file))
        started.append(broker)
        return broker.start()

    yield start
    for broker in started:
        broker.stop()


def client_tls(ca: CA, who: Issued, station_id: str | None) -> ClientTls:
    return load_client_tls(ca.cert_file, who.cert_file, who.key_file, station_id=station_id)


class Sink:
    def __init__(self, broker: Mosquitto, tls: ClientTls, topic: str = "stations/+/records",
                 client_id: str = "sink") -> None:
        self.msgs: list[tuple[bytes, MessageProperties]] = []
        self._cond = threading.Condition()
        self.sub = MqttSubscriber(broker.host, broker.port, topic, client_id, self._on, tls=tls)
        self.sub.start()

    def _on(self, data: bytes, props: MessageProperties) -> None:
        with self._cond:
            self.msgs.append((data, props))
            self._cond.notify_all()

    def wait(self, pred: Callable[[], bool], timeout: float = 15.0) -> bool:
        with self._cond:
            return self._cond.wait_for(pred, timeout)


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    box = Outbox(tmp_path / "outbox.db")
    yield box
    box.close()


def fill(box: Outbox, n: int) -> dict[int, bytes]:
    start = box.next_seq
    recs = [StoredRecord(s, f"rec-{s}", b"\xd2\x84" + s.to_bytes(4, "big") * 100) for s in range(start, start + n)]
    box.append(recs)
    return {r.seq: r.data for r in recs}


def test_station_delivers_end_to_end_over_mutual_tls(ca, start_broker, outbox, tmp_path) -> None:
    broker = start_broker(ca)
    sink = Sink(broker, client_tls(ca, ca.issue(CONSUMER), None))
    sent = fill(outbox, 40)
    pub = Publisher(outbox_path=tmp_path / "outbox.db", station_id="st-A", host=broker.host, port=broker.port,
                    version="1", tls=client_tls(ca, ca.issue("st-A"), "st-A"))
    pub.start()
    try:
        assert pub.wait_drained(15), pub.last_error
        assert sink.wait(lambda: len(sink.msgs) >= 40)
    finally:
        pub.stop(timeout=1)
        sink.sub.stop()
    assert [int(p.user_properties["seq"]) for _, p in sink.msgs] == list(range(1, 41))
    assert all(data == sent[int(p.user_properties["seq"])] for data, p in sink.msgs)
    assert "u'st-A'" in broker.log_tail(30)  # the broker took the CN as the username


def test_acl_denial_is_not_counted_as_delivered(ca, start_broker, outbox, tmp_path) -> None:
    """A station whose certificate says st-A, configured as st-B (the start-up
    identity check skipped): every publish gets PUBACK 135 and stays stored."""
    broker = start_broker(ca)
    sink = Sink(broker, client_tls(ca, ca.issue(CONSUMER), None))
    events: list[str] = []
    delivered: list[int] = []
    fill(outbox, 6)
    pub = Publisher(outbox_path=tmp_path / "outbox.db", station_id="st-B", host=broker.host, port=broker.port,
                    version="1", tls=client_tls(ca, ca.issue("st-A"), None),
                    on_event=events.append, on_delivered=delivered.extend)
    pub.start()
    try:
        assert wait_until(lambda: any("ACL denies stations/st-B/records" in e for e in events), 10), events
        time.sleep(1.0)  # a retry after the back-off is refused as well
        assert outbox.depth() == 6
        assert delivered == []
        assert pub.connected
    finally:
        pub.stop(timeout=1)
        sink.sub.stop()
    assert sink.msgs == []


def test_station_cannot_publish_on_another_stations_topics(ca, start_broker) -> None:
    broker = start_broker(ca)
    sink = Sink(broker, client_tls(ca, ca.issue(CONSUMER), None), topic="stations/#")
    acks: dict[str, Ack] = {}
    link = MqttLink(broker.host, broker.port, "station-st-A", tls=client_tls(ca, ca.issue("st-A"), "st-A"))
    link.start()
    try:
        assert link.wait_connected(10), link.last_error
        for topic in ("stations/st-B/records", "stations/st-B/status", "stations/st-B/acks", "stations/st-A/records"):
            link.publish(topic, b"forged", on_ack=lambda a, t=topic: acks.__setitem__(t, a))
        assert wait_until(lambda: len(acks) == 4, 10), acks
    finally:
        link.stop()
    for topic in ("stations/st-B/records", "stations/st-B/status", "stations/st-B/acks"):
        assert acks[topic].reason_code == 135, (topic, acks[topic])
    assert acks["stations/st-A/records"].ok
    assert sink.wait(lambda: len(sink.msgs) >= 1)
    time.sleep(0.2)
    sink.sub.stop()
    assert [p.topic for _, p in sink.msgs] == ["stations/st-A/records"]


def _failing_link(broker: Mosquitto, tls: ClientTls, host: str | None = None) -> str:
    problems: list[str] = []
    link = MqttLink(host or broker.host, broker.port, "station-st-A", tls=tls,
                    on_problem=lambda what, fix: problems.append(f"{what}. Fix: {fix}"))
    link.start()
    try:
        assert wait_until(lambda: bool(problems), 10)
        assert not link.connected
    finally:
        link.stop()
    assert "\n" not in problems[0]
    return problems[0]


def test_certificate_from_an_unknown_ca_is_refused(ca, start_broker, tmp_path) -> None:
    broker = start_broker(ca)
    rogue = CA(tmp_path / "rogue", name="rogue-ca")
    impostor = rogue.issue("st-A")
    # It trusts the real CA (so the broker's certificate is fine), but presents a rogue-signed certificate.
    tls = load_client_tls(ca.cert_file, impostor.cert_file, impostor.key_file, station_id="st-A")
    msg = _failing_link(broker, tls)
    assert "refused this station's certificate" in msg, msg
    assert "have the central CA that the broker trusts sign" in msg


def test_wrong_ca_file(ca, start_broker, tmp_path) -> None:
    broker = start_broker(ca)
    other = CA(tmp_path / "other", name="other-ca")
    st = ca.issue("st-A")
    tls = load_client_tls(other.cert_file, st.cert_file, st.key_file, station_id="st-A")
    msg = _failing_link(broker, tls)
    assert f"not signed by the CA in mqtt.ca_file {other.cert_file}" in msg, msg
    assert "set mqtt.ca_file to the CA that signed the broker's certificate" in msg


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_hostname_mismatch(ca, start_broker, host) -> None:
    broker = start_broker(ca, ca.issue("broker", server=True, hosts=("broker.example.org",)))
    msg = _failing_link(broker, client_tls(ca, ca.issue("st-A"), "st-A"), host=host)
    assert f"not valid for the host name {host!r}" in msg, msg
    assert "set mqtt.host to a name the broker's certificate lists" in msg


def test_expired_broker_certificate(ca, start_broker) -> None:
    expired = ca.issue("broker", server=True, hosts=("127.0.0.1",), not_before=NOW - 10 * DAY,
                       not_after=NOW - DAY)
    broker = start_broker(ca, expired)
    msg = _failing_link(broker, client_tls(ca, ca.issue("st-A"), "st-A"))
    assert "presents an expired certificate" in msg and "renew the broker's certificate" in msg, msg


def test_consumers_share_a_group_under_the_acl(ca, start_broker, outbox, tmp_path) -> None:
    """The documented consumer form, $share/<group>/stations/+/records, passes the
    shipped ACL; each record goes to exactly one member of the group."""
    broker = start_broker(ca)
    sinks = []
    for n in (1, 2):
        me = ca.issue(f"consumer:central-{n}")
        sinks.append(Sink(broker, client_tls(ca, me, None), topic="$share/central/stations/+/records",
                          client_id=f"central-{n}"))
    sent = fill(outbox, 40)
    pub = Publisher(outbox_path=tmp_path / "outbox.db", station_id="st-A", host=broker.host, port=broker.port,
                    version="1", tls=client_tls(ca, ca.issue("st-A"), "st-A"))
    pub.start()
    try:
        assert pub.wait_drained(15), pub.last_error
        assert wait_until(lambda: sum(len(s.msgs) for s in sinks) >= 40, 10)
    finally:
        pub.stop(timeout=1)
        for s in sinks:
            s.sub.stop()
    seqs = [[int(p.user_properties["seq"]) for _, p in s.msgs] for s in sinks]
    assert sorted(seqs[0] + seqs[1]) == sorted(sent)  # all of them, none twice
    assert seqs[0] and seqs[1]  # both members took a share
