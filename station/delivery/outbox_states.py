"""The outbox's application-ack side: verdicts from the central system, the
counts the retained status shows, the bound on unacknowledged records, the
replay range and the retention of acknowledged records.

A mixin of :class:`station.delivery.outbox.Outbox` (one SQLite connection per
thread; these methods run on the publisher's, except ``unacked_load`` which the
session thread uses to refuse measuring when the outbox is full).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from station.errors import OutboxError

ACCEPTED, REJECTED = "accepted", "rejected"


@dataclass(frozen=True)
class AppAck:
    """One entry of an ack message from the central system."""

    seq: int
    record_id: str
    verdict: str  # ACCEPTED or REJECTED
    reason: str = ""


@dataclass
class AckResult:
    accepted: list[int] = field(default_factory=list)  # newly acked
    rejected: list[AppAck] = field(default_factory=list)  # newly rejected
    mismatched: list[tuple[AppAck, str]] = field(default_factory=list)  # (ack, the record_id we hold)
    unknown: list[AppAck] = field(default_factory=list)  # seq not held (pruned, or beyond our head)
    duplicates: int = 0
    highest: tuple[int, str, bytes] | None = None  # (seq, record_id, sha256) of the highest newly acked


@dataclass(frozen=True)
class Counts:
    stored: int
    published: int
    acked: int
    rejected: int
    last_seq: int
    oldest_unacked_at: float | None  # wall time the oldest unacked record was stored

    @property
    def unacked(self) -> int:
        return self.stored + self.published + self.rejected

    @property
    def awaiting_verdict(self) -> int:
        """Neither accepted nor rejected yet (published counts the ones whose PUBACK
        mark is still pending as stored, so only the sum is exact)."""
        return self.stored + self.published


class AckStates:
    _db: sqlite3.Connection

    @contextmanager
    def _immediate(self) -> Iterator[None]:
        """One write transaction (BEGIN IMMEDIATE takes SQLite's write lock at
        once): committed whole, or rolled back whole on any failure."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def apply_acks(self, acks: Sequence[AppAck], now: float | None = None) -> AckResult:
        """Store a batch of verdicts in ONE transaction. The first verdict for a
        record wins; a repeated ack changes nothing; an ack whose record_id is not
        the one stored under its seq is ignored (and reported back)."""
        now = time.time() if now is None else now
        out = AckResult()
        if not acks:
            return out
        try:
            with self._immediate():
                # One read per 500 acks instead of one per ack.
                seqs = sorted({a.seq for a in acks})
                held = {}
                for i in range(0, len(seqs), 500):
                    part = seqs[i:i + 500]
                    held.update({int(s): (str(r), v, bytes(h)) for s, r, v, h in self._db.execute(
                        f"SELECT seq, record_id, verdict, sha256 FROM records WHERE seq IN ({','.join('?' * len(part))})",
                        part)})
                updates = []
                for ack in acks:
                    row = held.get(ack.seq)
                    if row is None:
                        out.unknown.append(ack)
                    elif row[0] != ack.record_id:
                        out.mismatched.append((ack, row[0]))
                    elif row[1] is not None:
                        out.duplicates += 1
                    else:
                        held[ack.seq] = (row[0], ack.verdict, row[2])  # a repeat in this batch is a duplicate
                        updates.append((now, ack.verdict, ack.reason or None, now, ack.seq))
                        if ack.verdict == ACCEPTED:
                            out.accepted.append(ack.seq)
                            if out.highest is None or ack.seq > out.highest[0]:
                                out.highest = (ack.seq, ack.record_id, row[2])
                        else:
                            out.rejected.append(ack)
                self._db.executemany(
                    "UPDATE records SET acked_at = ?, verdict = ?, reason = ?, "
                    "delivered_at = coalesce(delivered_at, ?) WHERE seq = ?", updates)
        except sqlite3.Error as exc:
            raise self._error(exc, "storing acknowledgements") from exc
        return out

    def counts(self) -> Counts:
        try:
            # One statement, one snapshot: the other threads commit marks and acks
            # between separate queries, and mixed snapshots give counts that never were.
            # Each count reads a partial index, not the rows (a full scan of a
            # large outbox, every status, took a share of the publisher's CPU).
            stored, unacked, rejected, total, last, oldest = self._db.execute(
                "SELECT (SELECT count(*) FROM records WHERE delivered_at IS NULL), "
                "(SELECT count(*) FROM records WHERE acked_at IS NULL), "
                "(SELECT count(*) FROM records WHERE verdict = 'rejected'), "
                "(SELECT count(*) FROM records), (SELECT coalesce(max(seq), 0) FROM records), "
                "(SELECT stored_at FROM records WHERE seq = (SELECT min(s) FROM ("
                "SELECT min(seq) AS s FROM records WHERE acked_at IS NULL UNION ALL "
                "SELECT min(seq) FROM records WHERE verdict = 'rejected')))"
            ).fetchone()
        except sqlite3.Error as exc:
            raise self._error(exc, "counting records") from exc
        published = unacked - stored
        return Counts(stored=stored, published=published, acked=total - unacked - rejected, rejected=rejected,
                      last_seq=last, oldest_unacked_at=None if oldest is None else float(oldest))

    def unacked_load(self) -> tuple[int, int]:
        """(records, bytes) not yet accepted by the central system: what the
        bound on the outbox counts. Rejected records count too: they wait for a person."""
        try:
            row = self._db.execute(
                "SELECT count(*), coalesce(sum(length(data)), 0) FROM records "
                "WHERE acked_at IS NULL OR verdict = 'rejected'").fetchone()
        except sqlite3.Error as exc:
            raise self._error(exc, "measuring the outbox") from exc
        return int(row[0]), int(row[1])

    def oldest_unacked_publish(self) -> float | None:
        """Wall time of the oldest PUBACK still waiting for the central system's ack."""
        row = self._db.execute(
            "SELECT min(delivered_at) FROM records WHERE acked_at IS NULL AND delivered_at IS NOT NULL").fetchone()
        return None if row[0] is None else float(row[0])

    def held(self, from_seq: int, to_seq: int, limit: int) -> list[tuple[int, str, bytes]]:
        """(seq, record_id, data) of the records still held in [from_seq, to_seq], in seq order."""
        rows = self._db.execute(
            "SELECT seq, record_id, data FROM records WHERE seq BETWEEN ? AND ? ORDER BY seq LIMIT ?",
            (from_seq, to_seq, limit)).fetchall()
        return [(int(s), str(r), bytes(d)) for s, r, d in rows]

    def missing_ranges(self, from_seq: int, to_seq: int) -> list[tuple[int, int]]:
        """The parts of [from_seq, to_seq] this outbox no longer holds (pruned or never had)."""
        out: list[tuple[int, int]] = []
        expect = from_seq
        for (s,) in self._db.execute("SELECT seq FROM records WHERE seq BETWEEN ? AND ? ORDER BY seq",
                                     (from_seq, to_seq)):
            if s > expect:
                out.append((expect, s - 1))
            expect = s + 1
        if expect <= to_seq:
            out.append((expect, to_seq))
        return out

    def prune(self, acked_before: float) -> int:
        """Delete records acked (accepted) before ``acked_before``. Never the newest
        record: the outbox derives its chain head from it."""
        try:
            with self._immediate():
                n = self._db.execute(
                    "DELETE FROM records WHERE verdict = 'accepted' AND acked_at < ? "
                    "AND seq < (SELECT max(seq) FROM records)", (acked_before,)).rowcount
        except sqlite3.Error as exc:
            raise self._error(exc, "pruning acknowledged records") from exc
        return int(n)

    def hash_at(self, seq: int) -> bytes | None:
        row = self._db.execute("SELECT sha256 FROM records WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else bytes(row[0])

    def states(self) -> dict[int, str]:
        """Each held record's state by seq: stored, published, acked or rejected
        (the four in the Outbox docstring; reads every row, for summaries)."""
        try:
            return {int(seq): str(state) for seq, state in self._db.execute(
                "SELECT seq, CASE WHEN verdict = 'rejected' THEN 'rejected' WHEN acked_at IS NOT NULL THEN 'acked' "
                "WHEN delivered_at IS NOT NULL THEN 'published' ELSE 'stored' END FROM records ORDER BY seq")}
        except sqlite3.Error as exc:
            raise self._error(exc, "reading record states") from exc

    def rejections(self) -> list[tuple[int, str, str]]:
        """(seq, record_id, reason) of every record the central system rejected."""
        return [(int(s), str(r), str(why or "")) for s, r, why in self._db.execute(
            "SELECT seq, record_id, reason FROM records WHERE verdict = 'rejected' ORDER BY seq")]

    def _error(self, exc: sqlite3.Error, doing: str) -> OutboxError:
        from station.delivery.outbox import _sqlite_error

        return _sqlite_error(exc, self.path, doing)  # type: ignore[attr-defined]
