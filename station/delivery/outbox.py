"""Durable outbox: every signed record lives here until the central system
acknowledged it, and for a retention window after that (for replays).

A record counts as stored only once append() has returned, i.e. after a
commit in WAL mode with synchronous=FULL (the WAL is fsynced on every commit).
Each thread opens its own Outbox on the same file: sqlite connections must not
cross threads, and WAL lets the publisher read while the station appends.

Each record is in one of these states:
  stored     delivered_at IS NULL                 not yet accepted by the broker
  published  delivered_at set, acked_at IS NULL   the broker sent a successful PUBACK
  acked      verdict = 'accepted'                 the central system verified and stored it
  rejected   verdict = 'rejected'                 the central system refused it (reason kept)
Only acked records are ever pruned, and never the newest record (it carries the head).
"""

from __future__ import annotations

import errno
import hashlib
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from station.delivery.outbox_states import AckStates
from station.errors import OutboxError

ZERO_HASH = bytes(32)
MIB = 1024 * 1024  # station.min_free_mb counts MiB (2**20 bytes), in the check and in every message
DEFAULT_MIN_FREE = 64 * MIB
_BUSY_TIMEOUT_MS = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq          INTEGER PRIMARY KEY,
    record_id    TEXT NOT NULL UNIQUE,
    sha256       BLOB NOT NULL,
    data         BLOB NOT NULL,
    stored_at    REAL NOT NULL,
    delivered_at REAL,
    acked_at     REAL,
    verdict      TEXT,
    reason       TEXT
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# Outboxes from before application acks lack the last three columns.
_MIGRATE = [("acked_at", "REAL"), ("verdict", "TEXT"), ("reason", "TEXT")]
_INDEXES = """
CREATE INDEX IF NOT EXISTS records_undelivered ON records(seq) WHERE delivered_at IS NULL;
CREATE INDEX IF NOT EXISTS records_unacked ON records(seq) WHERE acked_at IS NULL;
CREATE INDEX IF NOT EXISTS records_rejected ON records(seq) WHERE verdict = 'rejected';
"""


_UPSERT_META = "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value"


@dataclass(frozen=True)
class StoredRecord:
    seq: int
    record_id: str
    data: bytes  # the exact signed COSE_Sign1 bytes


