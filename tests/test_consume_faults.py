"""Fault injection on the central side of delivery: the station's outbox and
Publisher (acks, re-sends, replays) as producer, a real mosquitto, `station
consume` processes into a real PostgreSQL. The broker is SIGKILLed, a consumer
is SIGKILLed (and comes back without its session, or inside a shared group).
Each ends with PostgreSQL holding every record exactly once, seq contiguous,
the chain intact, and nothing unacked in the station's outbox."""

from __future__ import annotations

import os
import re
import signal

import psycopg

from consumerkit import Listener, chain, consumer, make_keys, write_trust
from faultkit import append, assert_all_acked, assert_central_holds, station_publisher, wait_until
from station.delivery.outbox import Outbox


def _acked(box: Outbox) -> int:
    return box.counts().acked


def _stream_then(box: Outbox, pub, records: list[bytes], fault, first_seq: int = 1) -> None:
    """Append ``records`` (seq first_seq..) as a stream and inject ``fault`` in its middle.

    Acks may come in one burst (a consumer acks a whole batch at once), so the
    second half is added only once the first is flowing: the fault then strikes
    with records in the outbox not yet delivered, whatever the timing."""
    half = len(records) // 2
    append(box, records[:half], first_seq)
    wait_until(lambda: _acked(box) >= first_seq - 1 + half // 2, 15, lambda: f"{box.counts()} {pub.last_error}")
    append(box, records[half:], first_seq + half)
    fault()


def _stored(db: str) -> int:
    with psycopg.connect(db) as conn:
        return conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]


def test_broker_sigkilled_and_restarted_10_times_during_a_stream_of_2000(mosquitto, postgres, tmp_path):
    parts, size = 10, 200
    keys = make_keys(tmp_path)
    db = postgres.create_db("brokerkill")
    records = chain(keys["a"], parts * size)
    state = tmp_path / "state"
    state.mkdir()
    box = Outbox(state / "outbox.db")
    c = consumer(mosquitto.port, write_trust(tmp_path, keys), db, "central-1")
    c.wait_for("consuming")
    pub = station_publisher(mosquitto.port, state)
    try:
        for k in range(parts):  # records keep coming while the broker dies and comes back
            first = k * size
            # SIGKILL: no persistence written, the sessions die with it.
            _stream_then(box, pub, records[first:first + size], mosquitto.kill, first + 1)
            assert _acked(box) < first + size, "the part drained before the kill: not mid-stream"
            mosquitto.restart()
        assert pub.wait_drained(30, acked=True), (pub.last_error, box.counts(), c.output[-2000:])
    finally:
        pub.stop(timeout=1)
        box.close()
    c.stop()
    assert_all_acked(state / "outbox.db", parts * size)
    assert_central_holds(db, "S1", records)


def test_consumer_sigkilled_and_back_without_its_session_asks_for_the_gap_and_gets_it(mosquitto, postgres,
                                                                                       tmp_path):
    keys = make_keys(tmp_path)
    trust = write_trust(tmp_path, keys)
    db = postgres.create_db("consumerkill")
    records = chain(keys["a"], 800)
    state = tmp_path / "state"
    state.mkdir()
    box = Outbox(state / "outbox.db")
    asks = Listener(mosquitto.port, "stations/+/cmd/replay", "replay-listener")
    gap = ("--replay-grace", "0.3", "--replay-interval", "1")
    c = consumer(mosquitto.port, trust, db, "central-1", *gap)
    c.wait_for("consuming")
    # The re-send of overdue records must not be what fills the gap: only the replay can.
    pub = station_publisher(mosquitto.port, state, ack_timeout_s=600.0)
    try:
        _stream_then(box, pub, records[:300], lambda: os.kill(c.proc.pid, signal.SIGKILL))  # a batch in hand lost
        c.proc.wait()
        head = _stored(db)  # one consumer commits in seq order: 1..head, no holes
        assert head < 300, "the stream ended before the kill"
        wait_until(lambda: _acked(box) == head, 10, lambda: f"{box.counts()}, {head} stored")
        append(box, records[300:600], 301)  # published while no consumer is there to take them
        assert pub.wait_drained(15), box.counts()
        # A new session: what the broker queued for central-1 never reaches it.
        c2 = consumer(mosquitto.port, trust, db, "central-2", *gap)
        c2.wait_for("consuming")
        assert _acked(box) == head  # nothing of the gap arrived by another way
        append(box, records[600:], 601)  # seq 601.. arrive: the hole below them is a gap
        asks.wait(lambda: len(asks.messages) >= 1)
        assert pub.wait_drained(30, acked=True), (pub.last_error, box.counts(), c2.output[-2000:])
    finally:
        pub.stop(timeout=1)
        box.close()
    c2.stop()
    asks.close()
    topic, first = asks.messages[0]
    assert topic == "stations/S1/cmd/replay"
    assert (first["from_seq"], first["to_seq"]) == (head + 1, 600)
    c2.wait_for(r"S1: seq \d+\.\.\d+ missing; asking the station to replay them")
    assert_all_acked(state / "outbox.db", 800)
    assert_central_holds(db, "S1", records)


def test_two_consumers_in_a_group_split_the_stream_one_sigkilled_and_restarted(mosquitto, postgres, tmp_path):
    keys = make_keys(tmp_path)
    trust = write_trust(tmp_path, keys)
    db = postgres.create_db("group")
    records = chain(keys["a"], 600)
    state = tmp_path / "state"
    state.mkdir()
    box = Outbox(state / "outbox.db")
    group = ("--group", "central")
    a = consumer(mosquitto.port, trust, db, "consumer-a", *group)
    b = consumer(mosquitto.port, trust, db, "consumer-b", *group)
    a.wait_for("consuming"), b.wait_for("consuming")
    pub = station_publisher(mosquitto.port, state)
    try:
        _stream_then(box, pub, records[:300], lambda: os.kill(a.proc.pid, signal.SIGKILL))  # its share half done
        a.proc.wait()
        assert _acked(box) < 300, "the stream ended before the kill"
        append(box, records[300:], 301)
        a2 = consumer(mosquitto.port, trust, db, "consumer-a", *group)  # same client id: its session resumes
        a2.wait_for("consuming")
        assert pub.wait_drained(30, acked=True), (pub.last_error, box.counts(), b.output[-2000:])
    finally:
        pub.stop(timeout=1)
        box.close()
    a2.stop(), b.stop()
    a2.wait_for("stored"), b.wait_for("stored")
    by_b = int(re.search(r"stored (\d+) new", b.output).group(1))
    by_a2 = int(re.search(r"stored (\d+) new", a2.output).group(1))
    assert 0 < by_b < 600 and by_a2 > 0  # the group split the stream, before and after the kill
    assert_all_acked(state / "outbox.db", 600)
    assert_central_holds(db, "S1", records)
