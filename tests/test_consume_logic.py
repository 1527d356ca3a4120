"""The consumer's decisions without a broker: what a batch stores, rejects, acks
and alarms (ingest), which holes are asked for (gaps), and the SQL store. Real
SQLite in tmp_path. The worker around them: tests/test_consume_worker.py."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import cbor2
import pytest

from consumerkit import chain, make_keys, record, reencoded, write_trust
from station.central.gaps import GapWatch
from station.central.ingest import Incoming, Ingestor, topic_station
from station.central.store import db_errors, open_store
from station.central.trust import load_trust_file
from station.errors import StationError

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


@pytest.fixture
def store(tmp_path):
    s = open_store(None, tmp_path / "c.sqlite")
    yield s
    s.close()


@pytest.fixture
def ingest(trust, store):
    return Ingestor(trust, store)


def run(ingest, store, items, topic=T1):
    store.begin()
    out = ingest.run([i if isinstance(i, Incoming) else Incoming(i, topic) for i in items])
    store.commit()
    return out


def rows(store, sql):
    return [tuple(r) for r in store.execute(sql).fetchall()]


def digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# -- ingest --------------------------------------------------------------------------

@pytest.mark.parametrize("topic, station", [
    ("stations/S1/records", "S1"), ("stations/S1/acks", None), ("station/S1/records", None),
    ("stations/S1/records/x", None), ("stations/records", None), ("x/stations/S1/records", None),
])
def test_the_station_a_topic_names(topic, station):
    assert topic_station(topic) == station


def test_acks_come_back_in_seq_order_whatever_the_arrival_order(ingest, store, s1):
    out = run(ingest, store, [s1[2], s1[0], s1[1]])
    assert out.acks == {"S1": [{"seq": n, "record_id": f"S1-r{n}", "verdict": "accepted"} for n in (1, 2, 3)]}
    assert (out.stored, out.duplicates, out.rejected, out.alarms, out.touched) == (3, 0, 0, [], {"S1"})
    assert rows(store, "SELECT station_id, seq, record_id, digest, prev, cose, simulated FROM records ORDER BY seq") == [
        ("S1", n, f"S1-r{n}", digest(s1[n - 1]), bytes(32) if n == 1 else digest(s1[n - 2]), s1[n - 1], 0)
        for n in (1, 2, 3)]


def test_a_batch_of_only_duplicates_touches_no_station(ingest, store, s1):
    run(ingest, store, s1[:2])
    out = run(ingest, store, [s1[1], s1[0], s1[1]])
    assert (out.stored, out.duplicates, out.touched, out.alarms) == (0, 3, set(), [])
    assert out.acks["S1"] == [{"seq": n, "record_id": f"S1-r{n}", "verdict": "accepted"} for n in (1, 2, 2)]


def test_a_record_on_a_topic_that_names_no_station_is_taken_on_its_signature(ingest, store, s1):
    out = run(ingest, store, [s1[0]], topic="elsewhere/S9")
    assert out.stored == 1 and out.acks == {"S1": [{"seq": 1, "record_id": "S1-r1", "verdict": "accepted"}]}


def test_a_rejection_names_the_seq_and_record_id_the_record_claims(ingest, store, keys):
    wrong_key = record(keys["b"], 4, bytes(32), rid="claimed")  # S1's seq 4, signed with S2's key
    out = run(ingest, store, [wrong_key])
    (ack,) = out.acks["S1"]
    assert (ack["seq"], ack["record_id"], ack["verdict"]) == (4, "claimed", "rejected") and ack["reason"]
    assert rows(store, "SELECT raw_sha256, topic, station_id, seq, record_id, cose, verdict FROM rejected") == [
        (digest(wrong_key), T1, "S1", 4, "claimed", wrong_key, "rejected")]
    assert rows(store, "SELECT station_id, seq FROM alarms") == [("S1", 4)]
    assert out.alarms[0].startswith(f"REJECTED {T1} seq 4: ")


def test_claims_are_read_from_a_damaged_envelope_too(ingest, store, keys):
    bad = reencoded(record(keys["a"], 7, bytes(32)))  # an unprotected header: refused before the signature
    out = run(ingest, store, [bad])
    assert [(a["seq"], a["record_id"], a["verdict"]) for a in out.acks["S1"]] == [(7, "S1-r7", "rejected")]


@pytest.mark.parametrize("payload", [
    {"seq": True, "record_id": 5}, {"seq": 3.0, "record_id": None}, {"seq": "3", "record_id": b"x"}, [1, 2], 7,
])
def test_claims_of_the_wrong_type_are_not_repeated_back(ingest, store, payload):
    data = cbor2.dumps(cbor2.CBORTag(18, [b"", {}, cbor2.dumps(payload), b""]))
    out = run(ingest, store, [data])
    (ack,) = out.acks["S1"]
    assert (ack["seq"], ack["record_id"], ack["verdict"]) == (None, None, "rejected")


def test_claims_of_the_right_type_are_repeated_back(ingest, store):
    data = cbor2.dumps(cbor2.CBORTag(18, [b"", {}, cbor2.dumps({"seq": 3, "record_id": "r"}), b""]))
    out = run(ingest, store, [data])
    assert [(a["seq"], a["record_id"]) for a in out.acks["S1"]] == [(3, "r")]


def test_garbage_on_a_topic_that_names_no_station_is_stored_and_alarmed_but_acked_to_no_one(ingest, store):
    out = run(ingest, store, [b"\x00junk"], topic="elsewhere")
    assert (out.rejected, dict(out.acks)) == (1, {})
    assert rows(store, "SELECT topic, station_id, seq, record_id FROM rejected") == [("elsewhere", None, None, None)]
    assert rows(store, "SELECT station_id, seq FROM alarms") == [(None, None)]


def test_a_conflict_with_the_table_is_acked_with_the_conflicting_records_own_id(ingest, store, keys, s1):
    run(ingest, store, s1[:2])
    fork = record(keys["a"], 2, digest(s1[0]), rid="fork")
    out = run(ingest, store, [fork, s1[2]])
    assert [(a["seq"], a["record_id"], a["verdict"]) for a in out.acks["S1"]] == [
        (2, "fork", "rejected"), (3, "S1-r3", "accepted")]
    assert (out.stored, out.rejected, out.alarms[-1:]) == (1, 1, out.alarms[-1:])
    assert rows(store, "SELECT seq, record_id FROM rejected") == [(2, "fork")]
    assert out.alarms == [out.alarms[0]] and "seq 2" in out.alarms[0]  # seq 3 links to the stored seq 2: no alarm


def test_a_conflict_on_a_topic_that_names_no_station_is_acked_to_the_records_station(ingest, store, keys, s1):
    run(ingest, store, s1[:2])
    out = run(ingest, store, [record(keys["a"], 2, digest(s1[0]), rid="fork")], topic="elsewhere")
    assert [(a["seq"], a["record_id"], a["verdict"]) for a in out.acks["S1"]] == [(2, "fork", "rejected")]
    assert list(out.acks) == ["S1"]


def test_every_problem_of_a_record_is_in_its_reason(ingest, store, keys):
    payload = cbor2.loads(cbor2.loads(record(keys["a"], 5, bytes(32))).value[2])
    payload["prev"], payload["seq"] = b"\x01", 0  # two schema faults, signed as they are
    out = run(ingest, store, [keys["a"].sign(cbor2.dumps(payload))])
    assert out.acks["S1"][0]["reason"] == ("payload field 'prev' is not a SHA-256 hash (32 bytes); "
                                           "payload field 'seq' is 0; a chain starts at 1")


def test_unreadable_records_are_acked_before_the_readable_ones(ingest, store, s1):
    out = run(ingest, store, [s1[0], b"junk"])  # one lock order: records without a station sort first
    assert [a["verdict"] for a in out.acks["S1"]] == ["rejected", "accepted"]


def test_the_first_record_of_a_chain_must_start_from_zero(ingest, store, keys):
    out = run(ingest, store, [record(keys["a"], 1, b"\x01" * 32)])
    assert out.stored == 1 and len(out.alarms) == 1 and "seq 1" in out.alarms[0]
    assert rows(store, "SELECT station_id, seq FROM alarms") == [("S1", 1)]
    out = run(ingest, store, [record(keys["b"], 1, bytes(32), station="S2")], topic="stations/S2/records")
    assert out.alarms == []


def test_links_are_checked_against_stored_neighbours_on_both_sides(ingest, store, keys, s1):
    run(ingest, store, [s1[0], s1[4]])  # seq 1 and seq 5
    out = run(ingest, store, [s1[1]])  # seq 2 after seq 1: fine
    assert out.alarms == []
    stray4 = record(keys["a"], 4, b"\x04" * 32)  # not s1's seq 4: seq 5 does not link to it, nor it to 3
    out = run(ingest, store, [stray4])
    assert out.alarms == ["S1: hash chain broken between seq 4 and 5"]
    out = run(ingest, store, [s1[2]])  # seq 3 links to 2; seq 4 (stray) does not link to it
    assert out.alarms == ["S1: hash chain broken between seq 3 and 4"]
    assert rows(store, "SELECT station_id, seq FROM alarms ORDER BY id") == [("S1", 4), ("S1", 3)]


def test_a_broken_pair_inside_one_batch_is_reported_once(ingest, store, keys, s1):
    out = run(ingest, store, [s1[0], record(keys["a"], 2, b"\x02" * 32), s1[2]])
    assert out.alarms == ["S1: hash chain broken between seq 1 and 2", "S1: hash chain broken between seq 2 and 3"]


def test_a_duplicate_in_the_batch_is_not_a_neighbour_of_itself(ingest, store, s1):
    run(ingest, store, s1[:3])
    out = run(ingest, store, [s1[1], s1[3]])  # 2 again, 4 new
    assert (out.stored, out.duplicates, out.alarms) == (1, 1, [])


def test_a_broken_link_to_a_stored_predecessor(ingest, store, keys, s1):
    run(ingest, store, [s1[0]])
    out = run(ingest, store, [record(keys["a"], 2, b"\x02" * 32)])
    assert out.alarms == ["S1: hash chain broken between seq 1 and 2"]
    assert rows(store, "SELECT station_id, seq FROM alarms") == [("S1", 2)]


def test_a_redelivered_successor_in_the_batch_is_checked_as_the_link(ingest, store, keys, s1):
    stray3 = record(keys["a"], 3, b"\x03" * 32)
    run(ingest, store, [s1[0], stray3])
    out = run(ingest, store, [s1[1], stray3])  # 2 is new; 3 comes again and does not link to it
    assert (out.stored, out.duplicates) == (1, 1)
    assert out.alarms == ["S1: hash chain broken between seq 2 and 3"]
    assert rows(store, "SELECT station_id, seq FROM alarms") == [("S1", 2)]


def test_a_conflicting_neighbour_in_the_batch_is_not_taken_as_the_link(ingest, store, keys, s1):
    run(ingest, store, s1[:2])
    fork2 = record(keys["a"], 2, digest(s1[0]), rid="fork")
    out = run(ingest, store, [fork2, s1[2]])  # 3 links to the stored 2, not to the fork
    assert out.stored == 1 and [a for a in out.alarms if "chain broken" in a] == []


# -- gaps ----------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_gap_defaults_and_a_station_without_records(store):
    g = GapWatch(store)
    assert (g.grace, g.interval, g.max_span) == (1.0, 5.0, 1000)
    assert g.check({"nobody"}) == [] and g.heads == {"nobody": 0} and g.open == {}


def test_a_hole_keeps_its_age_while_it_stays_the_same_and_ask_spans_are_exact(ingest, store, s1):
    run(ingest, store, [s1[0], s1[5]])  # 2..5 missing
    clock = Clock()
    g = GapWatch(store, grace=0.0, interval=2.0, max_span=4, clock=clock)
    assert g.check({"S1"}) == [("S1", 2, 5)]  # exactly max_span seqs
    assert g.open == {"S1": (2, 5, 1000.0)}
    clock.t = 1001.0
    run(ingest, store, [s1[3]])  # 4 arrives: the hole still starts at 2
    assert g.check({"S1"}) == []
    assert g.open == {"S1": (2, 3, 1000.0)}
    g.max_span = 1
    clock.t = 1002.0
    assert g.check(set()) == [("S1", 2, 2)]
    run(ingest, store, [s1[1]])  # 2 arrives: a new hole at 3, seen from now
    clock.t = 1003.0
    g.grace = 0.5
    assert g.check({"S1"}) == [] and g.open["S1"] == (3, 3, 1003.0) and g.heads["S1"] == 2
    clock.t = 1004.0
    assert g.check({"S1"}) == [("S1", 3, 3)]


def test_gaps_are_checked_per_station_in_name_order(ingest, store, keys, s1):
    s2 = chain(keys["b"], 3, station="S2")
    run(ingest, store, [s1[0], s1[2]])
    run(ingest, store, [s2[0], s2[2]], topic="stations/S2/records")
    g = GapWatch(store, grace=0.0, clock=Clock())
    assert g.check(["S2", "S1", "S2"]) == [("S1", 2, 2), ("S2", 2, 2)]
    run(ingest, store, [s1[1]])  # S1 complete: it is done with, and S2 is still checked
    g.interval = 0.0
    assert g.check(["S1", "S2"]) == [("S2", 2, 2)] and list(g.open) == ["S2"]


# -- the store -----------------------------------------------------------------------

def test_empty_reads_and_writes_ask_nothing(store):
    assert store.insert_many([]) == set() and store.digests([]) == {} and store.links([]) == {}


def test_commit_and_rollback_outside_a_transaction_are_harmless(store, ingest, s1):
    store.commit()
    store.rollback()
    store.begin()
    ingest.run([Incoming(s1[0], T1)])
    store.rollback()
    assert store.count() == 0


def test_links_of_repeated_keys(store, ingest, s1):
    run(ingest, store, s1[:2])
    assert store.links([("S1", 2), ("S1", 2), ("S1", 9)]) == {("S1", 2): (digest(s1[1]), digest(s1[0]))}


def test_the_contiguous_head_from_a_known_head(store, ingest, s1):
    run(ingest, store, [s1[i] for i in (0, 1, 2, 4, 5, 8)])
    assert store.contiguous_head("S1", 0) == (3, 5)
    assert store.contiguous_head("S1", 3) == (3, 5)
    assert store.contiguous_head("S1", 4) == (6, 9)  # 5 and 6 follow a head found earlier
    assert store.contiguous_head("S1", 6) == (6, 9)
    assert store.contiguous_head("S1", 9) == (9, None)
    run(ingest, store, [s1[i] for i in (6, 7)])
    assert store.contiguous_head("S1", 6) == (9, None)


def test_counting_only_known_tables(store):
    assert (store.count(), store.count("rejected"), store.count("alarms")) == (0, 0, 0)
    with pytest.raises(AssertionError):
        store.count("sqlite_master")


def test_database_urls_and_kinds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    default = open_store(None, Path("default.sqlite"))
    assert (default.kind, default.where) == ("sqlite", "default.sqlite")
    default.close()
    (tmp_path / "C:").mkdir()
    drive = open_store("C:/x.sqlite", Path("unused"))  # a Windows drive letter is a path, not a scheme
    assert drive.kind == "sqlite" and (tmp_path / "C:" / "x.sqlite").exists()
    drive.close()
    for url in ("postgresql://u@127.0.0.1:1/db", "postgres://u@127.0.0.1:1/db"):
        with pytest.raises(StationError, match="cannot connect to PostgreSQL at 127.0.0.1:1/db"):
            open_store(url, Path("unused"))
    with pytest.raises(StationError, match="unknown database kind 'http'"):
        open_store("http://h/db", Path("unused"))


def test_database_errors_are_the_outage_kinds():
    import psycopg

    assert db_errors() == (sqlite3.OperationalError, psycopg.OperationalError)
