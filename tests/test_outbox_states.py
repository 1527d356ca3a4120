"""The outbox's ack state machine (stored -> published -> accepted | rejected),
its counts, replay ranges and retention, and the re-send clocks: real SQLite in
tmp_path, no broker. Fast on purpose: `make mutation` runs these per mutant."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from station.delivery.outbox import Outbox, StoredRecord
from station.delivery.outbox_states import AckResult, AppAck, Counts
from station.delivery.resend import RefusalRetry, ResendClock
from station.errors import OutboxError


def recs(start: int, n: int) -> list[StoredRecord]:
    return [StoredRecord(s, f"r{s}", bytes([s % 256]) * s) for s in range(start, start + n)]


@pytest.fixture
def ob(tmp_path: Path):
    box = Outbox(tmp_path / "outbox.db")
    yield box
    box.close()


def column(ob: Outbox, sql: str) -> list[tuple]:
    """Read the file through a second connection: what another process would see."""
    con = sqlite3.connect(ob.path)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def acc(seq: int, rid: str | None = None) -> AppAck:
    return AppAck(seq, rid or f"r{seq}", "accepted")


def rej(seq: int, reason: str = "bad") -> AppAck:
    return AppAck(seq, f"r{seq}", "rejected", reason)


# -- apply_acks ------------------------------------------------------------------

def test_no_acks_is_an_empty_result_and_touches_nothing(ob: Outbox) -> None:
    ob.append(recs(1, 2))
    assert ob.apply_acks([]) == AckResult()
    assert ob.counts().stored == 2


def test_verdicts_are_stored_with_the_given_time_reason_and_delivery(ob: Outbox) -> None:
    ob.append(recs(1, 4))
    ob.mark_delivered([1, 2], now=50.0)
    res = ob.apply_acks([acc(2), rej(3, "schema"), acc(1), AppAck(4, "r4", "rejected", "")], now=100.0)
    assert res.accepted == [2, 1] and [a.seq for a in res.rejected] == [3, 4]
    assert res.unknown == [] and res.mismatched == [] and res.duplicates == 0
    assert column(ob, "SELECT seq, acked_at, verdict, reason, delivered_at FROM records ORDER BY seq") == [
        (1, 100.0, "accepted", None, 50.0),
        (2, 100.0, "accepted", None, 50.0),  # the publish time stays: it was delivered
        (3, 100.0, "rejected", "schema", 100.0),  # never marked published: the ack says it was
        (4, 100.0, "rejected", None, 100.0),  # an empty reason is no reason
    ]
    assert ob.rejections() == [(3, "r3", "schema"), (4, "r4", "")]


def test_without_a_time_the_wall_clock_is_used(ob: Outbox) -> None:
    ob.append(recs(1, 1))
    before = time.time()
    ob.apply_acks([acc(1)])
    (at,), = column(ob, "SELECT acked_at FROM records")
    assert before <= at <= time.time()


def test_the_highest_newly_accepted_record_is_reported_with_its_hash(ob: Outbox) -> None:
    ob.append(recs(1, 5))
    res = ob.apply_acks([acc(3), acc(5, "zz"), rej(4), acc(1), acc(2)])  # 5 mismatched, 4 rejected
    assert res.highest == (3, "r3", ob.hash_at(3))
    assert res.mismatched == [(acc(5, "zz"), "r5")]
    assert ob.apply_acks([acc(3)]).highest is None  # a duplicate is not new
    assert ob.apply_acks([rej(5)]).highest is None  # a rejection is not an accept


def test_a_repeat_in_one_batch_is_a_duplicate_and_the_first_verdict_wins(ob: Outbox) -> None:
    ob.append(recs(1, 2))
    res = ob.apply_acks([rej(1, "first"), acc(1), acc(2), acc(2)])
    assert res.accepted == [2] and [a.reason for a in res.rejected] == ["first"] and res.duplicates == 2
    res = ob.apply_acks([acc(1), acc(2), acc(7)])
    assert res.duplicates == 2 and res.unknown == [acc(7)] and res.accepted == []
    assert ob.rejections() == [(1, "r1", "first")]


def test_acks_are_read_in_chunks_and_none_is_missed_at_the_chunk_edges(ob: Outbox) -> None:
    ob.append(recs(1, 1001))
    res = ob.apply_acks([acc(s) for s in range(1001, 0, -1)], now=5.0)
    assert res.unknown == [] and sorted(res.accepted) == list(range(1, 1002)) and res.highest[0] == 1001
    assert ob.counts().acked == 1001


def test_a_failed_batch_is_rolled_back_and_the_outbox_stays_usable(ob: Outbox) -> None:
    ob.append(recs(1, 2))
    with pytest.raises(OverflowError):  # not an SQLite error: raised as it is, after the rollback
        ob.apply_acks([acc(1), acc(1 << 64)])
    assert ob.counts().acked == 0
    assert ob.apply_acks([acc(1)]).accepted == [1]


def test_a_closed_database_is_an_outbox_error_that_says_where_and_what(ob: Outbox) -> None:
    ob.append(recs(1, 1))
    ob._db.close()  # what a vanished disk looks like to the connection
    for call, doing in ((lambda: ob.apply_acks([acc(1)]), "storing acknowledgements"),
                        (ob.counts, "counting records"), (ob.unacked_load, "measuring the outbox"),
                        (lambda: ob.prune(1.0), "pruning acknowledged records")):
        with pytest.raises(OutboxError) as err:
            call()
        assert f"outbox {ob.path}: {doing} failed: Cannot operate on a closed database" in str(err.value)


# -- counts, load, publish times ---------------------------------------------------

def test_counts_in_every_state(ob: Outbox) -> None:
    assert ob.counts() == Counts(0, 0, 0, 0, 0, None)
    ob.append(recs(1, 6))
    stored_at = dict(column(ob, "SELECT seq, stored_at FROM records"))
    ob.mark_delivered([2, 3, 4, 5], now=10.0)
    ob.apply_acks([acc(1), acc(2), rej(3)])
    c = ob.counts()
    # 1, 2 accepted; 3 rejected; 4, 5 published; 6 stored
    assert (c.stored, c.published, c.acked, c.rejected, c.last_seq) == (1, 2, 2, 1, 6)
    assert c.oldest_unacked_at == stored_at[3]  # a rejected record still waits (for a person)
    assert (c.unacked, c.awaiting_verdict) == (4, 3)
    ob.apply_acks([acc(4), acc(5), acc(6)])
    assert ob.counts().oldest_unacked_at == stored_at[3]
    assert ob.counts() == Counts(0, 0, 5, 1, 6, stored_at[3])


def test_the_oldest_unacked_is_by_seq(ob: Outbox) -> None:
    ob.append(recs(1, 1))
    ob.append(recs(2, 1))
    stored_at = dict(column(ob, "SELECT seq, stored_at FROM records"))
    assert ob.counts().oldest_unacked_at == stored_at[1]
    ob.apply_acks([acc(1)])
    assert ob.counts().oldest_unacked_at == stored_at[2]
    ob.apply_acks([acc(2)])
    assert ob.counts().oldest_unacked_at is None


def test_unacked_load_counts_records_and_bytes_including_rejected(ob: Outbox) -> None:
    assert ob.unacked_load() == (0, 0)
    ob.append(recs(1, 4))  # 1 + 2 + 3 + 4 bytes
    assert ob.unacked_load() == (4, 10)
    ob.apply_acks([acc(2), rej(3)])
    assert ob.unacked_load() == (3, 8)


def test_the_oldest_publish_still_waiting_for_its_ack(ob: Outbox) -> None:
    ob.append(recs(1, 4))
    assert ob.oldest_unacked_publish() is None  # nothing published
    ob.mark_delivered([2], now=20.0)
    ob.mark_delivered([3], now=10.0)
    assert ob.oldest_unacked_publish() == 10.0
    ob.apply_acks([acc(3)], now=30.0)
    assert ob.oldest_unacked_publish() == 20.0
    ob.apply_acks([acc(2)], now=30.0)
    assert ob.oldest_unacked_publish() is None


# -- replay ranges, retention ------------------------------------------------------

def test_held_is_inclusive_in_seq_order_and_limited(ob: Outbox) -> None:
    ob.append(recs(1, 6))
    assert ob.held(2, 4, 10) == [(s, f"r{s}", bytes([s]) * s) for s in (2, 3, 4)]
    assert [s for s, _, _ in ob.held(2, 6, 2)] == [2, 3]
    assert ob.held(7, 9, 10) == [] and ob.held(6, 6, 1) == [(6, "r6", bytes([6]) * 6)]


@pytest.mark.parametrize("lo, hi, missing", [
    (1, 8, [(1, 2), (5, 6), (8, 8)]),  # held: 3, 4, 7
    (3, 4, []),
    (3, 3, []),
    (4, 7, [(5, 6)]),
    (2, 3, [(2, 2)]),
    (7, 9, [(8, 9)]),
    (5, 5, [(5, 5)]),
    (9, 12, [(9, 12)]),
])
def test_missing_ranges(ob: Outbox, lo: int, hi: int, missing: list) -> None:
    ob.append(recs(1, 7))
    ob.apply_acks([acc(s) for s in (1, 2, 5, 6)], now=1.0)
    assert ob.prune(acked_before=2.0) == 4  # held now: 3, 4 (never acked) and 7 (the newest)
    assert ob.missing_ranges(lo, hi) == missing


def test_prune_keeps_unacked_rejected_recent_and_the_newest(ob: Outbox) -> None:
    ob.append(recs(1, 6))
    ob.apply_acks([acc(1), acc(2), rej(3), acc(6)], now=100.0)
    ob.apply_acks([acc(4)], now=200.0)
    assert ob.prune(acked_before=100.0) == 0  # acked at the cut-off: kept
    assert ob.prune(acked_before=150.0) == 2
    assert [r.seq for r in ob.records()] == [3, 4, 5, 6]
    assert ob.prune(acked_before=1e12) == 1  # 4; 3 rejected, 5 unacked, 6 the newest
    assert [r.seq for r in ob.records()] == [3, 5, 6]


def test_a_failed_prune_is_rolled_back_and_the_outbox_stays_usable(ob: Outbox) -> None:
    ob.append(recs(1, 2))
    ob.apply_acks([acc(1)], now=1.0)
    with pytest.raises(OverflowError):  # not an SQLite error: raised as it is, after the rollback
        ob.prune(acked_before=1 << 64)
    assert ob.prune(acked_before=2.0) == 1


def test_hash_at(ob: Outbox) -> None:
    ob.append(recs(1, 2))
    assert ob.hash_at(2) == ob.last_hash and ob.hash_at(1) != ob.hash_at(2)
    assert ob.hash_at(3) is None


# -- re-send timing ----------------------------------------------------------------

def test_refusal_retry_doubles_from_low_to_high_once_per_round_and_resets_on_delivery() -> None:
    r = RefusalRetry(low=0.5, high=3.0)
    assert not r.pending and not r.due(1e9)
    assert r.refused(10.0) == 0.5 and r.at == 10.5 and r.pending
    assert r.refused(10.2) == 0.5 and r.at == 10.5  # the same round: not re-scheduled
    assert not r.due(10.499) and r.due(10.5)
    r.done()
    assert not r.pending and not r.due(11.0)
    delays = []
    for t in range(5):
        delays.append(r.refused(float(t)))
        r.done()
    assert delays == [1.0, 2.0, 3.0, 3.0, 3.0]
    r.delivered()
    assert r.refused(0.0) == 0.5


def test_refusal_retry_defaults() -> None:
    r = RefusalRetry()
    assert [r.refused(0.0) for _ in range(1)] == [0.5]
    r.done()
    for _ in range(10):
        r.refused(0.0)
        r.done()
    assert r.refused(0.0) == 30.0


def test_resend_clock_checks_at_most_once_per_interval() -> None:
    c = ResendClock(5.0, check_every_s=1.0)
    assert c.time_to_check(-1e9)  # the first check is never held back
    assert not c.time_to_check(-1e9 + 0.999)
    assert c.time_to_check(-1e9 + 1.0)
    assert ResendClock(5.0).check_every == 1.0


def test_resend_clock_overdue_is_strict_and_backs_off_to_the_cap() -> None:
    c = ResendClock(10.0, cap_s=35.0)
    assert c.resend_before(100.0) == 90.0
    assert not c.overdue(None, 100.0)
    assert not c.overdue(90.0, 100.0) and c.overdue(89.999, 100.0)
    waits = []
    for _ in range(4):
        c.back_off()
        waits.append(c.wait)
    assert waits == [20.0, 35.0, 35.0, 35.0]
    c.answered()
    assert c.wait == 10.0
    assert ResendClock(700.0).cap == 700.0  # a timeout above the cap raises the cap
    assert ResendClock(1.0).cap == 600.0
