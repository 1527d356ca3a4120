"""Publisher against a real private mosquitto, checked by a real subscriber."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from station.app.broker import Mosquitto, free_port
from station.delivery.mqtt import MessageProperties, MqttSubscriber
from station.delivery.outbox import Outbox, StoredRecord
from station.delivery.publisher import CONTENT_TYPE, Publisher

STATION = "st-test"
REPO = Path(__file__).resolve().parents[1]


def payload(seq: int) -> bytes:
    return bytes([0xD2, 0x84, seq % 256, 0x00, 0xFF]) + os.urandom(3) + seq.to_bytes(4, "big")


class Collector:
    """Everything a topic delivered, with the seq user property."""

    def __init__(self, broker: Mosquitto, topic: str, client_id: str) -> None:
        self.msgs: list[tuple[bytes, MessageProperties]] = []
        self._cond = threading.Condition()
        self.sub = MqttSubscriber(broker.host, broker.port, topic, client_id, self._on_message)

    def _on_message(self, data: bytes, props: MessageProperties) -> None:
        with self._cond:
            self.msgs.append((data, props))
            self._cond.notify_all()

    def wait(self, pred: Callable[[], bool], timeout: float = 15.0) -> bool:
        with self._cond:
            return self._cond.wait_for(pred, timeout)

    def seqs(self) -> list[int]:
        with self._cond:
            return [int(p.user_properties["seq"]) for _, p in self.msgs]

    def distinct(self) -> list[int]:
        """First occurrence of each seq, in arrival order (duplicates are allowed, loss is not)."""
        seen: dict[int, None] = {}
        for s in self.seqs():
            seen.setdefault(s, None)
        return list(seen)

    def statuses(self) -> list[dict]:
        with self._cond:
            return [json.loads(d) for d, _ in self.msgs]


def wait_until(pred: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def outbox_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "outbox.db"


@pytest.fixture
def writer(outbox_path: Path) -> Iterator[Outbox]:
    box = Outbox(outbox_path)
    yield box
    box.close()


def append(box: Outbox, n: int) -> dict[int, bytes]:
    start = box.next_seq
    batch = [StoredRecord(s, f"rec-{s}", payload(s)) for s in range(start, start + n)]
    box.append(batch)
    return {r.seq: r.data for r in batch}


@pytest.fixture
def make_publisher(outbox_path: Path) -> Iterator[Callable[..., Publisher]]:
    made: list[Publisher] = []

    def make(broker_port: int, **kw: object) -> Publisher:
        kw.setdefault("window", 5)
        pub = Publisher(
            outbox_path=outbox_path, station_id=STATION, host="127.0.0.1", port=broker_port, version="9.9.9", **kw
        )
        made.append(pub)
        pub.start()
        return pub

    yield make
    for pub in made:
        pub.stop(timeout=1)


def test_records_arrive_in_order_and_are_marked_delivered(mosquitto, writer, make_publisher) -> None:
    sink = Collector(mosquitto, f"stations/{STATION}/records", "sink-order")
    sink.sub.start()
    sent = append(writer, 30)
    pub = make_publisher(mosquitto.port)
    sent.update(append(writer, 20))
    pub.notify()
    assert pub.wait_drained(15)
    assert sink.wait(lambda: len(sink.msgs) >= 50)
    sink.sub.stop()
    assert sink.seqs() == list(range(1, 51))
    for data, props in sink.msgs:
        seq = int(props.user_properties["seq"])
        assert data == sent[seq]  # exact bytes
        assert props.content_type == CONTENT_TYPE
        assert props.qos == 1
    assert writer.depth() == 0
    assert pub.connected and pub.last_error is None


def test_a_backlog_beyond_what_paho_holds_drains_in_order_once(mosquitto, writer, make_publisher) -> None:
    """More records than the window plus what paho queues beyond it, and more than
    one batch of delivered-marks: each arrives once, in seq order, and every mark is stored."""
    sink = Collector(mosquitto, f"stations/{STATION}/records", "sink-backlog")
    sink.sub.start()
    sent = append(writer, 1200)
    pub = make_publisher(mosquitto.port, window=20)
    assert pub.wait_drained(30), pub.last_error
    assert sink.wait(lambda: len(sink.msgs) >= 1200, 20)
    sink.sub.stop()
    assert sink.seqs() == list(range(1, 1201))  # no loss, no duplicate, no reordering
    assert all(data == sent[int(p.user_properties["seq"])] for data, p in sink.msgs)
    c = writer.counts()
    assert (c.stored, c.published) == (0, 1200)


def test_broker_restart_loses_nothing(mosquitto, writer, make_publisher) -> None:
    sink = Collector(mosquitto, f"stations/{STATION}/records", "sink-restart")
    sink.sub.start()
    pub = make_publisher(mosquitto.port)
    append(writer, 40)
    pub.notify()
    mosquitto.stop()  # while records are in flight
    for _ in range(6):  # the station keeps measuring while the broker is down
        append(writer, 10)
        pub.notify()
        time.sleep(0.05)
    assert wait_until(lambda: not pub.connected, 5)
    assert writer.depth() > 0
    mosquitto.restart()
    assert pub.wait_drained(20), pub.last_error
    assert sink.wait(lambda: len(set(sink.seqs())) >= 100, 20)
    sink.sub.stop()
    assert sink.distinct() == list(range(1, 101))


def test_broker_down_keeps_records_in_outbox(writer, make_publisher) -> None:
    events: list[str] = []
    pub = make_publisher(free_port(), on_event=events.append)  # nothing listens there
    append(writer, 12)
    pub.notify()
    assert wait_until(lambda: bool(pub.last_error), 5)
    time.sleep(0.5)
    assert not pub.connected
    assert writer.depth() == 12
    assert pub.last_error and "cannot reach" in pub.last_error


def test_outbox_not_ram_is_the_queue(mosquitto, writer, outbox_path) -> None:
    """What one publisher could not deliver (broker down, its RAM queue gone with
    it) is sent by the next one from the outbox, in seq order."""
    down = Publisher(outbox_path=outbox_path, station_id=STATION, host="127.0.0.1", port=free_port(), version="1")
    down.start()
    append(writer, 25)
    down.notify()
    time.sleep(0.3)
    down.stop(timeout=0.5)
    assert writer.depth() == 25
    sink = Collector(mosquitto, f"stations/{STATION}/records", "sink-handover")
    sink.sub.start()
    up = Publisher(outbox_path=outbox_path, station_id=STATION, host="127.0.0.1", port=mosquitto.port, version="1")
    up.start()
    try:
        assert up.wait_drained(10)
        assert sink.wait(lambda: len(sink.msgs) >= 25)
    finally:
        up.stop()
        sink.sub.stop()
    assert sink.seqs() == list(range(1, 26))


def test_acl_denial_is_not_delivery(make_mosquitto, writer, make_publisher) -> None:
    broker = make_mosquitto(acl="topic read stations/#\ntopic write stations/+/status\n")
    events: list[str] = []
    pub = make_publisher(broker.port, on_event=events.append)
    append(writer, 8)
    pub.notify()
    wait_until(lambda: bool(pub.last_error and "ACL" in pub.last_error), 10)
    assert pub.last_error and f"ACL denies stations/{STATION}/records" in pub.last_error
    assert "grant write to this station" in pub.last_error
    assert any("ACL" in e for e in events)
    time.sleep(1.5)  # at least one retry has happened and been refused too
    assert writer.depth() == 8
    assert pub.connected
    # Once the broker grants write, the kept records go out without any help.
    broker.acl = "topic readwrite stations/#\n"
    broker.restart()
    assert pub.wait_drained(20), pub.last_error
    assert wait_until(lambda: pub.last_error is None, 5), pub.last_error


def test_birth_on_every_connect_and_will_on_clean_stop(mosquitto, writer, make_publisher) -> None:
    append(writer, 3)
    pub = make_publisher(mosquitto.port)
    assert pub.wait_drained(10)
    # A late subscriber gets the retained birth.
    late = Collector(mosquitto, f"stations/{STATION}/status", "status-1")
    late.sub.start()
    assert late.wait(lambda: len(late.msgs) >= 1)
    first = late.statuses()[-1]
    assert first["state"] == "online" and first["version"] == "9.9.9"
    assert isinstance(first["outbox_depth"], int)
    assert late.msgs[-1][1].retain
    # Reconnect after a broker restart: a new birth, with the current depth.
    mosquitto.stop()
    append(writer, 4)
    mosquitto.restart()
    assert late.wait(lambda: sum(s["state"] == "online" for s in late.statuses()) >= 2)
    birth = [s for s in late.statuses() if s["state"] == "online"][1]
    assert birth["outbox"] == {"stored": 4, "published": 3, "acked": 0, "rejected": 0}
    assert birth["outbox_depth"] == 7 and birth["last_seq"] == 7 and birth["version"] == "9.9.9"
    assert pub.wait_drained(10)
    # Not stale after the outage: the status follows the backlog as it goes out.
    assert late.wait(lambda: late.statuses()[-1].get("outbox", {}).get("stored") == 0)
    assert late.statuses()[-1]["outbox"] == {"stored": 0, "published": 7, "acked": 0, "rejected": 0}
    pub.stop()
    assert late.wait(lambda: late.statuses()[-1] == {"state": "offline"})
    late.sub.stop()


def test_last_will_when_the_station_dies(mosquitto, outbox_path) -> None:
    """SIGKILL the publishing process: the broker must publish the retained will."""
    code = (
        "import sys, time\n"
        "from station.delivery.publisher import Publisher\n"
        f"p = Publisher(outbox_path=sys.argv[1], station_id={STATION!r}, host='127.0.0.1', "
        "port=int(sys.argv[2]), version='1', keepalive=5)\n"
        "p.start()\n"
        "while not p.connected: time.sleep(0.01)\n"
        "print('up', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(outbox_path), str(mosquitto.port)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
        status = Collector(mosquitto, f"stations/{STATION}/status", "status-2")
        status.sub.start()
        assert status.wait(lambda: any(s["state"] == "online" for s in status.statuses()))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        assert status.wait(lambda: status.statuses()[-1] == {"state": "offline"}, 10)
        status.sub.stop()
        # And it is retained: a consumer arriving later sees the station as offline.
        later = Collector(mosquitto, f"stations/{STATION}/status", "status-3")
        later.sub.start()
        assert later.wait(lambda: len(later.msgs) >= 1)
        later.sub.stop()
        assert later.statuses() == [{"state": "offline"}]
        assert later.msgs[0][1].retain
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


def test_window_above_the_brokers_receive_maximum_keeps_delivering(mosquitto, writer, make_publisher) -> None:
    """mosquitto advertises Receive Maximum 20. A window of 1000 used to kill
    paho's network thread at the CONNACK (it refuses a new in-flight limit on an
    open connection) and delivery stopped without a word."""
    events: list[str] = []
    sink = Collector(mosquitto, f"stations/{STATION}/records", "sink-window")
    sink.sub.start()
    append(writer, 300)
    pub = make_publisher(mosquitto.port, window=1000, on_event=events.append)
    assert pub.wait_drained(20), pub.last_error
    assert pub.window == 20 and pub.configured_window == 1000
    told = [e for e in events if "Receive Maximum" in e]
    assert told == ["mqtt.window 1000 is above the broker's Receive Maximum 20: sending at most 20 records at a time"]
    # Still alive after a reconnect, and told only once.
    mosquitto.restart()
    assert wait_until(lambda: pub.connected, 10)
    append(writer, 200)
    pub.notify()
    assert pub.wait_drained(20), pub.last_error
    assert sink.wait(lambda: len(set(sink.seqs())) >= 500)
    sink.sub.stop()
    assert sink.distinct() == list(range(1, 501))
    assert sum("Receive Maximum" in e for e in events) == 1
    assert not any("client ID" in e for e in events)  # a broker restart is not a twin


def test_window_within_the_receive_maximum_is_not_changed(mosquitto, writer, make_publisher) -> None:
    events: list[str] = []
    append(writer, 10)
    pub = make_publisher(mosquitto.port, window=20, on_event=events.append)  # exactly the broker's 20
    assert pub.wait_drained(10)
    assert pub.window == 20
    assert not any("Receive Maximum" in e for e in events)


def _twin_problem(host: str, port: int) -> str:
    """Connect a link, then a second one with the same client ID; return what
    the first one told its owner."""
    from station.delivery.mqtt import MqttLink

    problems: list[str] = []
    first = MqttLink(host, port, "station-twin", on_problem=lambda what, fix: problems.append(f"{what}. Fix: {fix}"))
    second = MqttLink(host, port, "station-twin")
    first.start()
    try:
        assert first.wait_connected(5)
        second.start()
        assert wait_until(lambda: any("client ID" in p for p in problems), 10), problems
    finally:
        first.stop()
        second.stop()
    told = [p for p in problems if "client ID" in p]
    assert "network" not in told[0]
    assert "give each station its own mqtt.client_id" in told[0]
    return told[0]


def test_client_id_taken_over_is_told_as_such(mosquitto) -> None:
    """mosquitto 2.0.11 closes the older connection without reason 142; the two
    clients then knock each other off after every connect."""
    told = _twin_problem(mosquitto.host, mosquitto.port)
    assert "another client uses the same client ID 'station-twin'" in told


def test_reason_142_session_taken_over(tmp_path) -> None:
    """Brokers that do send DISCONNECT with reason 142 (EMQX, HiveMQ): a real TCP
    peer speaking just enough MQTT 5 to accept a CONNECT and then take it over."""
    import socket

    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(4096)  # the CONNECT
                conn.sendall(b"\x20\x03\x00\x00\x00")  # CONNACK: no session, success, no properties
                conn.sendall(b"\xe0\x02\x8e\x00")  # DISCONNECT: 142 Session taken over
                time.sleep(0.1)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    from station.delivery.mqtt import MqttLink

    problems: list[str] = []
    link = MqttLink("127.0.0.1", port, "station-twin", on_problem=lambda what, fix: problems.append(what + fix))
    link.start()
    try:
        assert wait_until(lambda: bool(problems), 5)
    finally:
        link.stop()
        stop.set()
        t.join()
        srv.close()
    assert "another client connected with the same client ID 'station-twin' (session taken over)" in problems[0]


def test_unexpected_error_is_logged_with_a_traceback_once(mosquitto, writer, outbox_path, make_publisher,
                                                          caplog) -> None:
    """A bug (here: a row that a foreign tool wrote as TEXT, so bytes() of it raises
    TypeError) keeps the publisher alive, is told as a status line, and is logged
    with its traceback once, not once per retry."""
    import hashlib
    import logging
    import sqlite3

    append(writer, 1)
    with sqlite3.connect(outbox_path) as db:  # not through Outbox: this is the foreign tool
        db.execute("INSERT INTO records(seq, record_id, sha256, data, stored_at) VALUES (2, 'rec-2', ?, ?, 0)",
                   (hashlib.sha256(b"x").digest(), "text, not a COSE blob"))
    db.close()
    caplog.set_level(logging.ERROR, logger="station.delivery.publisher")
    events: list[str] = []
    pub = make_publisher(mosquitto.port, on_event=events.append)
    pub.notify()

    def logged() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "station.delivery.publisher"]

    assert wait_until(lambda: bool(logged()), 10), events
    record = logged()[0]
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert record.exc_info[0] is TypeError
    assert "Traceback" in caplog.text and "pending" in caplog.text  # where it broke
    assert pub.last_error and pub.last_error.startswith("publisher error: TypeError(")
    assert any(e.startswith("publisher error: TypeError(") for e in events)
    time.sleep(1.5)  # at least one retry of the same failing step
    assert len(logged()) == 1
    assert pub._thread is not None and pub._thread.is_alive()


def test_a_problem_told_on_pahos_thread_is_told_once_and_clears(make_mosquitto, writer, make_publisher) -> None:
    """A refused status arrives on paho's network thread, a delivery on the pump
    thread: both change the publisher's one current problem. The refusal repeats with
    every heartbeat but is told once; a record delivered afterwards clears it."""
    broker = make_mosquitto(acl="topic read stations/#\ntopic write stations/+/records\n")
    events: list[str] = []
    pub = make_publisher(broker.port, on_event=events.append, heartbeat_s=0.2)
    refused = f"broker refused the status message on stations/{STATION}/status"
    assert wait_until(lambda: bool(pub.last_error and refused in pub.last_error), 10), pub.last_error
    assert "grant write on it to this station" in (pub.last_error or "")
    # About five heartbeats, each refused again on paho's thread: not told again.
    assert not wait_until(lambda: sum(refused in e for e in events) > 1, 1.0), events
    append(writer, 1)
    pub.notify()
    assert pub.wait_drained(10), pub.last_error
    # Delivery clears the problem; the next refused heartbeat is news again, which
    # also shows the refusals went on during the quiet second above.
    assert wait_until(lambda: sum(refused in e for e in events) == 2, 5), events
    told = [e for e in events if refused in e or e == "records are being delivered again"]
    assert told[0].startswith(refused) and told[1] == "records are being delivered again" and told[2].startswith(refused)
    assert len(told) == 3, told
