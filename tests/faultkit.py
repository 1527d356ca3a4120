"""Shared pieces of the fault-injection tests: the station's side (outbox and
Publisher) as producer, and the end-state every such test must reach: the
consumer's PostgreSQL holds each record exactly once, seq contiguous, the chain
intact, and the station's outbox has nothing left unacked."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from station.delivery.outbox import Outbox, StoredRecord
from station.delivery.publisher import Publisher


def wait_until(predicate: Callable[[], bool], timeout: float, what: Callable[[], str] | str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"not reached within {timeout} s: {what() if callable(what) else what}")
        time.sleep(0.02)


def append(box: Outbox, records: list[bytes], first_seq: int, station: str = "S1") -> None:
    """``records`` as seq first_seq.. (the record ids follow consumerkit.record)."""
    box.append([StoredRecord(first_seq + i, f"{station}-r{first_seq + i}", d) for i, d in enumerate(records)])


def station_publisher(port: int, state: Path, station: str = "S1", **kw) -> Publisher:
    """The station's real Publisher over the outbox in ``state``; fast re-sends for tests."""
    opts = dict(version="1.0", window=10, ack_timeout_s=1.0)
    opts.update(kw)
    pub = Publisher(outbox_path=state / "outbox.db", station_id=station, host="127.0.0.1", port=port,
                    state_dir=state, **opts)
    pub.start()
    return pub


def outbox_records(path: Path) -> list[bytes]:
    """Every record the outbox holds, in seq order (checks that seqs are 1..N)."""
    with Outbox(path) as box:
        rows = box.held(1, box.next_seq - 1, box.next_seq)
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1))
    return [r[2] for r in rows]


def assert_all_acked(path: Path, n: int, context: Callable[[], str] | str = "") -> None:
    with Outbox(path) as box:
        c = box.counts()
    got = (c.stored, c.published, c.acked, c.rejected)
    why = context() if callable(context) else context
    assert got == (0, 0, n, 0), f"outbox (stored, published, acked, rejected) = {got}; {why}"


def assert_central_holds(db: str, station: str, records: list[bytes]) -> None:
    """Every record exactly once with its exact bytes, seq 1..N, prev = sha256 of the one before,
    and nothing rejected or alarmed."""
    assert records, "nothing to compare"
    with psycopg.connect(db) as conn:
        got = conn.execute("SELECT seq, cose, digest, prev FROM records WHERE station_id = %s ORDER BY seq",
                           (station,)).fetchall()
        others = conn.execute("SELECT COUNT(*) FROM records WHERE station_id <> %s", (station,)).fetchone()[0]
        rejected = conn.execute("SELECT reason FROM rejected").fetchall()
        alarms = conn.execute("SELECT message FROM alarms").fetchall()
    assert (rejected, alarms, others) == ([], [], 0)
    assert [r[0] for r in got] == list(range(1, len(records) + 1))  # every seq once (the primary key)
    assert [bytes(r[1]) for r in got] == records
    prev = bytes(32)
    for seq, cose, digest, link in got:  # the chain, link by link
        assert bytes(link) == prev, f"seq {seq}: prev is not the SHA-256 of seq {seq - 1}"
        assert bytes(digest) == hashlib.sha256(bytes(cose)).digest()
        prev = bytes(digest)
    assert prev == hashlib.sha256(records[-1]).digest()
