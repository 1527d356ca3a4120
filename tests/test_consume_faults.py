"""End to end with the station's side of acks: the station's outbox and Publisher
(acks, re-sends), a real mosquitto that is SIGKILLed and restarted mid-stream,
`station consume` into a real PostgreSQL. Each ends with the consumer holding
every record exactly once, seq contiguous, the chain intact, nothing unacked."""

from __future__ import annotations

import hashlib
import time

import psycopg
import pytest

from consumerkit import chain, consumer, make_keys, write_trust
from station.app.postgres import Postgres
from station.delivery.outbox import Outbox, StoredRecord
from station.delivery.publisher import Publisher


@pytest.fixture(scope="module")
def postgres():
    pg = Postgres().start()
    yield pg
    pg.stop()


def _check_central(db: str, records: list[bytes]) -> None:
    with psycopg.connect(db) as conn:
        got = conn.execute("SELECT seq, cose, digest, prev FROM records WHERE station_id = 'S1' ORDER BY seq").fetchall()
        assert conn.execute("SELECT COUNT(*) FROM rejected").fetchone()[0] == 0
        assert conn.execute("SELECT COUNT(*) FROM alarms").fetchone()[0] == 0
    assert [r[0] for r in got] == list(range(1, len(records) + 1))  # every seq once (the primary key)
    assert [bytes(r[1]) for r in got] == records
    prev = bytes(32)
    for r in got:  # the chain, link by link
        assert bytes(r[3]) == prev
        prev = bytes(r[2])
    assert prev == hashlib.sha256(records[-1]).digest()


def test_broker_sigkilled_and_restarted_during_a_stream(mosquitto, postgres, tmp_path):
    keys = make_keys(tmp_path)
    trust = write_trust(tmp_path, keys)
    db = postgres.create_db("brokerkill")
    records = chain(keys["a"], 1000)
    state = tmp_path / "state"
    state.mkdir()
    box = Outbox(state / "outbox.db")
    c = consumer(mosquitto.port, trust, db, "central-1")
    c.wait_for("consuming")
    pub = Publisher(outbox_path=state / "outbox.db", station_id="S1", host="127.0.0.1", port=mosquitto.port,
                    version="1.0", state_dir=state, window=10, ack_timeout_s=1.0)
    pub.start()
    try:
        for k in range(5):  # records keep coming while the broker dies and comes back
            part = records[k * 200:(k + 1) * 200]
            box.append([StoredRecord(k * 200 + i + 1, f"S1-r{k * 200 + i + 1}", d) for i, d in enumerate(part)])
            deadline = time.monotonic() + 10
            while box.counts().acked < k * 200 + 50 and time.monotonic() < deadline:
                time.sleep(0.02)  # mid-stream: some of this part delivered, the rest in flight
            mosquitto.kill()
            mosquitto.restart()
        assert pub.wait_drained(25, acked=True), (pub.last_error, box.counts(), c.output[-2000:])
        counts = box.counts()
        assert (counts.stored, counts.published, counts.acked, counts.rejected) == (0, 0, 1000, 0)
    finally:
        pub.stop(timeout=1)
        box.close()
    c.stop()
    _check_central(db, records)


PUBLISHER = """
import sys, time
from pathlib import Path
from station.delivery.publisher import Publisher
state = Path(sys.argv[1])
pub = Publisher(outbox_path=state / "outbox.db", station_id="S1", host="127.0.0.1", port=int(sys.argv[2]),
                version="1.0", state_dir=state, window=10, ack_timeout_s=1.0, client_id="station-S1")
pub.start()
print("publishing", flush=True)
while True:
    time.sleep(1)
"""


def test_the_stations_publisher_sigkilled_mid_stream_and_restarted(mosquitto, postgres, tmp_path):
    import os
    import signal
    import sys

    from stationproc import Proc

    keys = make_keys(tmp_path)
    trust = write_trust(tmp_path, keys)
    db = postgres.create_db("stationkill")
    records = chain(keys["a"], 1000)
    state = tmp_path / "state"
    state.mkdir()
    box = Outbox(state / "outbox.db")
    c = consumer(mosquitto.port, trust, db, "central-1")
    c.wait_for("consuming")
    try:
        for k in range(5):
            part = records[k * 200:(k + 1) * 200]
            box.append([StoredRecord(k * 200 + i + 1, f"S1-r{k * 200 + i + 1}", d) for i, d in enumerate(part)])
            st = Proc([sys.executable, "-c", PUBLISHER, str(state), str(mosquitto.port)])
            st.wait_for("publishing")
            deadline = time.monotonic() + 10
            while box.counts().acked < k * 200 + 50 and time.monotonic() < deadline:
                time.sleep(0.02)
            os.kill(st.proc.pid, signal.SIGKILL)  # mid-stream: marks and acks of this part half done
            st.proc.wait()
        st = Proc([sys.executable, "-c", PUBLISHER, str(state), str(mosquitto.port)])
        deadline = time.monotonic() + 25
        while box.counts().acked < 1000 and time.monotonic() < deadline:
            time.sleep(0.05)
        counts = box.counts()
        assert (counts.stored, counts.published, counts.acked, counts.rejected) == (0, 0, 1000, 0), c.output[-2000:]
        st.stop()
    finally:
        box.close()
    c.stop()
    _check_central(db, records)
