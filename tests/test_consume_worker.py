"""The consumer's worker without a broker: the order of commit, application acks
and PUBACKs, batches, database outages, gap checks and stopping. Real SQLite in
tmp_path; the worker's `send` and `ack` are the two callables it is built with,
recorded here in the order they were called."""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import pytest

from consumerkit import chain, make_keys, record, write_trust
from station.central.consume import BATCH_MAX, Consumer
from station.central.gaps import GapWatch
from station.central.ingest import Incoming
from station.central.store import SqliteStore
from station.central.trust import load_trust_file

T1 = "stations/S1/records"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def s1(keys):
    return chain(keys["a"], 12)


@pytest.fixture
def trust(tmp_path, keys):
    return load_trust_file(write_trust(tmp_path, keys))


# -- the worker ----------------------------------------------------------------------

class Wire:
    """What the worker sends and acknowledges, in the one order it happened."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.raw: list[bytes] = []
        self.log: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def send(self, topic: str, payload: bytes) -> None:
        with self.lock:
            self.raw.append(payload)
            self.events.append(("send", topic, json.loads(payload)))

    def ack(self, token: object) -> None:
        with self.lock:
            self.events.append(("puback", token))

    def say(self, kind: str, text: str) -> None:
        with self.lock:
            self.log.append((kind, text))


def wait_for(pred, timeout=5.0) -> bool:
    # Ten times what the slowest wait here takes on a loaded 2-core machine; a
    # mutant that stops the worker costs this much per test in `make mutation`.
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def worker(tmp_path, trust):
    made = []

    def make(**gap_kw):
        wire = Wire()
        store = SqliteStore(tmp_path / "c.sqlite")
        gaps = GapWatch(SqliteStore(tmp_path / "c.sqlite"), **gap_kw)
        c = Consumer(trust, store, wire.send, wire.ack, gaps, wire.say)
        threads = [threading.Thread(target=c.run, daemon=True), threading.Thread(target=c.gap_loop, daemon=True)]
        made.append((c, threads))
        return c, wire, threads

    yield make
    for c, threads in made:
        c.stop.set()
        for t in threads:
            if t.is_alive():
                t.join(5)
        c.store.close()
        c.gaps.store.close()


def test_acks_go_out_before_the_pubacks_in_batches_of_at_most_batch_max(worker, keys):
    assert BATCH_MAX == 500
    records = chain(keys["a"], BATCH_MAX + 1)
    c, wire, (loop, _) = worker()
    for i, data in enumerate(records):
        c.inbox.put(Incoming(data, T1, None if i == 3 else i))  # token None: nothing to PUBACK
    loop.start()
    assert wait_for(lambda: c.stored == BATCH_MAX + 1)
    assert wait_for(lambda: len(wire.events) == 2 + BATCH_MAX)
    kinds = [e[0] for e in wire.events]
    assert kinds == ["send"] + ["puback"] * (BATCH_MAX - 1) + ["send", "puback"]
    first, second = wire.events[0], wire.events[BATCH_MAX]
    assert first[1] == "stations/S1/acks" and [a["seq"] for a in first[2]["acks"]] == list(range(1, BATCH_MAX + 1))
    assert second[2] == {"acks": [{"seq": BATCH_MAX + 1, "record_id": f"S1-r{BATCH_MAX + 1}", "verdict": "accepted"}]}
    assert [e[1] for e in wire.events if e[0] == "puback"] == [i for i in range(BATCH_MAX + 1) if i != 3]
    assert (c.stored, c.duplicates, c.rejected, c.failure) == (BATCH_MAX + 1, 0, 0, None)


def test_counts_alarms_and_touched_stations_add_up_over_batches(worker, keys, s1):
    s2 = chain(keys["b"], 1, station="S2")
    c, wire, (loop, _) = worker()
    loop.start()
    c.inbox.put(Incoming(s1[0], T1, 1))
    c.inbox.put(Incoming(s1[0], T1, 2))
    c.inbox.put(Incoming(b"junk", T1, 3))
    c.inbox.put(Incoming(s2[0], "stations/S2/records", 4))
    assert wait_for(lambda: ("puback", 4) in wire.events)
    for i, data in enumerate([s1[0], b"junk2", record(keys["a"], 2, bytes(32))]):  # 2 does not link to 1
        c.inbox.put(Incoming(data, T1, 10 + i))
    assert wait_for(lambda: ("puback", 12) in wire.events)
    assert (c.stored, c.duplicates, c.rejected, c.failure) == (3, 2, 2, None)
    assert c._touched == {"S1", "S2"}  # for the gap check: stations with new rows, from both batches
    kinds, texts = zip(*wire.log)
    assert kinds == ("fault",) * 3 and texts[2] == "S1: hash chain broken between seq 1 and 2"
    assert all(t.startswith("REJECTED stations/S1/records seq None: ") for t in texts[:2])
    # The acks are compact JSON: a batch of 500 stays one small message.
    assert all(raw == json.dumps(json.loads(raw), separators=(",", ":")).encode() for raw in wire.raw)
    assert b'{"seq":1,"record_id":"S1-r1","verdict":"accepted"}' in wire.raw[0]


def test_an_idle_worker_stops_when_told(worker):
    c, wire, (loop, gap_thread) = worker()
    loop.start()
    gap_thread.start()
    c.stop.set()
    loop.join(5)
    gap_thread.join(5)
    assert not loop.is_alive() and not gap_thread.is_alive() and c.failure is None and wire.events == []


def test_a_database_failure_puts_the_batch_back_unacknowledged_and_in_order(worker, s1, tmp_path):
    c, wire, (loop, _) = worker()
    other = sqlite3.connect(tmp_path / "c.sqlite")
    other.execute("ALTER TABLE records RENAME TO records_away")  # the next insert fails: no such table
    other.commit()
    for i in range(3):
        c.inbox.put(Incoming(s1[i], T1, i))
    loop.start()
    assert wait_for(lambda: wire.log)
    kind, text = wire.log[0]
    assert kind == "fault" and "3 record(s) not acknowledged" in text and wire.events == []
    other.execute("ALTER TABLE records_away RENAME TO records")
    other.commit()
    other.close()
    assert wait_for(lambda: c.stored == 3)
    assert wait_for(lambda: len(wire.events) == 4)
    assert [e[0] for e in wire.events] == ["send", "puback", "puback", "puback"]
    assert [e[1] for e in wire.events[1:]] == [0, 1, 2]
    assert c.failure is None and c.store.count() == 3


def test_a_hole_is_asked_for_on_the_command_topic(worker, s1):
    c, wire, (loop, gap_thread) = worker(grace=0.0)
    for i in (0, 1, 4):
        c.inbox.put(Incoming(s1[i], T1, i))
    loop.start()
    gap_thread.start()
    assert wait_for(lambda: any(e[0] == "send" and e[1].endswith("/replay") for e in wire.events))
    ask = next(e for e in wire.events if e[0] == "send" and e[1].endswith("/replay"))
    assert ask == ("send", "stations/S1/cmd/replay", {"from_seq": 3, "to_seq": 4})
    assert ("warn", "S1: seq 3..4 missing; asking the station to replay them") in wire.log


def test_a_gap_check_that_fails_on_the_database_keeps_its_stations_for_the_next(worker, s1, tmp_path):
    c, wire, (loop, _) = worker(grace=0.0)
    for i in (0, 2):
        c.inbox.put(Incoming(s1[i], T1, i))
    loop.start()
    assert wait_for(lambda: c.stored == 2 and c._touched == {"S1"})
    c.stop.set()
    loop.join(5)
    other = sqlite3.connect(tmp_path / "c.sqlite")
    other.execute("ALTER TABLE records RENAME TO records_away")
    other.commit()
    for _ in range(2):  # the check the gap thread runs, here in step with the test
        c._gap_check()
        assert c._touched == {"S1"} and c.gaps.heads == {}
    other.execute("ALTER TABLE records_away RENAME TO records")
    other.commit()
    other.close()
    c._gap_check()
    assert c._touched == set() and c.gaps.heads == {"S1": 1}
    assert wire.events[-1] == ("send", "stations/S1/cmd/replay", {"from_seq": 2, "to_seq": 2})


def test_a_bug_in_the_worker_stops_it_with_the_reason(worker):
    c, wire, (loop, _) = worker()
    c.inbox.put("not an Incoming")  # type: ignore[arg-type]
    loop.start()
    loop.join(5)
    assert not loop.is_alive() and c.failure.startswith("AttributeError: ") and wire.events == []


def test_a_bug_in_the_gap_check_stops_the_consumer(worker):
    c, wire, (_, gap_thread) = worker()
    c.gaps.store.close()  # not a database outage the check can wait out: a programming error
    with c._touched_lock:
        c._touched.add("S1")
    gap_thread.start()
    gap_thread.join(5)
    assert not gap_thread.is_alive() and c.stop.is_set() and c.failure.startswith("ProgrammingError: ")
