"""Application acks, re-sends, rejections, replays and the retained status:
the publisher against a real mosquitto and a tiny acking consumer."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ackconsumer import AckingConsumer
from station.delivery.acks import BadMessage, Replay, parse_acks, parse_replay
from station.delivery.mqtt import MessageProperties, MqttSubscriber
from station.delivery.outbox import Outbox, StoredRecord
from station.delivery.outbox_states import AppAck
from station.delivery.publisher import Publisher
from station.records.head import CENTRAL_ACK, read_head

STATION = "st-acks"


def wait_until(pred: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def append(box: Outbox, n: int) -> None:
    start = box.next_seq
    box.append([StoredRecord(s, f"rec-{s}", b"\xd2\x84" + s.to_bytes(4, "big")) for s in range(start, start + n)])


class Statuses:
    def __init__(self, broker) -> None:
        self.items: list[dict] = []
        self.sub = MqttSubscriber(broker.host, broker.port, f"stations/{STATION}/status", "status-watch", self._on)

    def _on(self, data: bytes, props: MessageProperties) -> None:
        self.items.append(json.loads(data))

    def last(self) -> dict:
        return self.items[-1] if self.items else {}


@pytest.fixture
def state(tmp_path: Path) -> Path:
    d = tmp_path / "state"
    d.mkdir()
    return d


@pytest.fixture
def writer(state: Path) -> Iterator[Outbox]:
    box = Outbox(state / "outbox.db")
    yield box
    box.close()


@pytest.fixture
def make_publisher(state: Path) -> Iterator[Callable[..., Publisher]]:
    made: list[Publisher] = []

    def make(port: int, **kw: object) -> Publisher:
        kw.setdefault("window", 10)
        pub = Publisher(outbox_path=state / "outbox.db", station_id=STATION, host="127.0.0.1", port=port,
                        version="1.0", state_dir=state, **kw)
        made.append(pub)
        pub.start()
        return pub

    yield make
    for pub in made:
        pub.stop(timeout=1)


@pytest.fixture
def make_consumer(mosquitto) -> Iterator[Callable[..., AckingConsumer]]:
    made: list[AckingConsumer] = []

    def make(**kw: object) -> AckingConsumer:
        c = AckingConsumer(mosquitto.host, mosquitto.port, STATION, name=f"acker{len(made)}", **kw)
        made.append(c)
        return c.start()

    yield make
    for c in made:
        c.stop()


def test_acked_records_reach_the_third_state_in_one_commit(mosquitto, writer, make_publisher, make_consumer,
                                                           state) -> None:
    consumer = make_consumer(batch=25)  # 25 acks per message: one message, one commit
    append(writer, 50)
    pub = make_publisher(mosquitto.port)
    assert pub.wait_drained(15, acked=True), pub.last_error
    c = writer.counts()
    assert (c.stored, c.published, c.acked, c.rejected) == (0, 0, 50, 0)
    assert sorted(set(consumer.seqs)) == list(range(1, 51))
    # The central system's last ack is kept beside the outbox (written right after the commit).
    assert wait_until(lambda: getattr(read_head(state / CENTRAL_ACK), "seq", 0) == 50)


def test_unacked_records_are_sent_again_in_seq_order(mosquitto, writer, make_publisher, make_consumer) -> None:
    consumer = make_consumer()
    consumer.acking.clear()  # the central side is down: PUBACKs, but no acks
    append(writer, 6)
    pub = make_publisher(mosquitto.port, ack_timeout_s=0.6)
    assert consumer.wait(lambda: len(consumer.seqs) >= 12, 10), consumer.seqs
    assert consumer.seqs[:12] == [1, 2, 3, 4, 5, 6] * 2  # the re-send, in seq order
    consumer.acking.set()
    assert pub.wait_drained(10, acked=True)
    n = len(consumer.seqs)
    time.sleep(1.5)  # > 2 ack timeouts: nothing acked is sent again
    assert len(consumer.seqs) == n


def test_resend_boundary_is_strict(writer) -> None:
    append(writer, 2)
    writer.mark_delivered([1], now=100.0)
    writer.mark_delivered([2], now=101.0)
    # delivered_at == cutoff is not overdue yet; one tick later it is.
    assert [r.seq for r in writer.pending(resend_before=100.0)] == []
    assert [r.seq for r in writer.pending(resend_before=100.5)] == [1]
    assert [r.seq for r in writer.pending(resend_before=101.5)] == [1, 2]
    writer.apply_acks([AppAck(1, "rec-1", "accepted")])
    assert [r.seq for r in writer.pending(resend_before=1e12)] == [2]


def test_a_rejected_record_raises_an_alarm_and_stays(mosquitto, writer, make_publisher, make_consumer,
                                                     caplog) -> None:
    caplog.set_level(logging.ERROR)
    told: list[AppAck] = []
    watch = Statuses(mosquitto)
    watch.sub.start()
    consumer = make_consumer(verdict=lambda s: ("rejected", "kid not bound to st-acks") if s == 3 else ("accepted", ""))
    append(writer, 5)
    pub = make_publisher(mosquitto.port, ack_timeout_s=0.5, on_rejected=told.append)
    assert pub.wait_drained(10, acked=True)
    assert wait_until(lambda: bool(told))
    assert told == [AppAck(3, "rec-3", "rejected", "kid not bound to st-acks")]
    assert "REJECTED record seq 3" in caplog.text
    assert writer.rejections() == [(3, "rec-3", "kid not bound to st-acks")]
    assert wait_until(lambda: watch.last().get("outbox", {}).get("rejected") == 1)
    status = watch.last()
    assert status["rejected"] == [{"seq": 3, "record_id": "rec-3", "reason": "kid not bound to st-acks"}]
    assert any("rejected by the central system" in a for a in status["alarms"])
    assert status["outbox_depth"] == 1  # still waiting for a person
    # Under load seq 3 may have been re-sent before its verdict came (ack timeout
    # 0.5 s): that is the re-send working. Once rejected, it is never sent again.
    sent = consumer.seqs.count(3)
    assert sent >= 1
    time.sleep(1.2)  # beyond two ack timeouts
    assert consumer.seqs.count(3) == sent
    # A repeated verdict does not alarm twice.
    consumer.send([{"seq": 3, "record_id": "rec-3", "verdict": "rejected", "reason": "again"}])
    time.sleep(0.5)
    assert len(told) == 1 and writer.rejections()[0][2] == "kid not bound to st-acks"
    watch.sub.stop()


def test_duplicate_and_mismatched_acks(mosquitto, writer, make_publisher, make_consumer, caplog) -> None:
    caplog.set_level(logging.WARNING)
    consumer = make_consumer()
    consumer.acking.clear()
    append(writer, 3)
    pub = make_publisher(mosquitto.port)
    assert pub.wait_drained(10)
    consumer.send([{"seq": 2, "record_id": "someone-else", "verdict": "accepted"}])
    assert wait_until(lambda: "names record someone-else" in caplog.text)
    assert writer.counts().acked == 0
    entries = [{"seq": s, "record_id": f"rec-{s}", "verdict": "accepted"} for s in (1, 2, 3)]
    consumer.send(entries)
    consumer.send(entries)  # a duplicate is harmless
    assert pub.wait_drained(10, acked=True)
    assert writer.counts().acked == 3 and pub.last_error is None


def test_replay_sends_what_is_held_and_says_what_is_not(mosquitto, writer, make_publisher, make_consumer) -> None:
    events: list[str] = []
    watch = Statuses(mosquitto)
    watch.sub.start()
    consumer = make_consumer()
    append(writer, 10)
    pub = make_publisher(mosquitto.port, on_event=events.append)
    assert pub.wait_drained(10, acked=True)
    assert writer.prune(acked_before=time.time() + 1) == 9  # retention over; the newest stays
    append(writer, 2)
    assert pub.wait_drained(10, acked=True)
    before = len(consumer.seqs)
    consumer.send_raw("cmd/replay", json.dumps({"from_seq": 5, "to_seq": 12}).encode())
    assert consumer.wait(lambda: len(consumer.seqs) >= before + 3)
    assert consumer.seqs[before:] == [10, 11, 12]
    assert wait_until(lambda: any("no longer held here: 5..9" in e for e in events)), events
    assert wait_until(lambda: watch.last().get("last_replay") is not None)
    assert watch.last()["last_replay"] == {"from_seq": 5, "to_seq": 12, "not_held": [[5, 9]]}
    watch.sub.stop()


def test_bad_messages_are_reported_and_ignored(mosquitto, writer, make_publisher, make_consumer) -> None:
    events: list[str] = []
    consumer = make_consumer()
    append(writer, 1)
    pub = make_publisher(mosquitto.port, on_event=events.append)
    assert pub.wait_drained(10, acked=True)
    consumer.send_raw("acks", b"\xff not json")
    consumer.send_raw("cmd/replay", b'{"from_seq": 3, "to_seq": 2}')
    consumer.send_raw("cmd/reboot", b"{}")
    assert wait_until(lambda: sum("ignored a message" in e for e in events) == 3), events
    assert any("from_seq 3 is after to_seq 2" in e for e in events)
    assert pub.connected


def test_an_ack_beyond_the_outbox_is_a_rollback_alarm(mosquitto, writer, make_publisher, make_consumer,
                                                       state) -> None:
    consumer = make_consumer()
    append(writer, 2)
    pub = make_publisher(mosquitto.port)
    assert pub.wait_drained(10, acked=True)
    consumer.send([{"seq": 40, "record_id": "rec-40", "verdict": "accepted"}])
    assert wait_until(lambda: "acknowledged seq 40, but this outbox ends at seq 2" in (pub.last_error or ""))
    # Remembered beside the outbox (written right after): the next start refuses.
    assert wait_until(lambda: getattr(read_head(state / CENTRAL_ACK), "seq", 0) == 40)


def test_status_is_current_with_a_heartbeat(mosquitto, writer, make_publisher, make_consumer) -> None:
    consumer = make_consumer()
    consumer.acking.clear()
    watch = Statuses(mosquitto)
    watch.sub.start()
    append(writer, 4)
    pub = make_publisher(mosquitto.port, heartbeat_s=0.3)
    pub.set_status(state="measuring", devices={"scale": "ok"}, session=7)
    assert wait_until(lambda: watch.last().get("outbox", {}).get("published") == 4)
    s = watch.last()
    assert s["state"] == "measuring" and s["devices"] == {"scale": "ok"} and s["session"] == 7
    assert s["last_seq"] == 4 and s["outbox_depth"] == 4 and s["oldest_unacked_age_s"] >= 0
    n = len(watch.items)
    time.sleep(1.0)
    beats = watch.items[n:]
    assert len(beats) >= 2 and beats[-1]["time"] > s["time"]  # heartbeats, same content
    consumer.acking.set()
    consumer.send([{"seq": s_, "record_id": f"rec-{s_}", "verdict": "accepted"} for s_ in range(1, 5)])
    assert wait_until(lambda: watch.last().get("outbox", {}).get("acked") == 4)
    assert watch.last()["outbox_depth"] == 0 and watch.last()["oldest_unacked_age_s"] is None
    pub.stop()
    assert wait_until(lambda: watch.last() == {"state": "offline"})
    watch.sub.stop()


# -- the messages themselves --------------------------------------------------

@given(st.binary(max_size=200))
def test_parsers_take_any_bytes(data: bytes) -> None:
    for parse in (parse_acks, parse_replay):
        try:
            parse(data)
        except BadMessage:
            pass


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                    max_leaves=10))
def test_parsers_take_any_json(doc: object) -> None:
    data = json.dumps({"acks": [doc], "from_seq": doc, "to_seq": doc}).encode()
    for parse in (parse_acks, parse_replay):
        try:
            parse(data)
        except BadMessage:
            pass


@pytest.mark.parametrize("seq, ok", [(0, False), (1, True), (True, False), (1.0, False), (2**63 - 1, True),
                                     (2**63, False), ("1", False)])
def test_ack_seq_boundaries(seq: object, ok: bool) -> None:
    data = json.dumps({"acks": [{"seq": seq, "record_id": "r", "verdict": "accepted"}]}).encode()
    if ok:
        assert parse_acks(data) == [AppAck(seq, "r", "accepted")]  # type: ignore[arg-type]
    else:
        with pytest.raises(BadMessage):
            parse_acks(data)


def test_ack_and_replay_shapes() -> None:
    two = parse_acks(b'{"acks": [{"seq": 12, "record_id": "a", "verdict": "accepted"},'
                     b' {"seq": 13, "record_id": "b", "verdict": "rejected", "reason": "bad kid"}]}')
    assert two == [AppAck(12, "a", "accepted"), AppAck(13, "b", "rejected", "bad kid")]
    assert parse_acks(b'{"acks": [{"seq": 1, "record_id": "a", "verdict": "rejected"}]}')[0].reason
    for bad in (b'{"acks": []}', b'{"acks": [{"seq": 1, "record_id": "", "verdict": "accepted"}]}',
                b'{"acks": [{"seq": 1, "record_id": "a", "verdict": "maybe"}]}', b'[1]'):
        with pytest.raises(BadMessage):
            parse_acks(bad)
    assert parse_replay(b'{"from_seq": 4, "to_seq": 4}') == Replay(4, 4)  # one record
    with pytest.raises(BadMessage):
        parse_replay(b'{"from_seq": 5, "to_seq": 4}')
