"""`station consume` against a real mosquitto and a real PostgreSQL, as real processes."""

from __future__ import annotations

import hashlib
import itertools
import os
import signal

import psycopg
import pytest

from consumerkit import Listener, Publisher, chain, consumer, make_keys, record, reencoded, write_trust
from stationproc import station

_db_names = itertools.count()


@pytest.fixture
def db(postgres):
    return postgres.create_db(f"t{os.getpid()}_{next(_db_names)}")


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def trust(tmp_path, keys):
    return write_trust(tmp_path, keys)


def rows(db, station="S1"):
    with psycopg.connect(db) as conn:
        return conn.execute("SELECT seq, cose, digest, verdict FROM records WHERE station_id = %s ORDER BY seq",
                            (station,)).fetchall()


def rejected(db):
    with psycopg.connect(db) as conn:
        return conn.execute("SELECT seq, reason FROM rejected ORDER BY seq").fetchall()


def test_records_are_stored_once_with_their_exact_bytes_and_acked_after_commit(mosquitto, db, trust, keys):
    records = chain(keys["a"], 30)
    acks = Listener(mosquitto.port, "stations/+/acks", "station-side")
    c = consumer(mosquitto.port, trust, db)
    c.wait_for("consuming")
    pub = Publisher(mosquitto.port)
    pub.send(records + records[:10])  # ten redelivered
    acks.wait(lambda: len(acks.acks()) == 40)
    stored = rows(db)
    assert [r[0] for r in stored] == list(range(1, 31))
    assert [bytes(r[1]) for r in stored] == records
    assert {r[3] for r in stored} == {"accepted"}
    assert all(bytes(r[2]) == hashlib.sha256(d).digest() for r, d in zip(stored, records))
    got = acks.acks()
    assert all(a["verdict"] == "accepted" for a in got)
    assert sorted(a["seq"] for a in got) == sorted(list(range(1, 31)) + list(range(1, 11)))
    assert got[0]["record_id"] == "S1-r1"
    pub.close(), acks.close()
    c.stop()
    c.wait_for("stored 30 new record\\(s\\), 10 duplicate\\(s\\), 0 rejected")


def test_forged_cross_station_sim_claiming_real_reencoded_and_conflicting_are_rejected(mosquitto, db, trust, keys):
    genuine = chain(keys["a"], 3)
    prev = hashlib.sha256(genuine[-1]).digest()
    forged = bytearray(record(keys["a"], 4, prev))
    forged[-1] ^= 1
    bad = {
        "forged": bytes(forged),
        "cross": record(keys["b"], 5, prev, station="S1"),  # S2's key claiming S1
        "sim": record(keys["a_sim"], 6, prev, simulated=False),  # simulation key, not marked simulated
        "reencoded": reencoded(genuine[1]),
        "conflict": record(keys["a"], 2, bytes(32), rid="other"),  # a second, different seq 2
    }
    acks = Listener(mosquitto.port, "stations/+/acks", "station-side")
    c = consumer(mosquitto.port, trust, db)
    c.wait_for("consuming")
    pub = Publisher(mosquitto.port)
    pub.send(genuine)
    acks.wait(lambda: len(acks.acks()) == 3)
    pub.send(list(bad.values()))
    acks.wait(lambda: len(acks.acks()) == 8)
    assert [bytes(r[1]) for r in rows(db)] == genuine  # nothing displaced or shadowed
    verdicts = [a for a in acks.acks()[3:]]
    assert all(a["verdict"] == "rejected" and a["reason"] for a in verdicts)
    reasons = " | ".join(a["reason"] for a in verdicts)
    assert "signature does not match" in reasons
    assert "claims station_id 'S1'" in reasons
    assert "not marked simulated: true" in reasons
    assert "unprotected header is not empty" in reasons
    assert "two different signed records" in reasons
    assert {a["seq"] for a in verdicts} >= {2, 4, 5, 6}
    assert len(rejected(db)) == 5
    pub.close(), acks.close()
    c.stop()
    c.wait_for("0 duplicate\\(s\\), 5 rejected")
    assert c.count("REJECTED") == 5


