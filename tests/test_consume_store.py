"""The consumer's storage, dedupe and gap logic on SQLite (the embedded default), no broker."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from consumerkit import chain, make_keys, record, write_trust
from station.central.gaps import GapWatch
from station.central.ingest import Incoming, Ingestor
from station.central.store import SqliteStore, open_store
from station.central.trust import load_trust_file
from station.errors import StationError


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def store(tmp_path):
    s = open_store(None, tmp_path / "c.sqlite")
    yield s
    s.close()


@pytest.fixture
def ingest(tmp_path, keys, store):
    return Ingestor(load_trust_file(write_trust(tmp_path, keys)), store)


def _run(ingest, store, items, station="S1"):
    store.begin()
    out = ingest.run([Incoming(d, f"stations/{station}/records") for d in items])
    store.commit()
    return out


def test_the_same_record_twice_is_stored_once_and_acked_twice(ingest, store, keys):
    records = chain(keys["a"], 5)
    first = _run(ingest, store, records + records[:2])  # a redelivery inside one batch
    again = _run(ingest, store, records)  # and in a later one (another consumer, or after a crash)
    assert (first.stored, first.duplicates, again.stored, again.duplicates) == (5, 2, 0, 5)
    assert store.count() == 5 and store.count("rejected") == 0
    assert [a["verdict"] for a in first.acks["S1"] + again.acks["S1"]] == ["accepted"] * 12


def test_two_different_records_for_one_seq_in_one_batch_store_the_first_and_reject_the_other(ingest, store, keys):
    one = chain(keys["a"], 2)
    other = record(keys["a"], 2, bytes(32), rid="other")
    out = _run(ingest, store, [one[0], one[1], other, other])  # the first copy of a seq to arrive is kept
    assert (out.stored, out.duplicates, out.rejected) == (2, 0, 2)  # the same rejected bytes: two acks, one row
    assert store.digests([("S1", 2)]) == {("S1", 2): hashlib.sha256(one[1]).digest()}
    assert store.count("rejected") == 1
    assert [a["verdict"] for a in out.acks["S1"]].count("rejected") == 2
    out = _run(ingest, store, [other])  # and against the table in a later batch
    assert out.rejected == 1 and "two different signed records" in out.acks["S1"][0]["reason"]


def test_a_record_on_another_stations_topic_is_rejected_and_acked_to_that_topic(ingest, store, keys):
    out = _run(ingest, store, chain(keys["b"], 1, station="S2"), station="S1")
    assert out.rejected == 1 and "published on stations/S1/records but claims station_id 'S2'" in out.acks["S1"][0]["reason"]
    assert store.count() == 0 and store.count("alarms") == 1


def test_a_rejected_record_redelivered_is_one_row(ingest, store, keys):
    bad = record(keys["b"], 1, bytes(32), station="S1")
    _run(ingest, store, [bad, bad])
    assert store.count("rejected") == 1


def test_a_broken_link_is_stored_but_raises_an_alarm(ingest, store, keys):
    good = chain(keys["a"], 2)
    stray = record(keys["a"], 3, bytes(32))  # prev is not the hash of seq 2
    out = _run(ingest, store, good + [stray])
    assert out.stored == 3 and out.alarms == ["S1: hash chain broken between seq 2 and 3"]
    out = _run(ingest, store, [record(keys["a"], 1, b"\x01" * 32, station="S2")], station="S2")
    assert out.rejected == 1  # S2's chain is signed by key b only: key a is S1's


def test_the_contiguous_head_and_the_next_stored_seq(store, ingest, keys):
    records = chain(keys["a"], 9)
    _run(ingest, store, [records[i] for i in (0, 1, 2, 5, 8)])
    assert store.contiguous_head("S1", 0) == (3, 6)
    assert store.contiguous_head("S1", 3) == (3, 6)
    assert store.contiguous_head("nobody", 0) == (0, None)
    _run(ingest, store, records[3:5])
    assert store.contiguous_head("S1", 3) == (6, 9)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_a_gap_is_asked_for_only_after_the_grace_and_then_at_most_once_per_interval(store, ingest, keys):
    records = chain(keys["a"], 3000)
    _run(ingest, store, records[:2] + records[2999:])  # 3..2999 missing
    clock = Clock()
    watch = GapWatch(store, grace=1.0, interval=5.0, max_span=1000, clock=clock)
    assert watch.check({"S1"}) == []  # just seen: maybe still in another consumer's batch
    clock.t += 0.999
    assert watch.check(set()) == []
    clock.t += 0.001  # grace reached exactly (<=)
    assert watch.check(set()) == [("S1", 3, 1002)]  # bounded to max_span seqs
    clock.t += 4.999
    assert watch.check(set()) == []
    clock.t += 0.001
    assert watch.check(set()) == [("S1", 3, 1002)]
    _run(ingest, store, records[2:2998])  # the replay arrives; only 2999 is still missing
    clock.t += 5
    assert watch.check({"S1"}) == []  # a new hole: its own grace starts now
    clock.t += 1
    assert watch.check(set()) == [("S1", 2999, 2999)]
    _run(ingest, store, records[2998:2999])
    assert watch.check({"S1"}) == [] and watch.open == {} and watch.heads["S1"] == 3000


def test_database_urls(tmp_path):
    assert isinstance(open_store(f"sqlite://{tmp_path}/a.sqlite", tmp_path / "x"), SqliteStore)
    assert isinstance(open_store(str(tmp_path / "b.sqlite"), tmp_path / "x"), SqliteStore)
    with pytest.raises(StationError, match="unknown database kind 'mysql'"):
        open_store("mysql://h/db", tmp_path / "x")
    with pytest.raises(StationError, match="cannot open SQLite database"):
        open_store(str(tmp_path / "no" / "dir" / "c.sqlite"), tmp_path / "x")


def test_the_sqlite_schema_keys_records_by_station_and_seq(store, ingest, keys):
    _run(ingest, store, chain(keys["a"], 1))
    with pytest.raises(sqlite3.IntegrityError):
        store.execute("INSERT INTO records (station_id, seq, record_id, digest, prev, cose, simulated, received_at) "
                      "VALUES ('S1', 1, 'x', x'00', x'00', x'00', 0, 'now')")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=600))
def test_arbitrary_bytes_are_rejected_with_a_reason_never_a_crash(ingest, store, data):
    out = _run(ingest, store, [data])
    assert out.rejected == 1 and out.stored == 0
    (ack,) = out.acks["S1"]
    assert ack["verdict"] == "rejected" and ack["reason"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(i=st.integers(0, 10_000), b=st.integers(1, 255))
def test_a_genuine_record_with_any_byte_flipped_is_rejected_or_is_the_same_signed_content(ingest, store, keys, i, b):
    good = chain(keys["a"], 1)[0]
    i %= len(good)
    data = good[:i] + bytes([good[i] ^ b]) + good[i + 1:]
    out = _run(ingest, store, [data])
    if out.rejected != 1:  # only bytes that carry the very same signed content may be accepted
        assert store.digests([("S1", 1)]) == {("S1", 1): hashlib.sha256(good).digest()}