def check_free_space(path: Path, min_free_bytes: int = DEFAULT_MIN_FREE) -> int:
    """Raise OutboxError when the filesystem holding ``path`` is (nearly) full.

    Returns the free bytes. Checked before measuring: a stone must not be
    weighed when its record cannot be stored."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    st = os.statvfs(probe)
    free = st.f_bavail * st.f_frsize
    if free < min_free_bytes:
        raise OutboxError(
            f"only {format_mib(free)} MiB free on the disk holding {path} "
            f"(station.min_free_mb asks for {format_mib(min_free_bytes)} MiB)",
            "free disk space (old logs, exported records) before measuring again",
        )
    return free


def format_mib(n_bytes: int) -> str:
    """MiB with one decimal, rounded DOWN: one byte short of 64 MiB reads 63.9, never
    "64.0 MiB free (need 64 MiB)". Whole MiB print without decimals."""
    if n_bytes % MIB == 0:
        return str(n_bytes // MIB)
    tenths = n_bytes * 10 // MIB
    return f"{tenths // 10}.{tenths % 10}"


def _sqlite_error(exc: sqlite3.Error, path: Path, doing: str) -> OutboxError:
    msg = str(exc)
    low = msg.lower()
    if "full" in low or getattr(exc, "sqlite_errorcode", None) == 13:
        fix = f"free disk space on the disk holding {path.parent}; nothing of this batch was stored"
    elif "readonly" in low or "read-only" in low:
        fix = f"make {path} and its directory writable by the station user"
    elif "not a database" in low or "malformed" in low:
        fix = f"move {path} aside (keep it for inspection) and start again with an empty outbox"
    elif "locked" in low or "busy" in low:
        fix = "another process holds the outbox; run only one station per outbox file"
    elif "unable to open" in low:
        fix = f"make {path.parent} exist and be writable by the station user"
    else:
        fix = f"check {path} and the disk it is on"
    return OutboxError(f"outbox {path}: {doing} failed: {msg}", fix)


class Outbox(AckStates):
    def __init__(self, path: Path, *, check_same_thread: bool = True, synchronous: str = "FULL") -> None:
        """``check_same_thread=False`` lets the station open the outbox at start-up
        (so errors surface before it reports ready) and hand it to its session
        thread; it is still used by one thread at a time.

        ``synchronous="NORMAL"`` is for the publisher's connection only: its
        commits are delivered-marks and acks, and losing the last of those in a
        power cut only means a record is sent again (the consumer absorbs the
        duplicate and acks it again). Records themselves are appended at FULL."""
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutboxError(
                f"cannot create the outbox directory {self.path.parent}: {exc.strerror or exc}",
                f"create {self.path.parent} and make it writable by the station user, or set another outbox path",
            ) from exc
        if not os.access(self.path.parent, os.W_OK | os.X_OK):
            # WAL needs to create -wal and -shm files next to the database.
            raise OutboxError(
                f"the outbox directory {self.path.parent} is not writable",
                f"make {self.path.parent} writable by the station user, or set another outbox path",
            )
        try:
            # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a batch
            # is exactly one transaction and a writer never dead-locks on upgrade.
            self._db = sqlite3.connect(
                self.path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                check_same_thread=check_same_thread,
            )
        except sqlite3.Error as exc:
            raise _sqlite_error(exc, self.path, "opening") from exc
        try:
            self._db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise OutboxError(
                    f"outbox {self.path}: the filesystem does not support WAL (journal_mode={mode})",
                    "put the outbox on a local disk (not a network share)",
                )
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.executescript(_SCHEMA)
            have = {str(r[1]) for r in self._db.execute("PRAGMA table_info(records)")}
            for column, kind in _MIGRATE:
                if column not in have:
                    self._db.execute(f"ALTER TABLE records ADD COLUMN {column} {kind}")
            self._db.executescript(_INDEXES)
            row = self._db.execute("SELECT seq, sha256 FROM records ORDER BY seq DESC LIMIT 1").fetchone()
        except sqlite3.Error as exc:
            self._db.close()
            raise _sqlite_error(exc, self.path, "opening") from exc
        self._next_seq = int(row[0]) + 1 if row else 1
        self._last_hash = bytes(row[1]) if row else ZERO_HASH

    # -- writer side ---------------------------------------------------------------

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def last_hash(self) -> bytes:
        return self._last_hash

    def append(self, records: Sequence[StoredRecord], meta: dict[str, str] | None = None,
               *, skip_to: int | None = None) -> None:
        """Store a batch in ONE transaction (one fsync for the whole group),
        with ``meta`` entries written in the same transaction.

        ``skip_to`` is only for `station records reset-chain`: the batch starts at
        that seq, after records this outbox lost, so no seq is ever used twice."""
        if not records:
            return
        expected = self._next_seq if skip_to is None else skip_to
        if skip_to is not None and skip_to < self._next_seq:
            raise OutboxError(f"cannot continue the chain at seq {skip_to}: the outbox already holds "
                              f"up to {self._next_seq - 1}", "reset the chain only when the outbox is behind its head")
        for i, rec in enumerate(records):
            if rec.seq != expected + i:
                raise OutboxError(
                    f"record {rec.record_id} has seq {rec.seq}, the outbox expects {expected + i}",
                    "build records from Outbox.next_seq and append them in order; "
                    "only one writer may append to an outbox",
                )
        now = time.time()
        rows = [(r.seq, r.record_id, hashlib.sha256(r.data).digest(), bytes(r.data), now) for r in records]
        try:
            self._write_batch("INSERT INTO records(seq, record_id, sha256, data, stored_at) VALUES (?,?,?,?,?)", rows,
                              meta=meta)
        except sqlite3.IntegrityError as exc:
            raise OutboxError(
                f"outbox {self.path}: a record of this batch is already stored ({exc})",
                "give every record a new record_id; another writer may be appending to this outbox",
            ) from exc
        except sqlite3.Error as exc:
            raise _sqlite_error(exc, self.path, f"storing records {records[0].seq}..{records[-1].seq}") from exc
        self._next_seq = records[-1].seq + 1
        self._last_hash = rows[-1][2]

    # -- publisher side ------------------------------------------------------------

    def pending(self, after_seq: int = 0, limit: int = 100, resend_before: float | None = None) -> list[StoredRecord]:
        """Records to publish, in seq order: those never published and, with
        ``resend_before`` (wall time), those published before it and still not
        acknowledged by the central system."""
        return [StoredRecord(s, r, d) for s, r, d in self.pending_rows(after_seq, limit, resend_before)]

    def pending_rows(self, after_seq: int = 0, limit: int = 100,
                     resend_before: float | None = None) -> list[tuple[int, str, bytes]]:
        """``pending`` as (seq, record_id, data) tuples: what the publisher reads, in
        large batches, without an object per record."""
        try:
            if resend_before is None:
                rows = self._db.execute(
                    "SELECT seq, record_id, data FROM records WHERE delivered_at IS NULL AND seq > ? "
                    "ORDER BY seq LIMIT ?",
                    (after_seq, limit),
                ).fetchall()
            else:
                rows = self._db.execute(
                    "SELECT seq, record_id, data FROM records WHERE acked_at IS NULL AND seq > ? "
                    "AND (delivered_at IS NULL OR delivered_at < ?) ORDER BY seq LIMIT ?",
                    (after_seq, resend_before, limit),
                ).fetchall()
        except sqlite3.Error as exc:
            raise _sqlite_error(exc, self.path, "reading pending records") from exc
        # bytes() also refuses a row some other tool stored as TEXT (TypeError) rather than send it.
        return [(s, r, bytes(d)) for s, r, d in rows]

    def mark_delivered(self, seqs: Iterable[int], now: float | None = None) -> None:
        """One transaction for the whole batch of PUBACKs: per-ack commits would cost
        an fsync each and throttle the publisher. A re-sent record gets a new
        delivered_at, which restarts its wait for the central system's ack."""
        now = time.time() if now is None else now
        # Acks arrive mostly in seq order: one UPDATE per run of consecutive seqs.
        batch: list[tuple[float, int, int]] = []
        for s in sorted(set(seqs)):
            if batch and batch[-1][2] == s - 1:
                batch[-1] = (now, batch[-1][1], s)
            else:
                batch.append((now, s, s))
        if not batch:
            return
        try:
            self._write_batch(
                "UPDATE records SET delivered_at = ? WHERE seq BETWEEN ? AND ? AND acked_at IS NULL", batch
            )
        except sqlite3.Error as exc:
            raise _sqlite_error(exc, self.path, "marking records delivered") from exc

    def waiting(self, acked: bool = False) -> bool:
        """Whether a record is not yet published (``acked``: not yet accepted or
        rejected by the central system). One index probe, unlike a count."""
        column = "acked_at" if acked else "delivered_at"
        try:
            return self._db.execute(f"SELECT 1 FROM records WHERE {column} IS NULL LIMIT 1").fetchone() is not None
        except sqlite3.Error as exc:
            raise _sqlite_error(exc, self.path, "looking for pending records") from exc

    def depth(self) -> int:
        """Records not yet published (the broker has not taken them)."""
        try:
            return int(self._db.execute("SELECT count(*) FROM records WHERE delivered_at IS NULL").fetchone()[0])
        except sqlite3.Error as exc:
            raise _sqlite_error(exc, self.path, "counting pending records") from exc

    # -- inspection ----------------------------------------------------------------

    def records(self, from_seq: int | None = None, to_seq: int | None = None) -> Iterator[StoredRecord]:
        # Paged, so exporting a year of records does not load them all at once.
        last = (from_seq or 1) - 1
        upper = to_seq if to_seq is not None else (1 << 62)
        while True:
            rows = self._db.execute(
                "SELECT seq, record_id, data FROM records WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT 500",
                (last, upper),
            ).fetchall()
            if not rows:
                return
            for s, r, d in rows:
                yield StoredRecord(int(s), str(r), bytes(d))
            last = int(rows[-1][0])

    def export(self, directory: Path, from_seq: int | None = None, to_seq: int | None = None,
               force: bool = False) -> int:
        """Write DIR/<seq>.cose for the stored records in [from_seq, to_seq]. Refuses, before
        writing anything, when one of those files exists, unless `force`."""
        directory = Path(directory)
        lo, hi = (from_seq or 1), (to_seq if to_seq is not None else (1 << 62))
        try:
            directory.mkdir(parents=True, exist_ok=True)
            if not force:
                self._refuse_existing(directory, lo, hi)
            n = 0
            for rec in self.records(from_seq, to_seq):
                with open(directory / f"{rec.seq}.cose", "wb" if force else "xb") as fh:
                    fh.write(rec.data)
                n += 1
        except FileExistsError as exc:  # appeared after the check: someone else writes there too
            raise OutboxError(f"{exc.filename} appeared while exporting", "export into a directory of its own") from exc
        except OSError as exc:
            fix = "free disk space" if exc.errno == errno.ENOSPC else f"make {directory} writable"
            raise OutboxError(f"exporting records to {directory} failed: {exc.strerror or exc}", fix) from exc
        return n

    def _refuse_existing(self, directory: Path, lo: int, hi: int) -> None:
        existing = [int(name[:-5]) for name in os.listdir(directory)
                    if name.endswith(".cose") and name[:-5].isdigit() and lo <= int(name[:-5]) <= hi]
        if not existing:
            return
        stored = [s for s in sorted(existing) if self._db.execute("SELECT 1 FROM records WHERE seq = ?", (s,)).fetchone()]
        if stored:
            shown = ", ".join(f"{s}.cose" for s in stored[:3]) + (f" and {len(stored) - 3} more" if len(stored) > 3 else "")
            raise OutboxError(f"{directory} already holds {shown}; nothing was exported",
                              "export into an empty directory, narrow --from-seq/--to-seq, or pass --force to overwrite")

    def _write_batch(self, sql: str, rows: Sequence[tuple], meta: dict[str, str] | None = None) -> None:
        """All rows in one transaction, one fsync: the group commit. On any
        failure nothing is written, so a batch is never half stored."""
        with self._immediate():
            self._db.executemany(sql, rows)
            if meta:
                self._db.executemany(_UPSERT_META, [(k, str(v)) for k, v in meta.items()])

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        try:
            self._db.execute(_UPSERT_META, (key, str(value)))
        except sqlite3.Error as exc:
            raise _sqlite_error(exc, self.path, f"writing meta {key!r}") from exc

    def pragma(self, name: str) -> str:
        """Read back a PRAGMA (journal_mode, synchronous...), for checks and tests."""
        return str(self._db.execute(f"PRAGMA {name}").fetchone()[0])

    def close(self) -> None:
        try:
            self._db.close()
        except sqlite3.Error:
            pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_drained(path: Path, timeout: float, acked: bool = False) -> bool:
    """Poll the outbox at ``path`` (on a connection of the caller's own) until every
    record is published, or with ``acked`` accepted or rejected by the central system."""
    deadline = time.monotonic() + timeout
    with Outbox(path) as ob:
        while True:
            if not ob.waiting(acked):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