def test_a_gap_asks_for_a_bounded_replay_once_and_closes_when_filled(mosquitto, db, trust, keys):
    records = chain(keys["a"], 10)
    asks = Listener(mosquitto.port, "stations/+/cmd/replay", "station-side")
    acks = Listener(mosquitto.port, "stations/+/acks", "station-side-acks")
    c = consumer(mosquitto.port, trust, db, "consumer-1", "--replay-grace", "0.3", "--replay-interval", "60",
                 "--replay-max", "1")
    c.wait_for("consuming")
    pub = Publisher(mosquitto.port)
    pub.send(records[:5] + records[7:])
    asks.wait(lambda: len(asks.messages) >= 1)
    assert asks.messages[0] == ("stations/S1/cmd/replay", {"from_seq": 6, "to_seq": 6})  # bounded by --replay-max
    pub.send(records[5:7])  # the station replays
    acks.wait(lambda: {a["seq"] for a in acks.acks()} == set(range(1, 11)))
    c.stop()
    assert [r[0] for r in rows(db)] == list(range(1, 11))
    assert len(asks.messages) == 1  # one request, not a storm (interval 60 s)
    asks.close(), acks.close()


def test_a_consumer_sigkilled_and_restarted_resumes_its_session_without_loss(mosquitto, db, trust, keys):
    records = chain(keys["a"], 300)
    acks = Listener(mosquitto.port, "stations/+/acks", "station-side")
    c = consumer(mosquitto.port, trust, db, "consumer-1")
    c.wait_for("consuming")
    pub = Publisher(mosquitto.port)
    pub.send(records[:150])
    os.kill(c.proc.pid, signal.SIGKILL)
    c.proc.wait()
    pub.send(records[150:])  # while it is down: the broker queues them in its session
    c2 = consumer(mosquitto.port, trust, db, "consumer-1")
    acks.wait(lambda: {a["seq"] for a in acks.acks()} == set(range(1, 301)), timeout=30)
    assert [r[0] for r in rows(db)] == list(range(1, 301))
    pub.close(), acks.close()
    c2.stop()


def test_clear_one_line_errors(mosquitto, trust, tmp_path, postgres):
    down = station("consume", "--host", "127.0.0.1", "--port", str(mosquitto.port), "--trust", str(trust),
                   "--db", "postgresql://postgres@127.0.0.1:1/x")
    assert down.returncode == 1 and "cannot connect to PostgreSQL at 127.0.0.1:1/x" in down.stderr
    assert "Traceback" not in down.stderr and len(down.stderr.strip().splitlines()) == 1
    wrong = station("consume", "--trust", str(trust), "--host", "127.0.0.1", "--port", "1", "--db", "mysql://x/y")
    assert wrong.returncode == 1 and "unknown database kind 'mysql'" in wrong.stderr
    refused = station("consume", "--host", "127.0.0.1", "--port", "1", "--trust", str(trust),
                      "--db", str(tmp_path / "c.sqlite"), "--connect-timeout", "1")
    assert refused.returncode == 1 and "could not subscribe" in refused.stderr and "127.0.0.1:1" in refused.stderr


def test_postgresql_down_mid_stream_holds_the_acks_and_stores_everything_once_it_is_back(mosquitto, db, trust,
                                                                                           keys, postgres):
    records = chain(keys["a"], 60)
    acks = Listener(mosquitto.port, "stations/+/acks", "station-side")
    c = consumer(mosquitto.port, trust, db)
    c.wait_for("consuming")
    pub = Publisher(mosquitto.port)
    pub.send(records[:20])
    acks.wait(lambda: len(acks.acks()) == 20)
    postgres.stop_server()
    pub.send(records[20:])
    c.wait_for(r"database .* failed .* not acknowledged, retrying")
    assert len(acks.acks()) == 20  # nothing acked while nothing can be stored
    postgres.start_server()
    acks.wait(lambda: {a["seq"] for a in acks.acks()} == set(range(1, 61)), timeout=30)
    assert [r[0] for r in rows(db)] == list(range(1, 61))
    pub.close(), acks.close()
    c.stop()
