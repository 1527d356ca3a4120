"""Where `station consume` keeps records: PostgreSQL, or SQLite when no URL is given.

Both speak the same SQL through a thin adapter (placeholders and column types
differ). The unique key is (station_id, seq): every insert is
``ON CONFLICT DO NOTHING``, so a record stored by another consumer of the same
group, or by this one before a crash, is found, not stored twice.
Rejected records go to their own table: a forgery that claims a genuine seq
must never occupy (or shadow) that seq's row.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from station.errors import StationError

_FIX_URL = "give --db postgresql://USER@HOST:PORT/DBNAME, or a file path (or sqlite:///PATH) for SQLite"

_TABLES = """
CREATE TABLE IF NOT EXISTS records (
    station_id  TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    record_id   TEXT NOT NULL,
    digest      {blob} NOT NULL,  -- SHA-256 of the signed content (docs/RECORDS.md)
    prev        {blob} NOT NULL,
    cose        {blob} NOT NULL,  -- the exact bytes received
    simulated   BOOLEAN NOT NULL,
    received_at {time} NOT NULL,
    verdict     TEXT NOT NULL DEFAULT 'accepted',
    PRIMARY KEY (station_id, seq)
);
CREATE TABLE IF NOT EXISTS rejected (
    raw_sha256  {blob} PRIMARY KEY,  -- the same rejected bytes twice are one row
    topic       TEXT NOT NULL,
    station_id  TEXT,
    seq         BIGINT,
    record_id   TEXT,
    cose        {blob} NOT NULL,
    received_at {time} NOT NULL,
    verdict     TEXT NOT NULL DEFAULT 'rejected',
    reason      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS alarms (
    id          {serial},
    raised_at   {time} NOT NULL,
    station_id  TEXT,
    seq         BIGINT,
    message     TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Row:
    station_id: str
    seq: int
    record_id: str
    digest: bytes
    prev: bytes
    cose: bytes
    simulated: bool


class Store:
    """One connection; callers run one batch per transaction (``begin`` ... ``commit``)."""

    kind = ""
    where = ""

    def __init__(self, conn, placeholder: str) -> None:
        self._conn = conn
        self._ph = placeholder

    def _sql(self, text: str) -> str:
        return text if self._ph == "%s" else text.replace("%s", "?")

    def _now(self):
        return dt.datetime.now(dt.timezone.utc)

    def execute(self, sql: str, params: tuple = ()):
        cur = self._conn.cursor()
        cur.execute(self._sql(sql), params)
        return cur

    def begin(self) -> None:
        """PostgreSQL opens a transaction on the first statement; SQLite needs telling."""

    def commit(self) -> None:
        self._conn.commit()

    def rollback(self) -> None:
        self._conn.rollback()

    def close(self) -> None:
        try:
            self._conn.close()
        except Exception:  # closing a dead connection: nothing left to release
            pass

    # -- writes (inside the caller's transaction) ---------------------------------

    def insert_many(self, rows: list[Row]) -> set[tuple[str, int]]:
        """One statement for the batch; returns the keys stored now (the others were there)."""
        if not rows:
            return set()
        now = self._now()
        values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s)"] * len(rows))
        params = tuple(v for r in rows for v in (r.station_id, r.seq, r.record_id, r.digest, r.prev, r.cose,
                                                 r.simulated, now))
        cur = self.execute(
            "INSERT INTO records (station_id, seq, record_id, digest, prev, cose, simulated, received_at) "
            f"VALUES {values} ON CONFLICT (station_id, seq) DO NOTHING RETURNING station_id, seq", params)
        return {(r[0], int(r[1])) for r in cur.fetchall()}

    def _where_keys(self, keys: list[tuple[str, int]]) -> tuple[str, tuple]:
        return (" OR ".join(["(station_id = %s AND seq = %s)"] * len(keys)),
                tuple(v for k in keys for v in k))

    def digests(self, keys: list[tuple[str, int]]) -> dict[tuple[str, int], bytes]:
        if not keys:
            return {}
        where, params = self._where_keys(keys)
        return {(r[0], int(r[1])): bytes(r[2])
                for r in self.execute(f"SELECT station_id, seq, digest FROM records WHERE {where}", params)}

    def links(self, keys: list[tuple[str, int]]) -> dict[tuple[str, int], tuple[bytes, bytes]]:
        """(digest, prev) of each stored key."""
        if not keys:
            return {}
        where, params = self._where_keys(list(dict.fromkeys(keys)))
        return {(r[0], int(r[1])): (bytes(r[2]), bytes(r[3]))
                for r in self.execute(f"SELECT station_id, seq, digest, prev FROM records WHERE {where}", params)}

    def reject(self, raw_sha256: bytes, topic: str, station_id: str | None, seq: int | None,
               record_id: str | None, cose: bytes, reason: str) -> None:
        self.execute(
            "INSERT INTO rejected (raw_sha256, topic, station_id, seq, record_id, cose, received_at, reason) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (raw_sha256) DO NOTHING",
            (raw_sha256, topic, station_id, seq, record_id, cose, self._now(), reason),
        )

    def alarm(self, station_id: str | None, seq: int | None, message: str) -> None:
        self.execute("INSERT INTO alarms (raised_at, station_id, seq, message) VALUES (%s, %s, %s, %s)",
                     (self._now(), station_id, seq, message))

    # -- reads ----------------------------------------------------------------------

    def contiguous_head(self, station_id: str, known: int) -> tuple[int, int | None]:
        """(h, next): every seq in known+1..h is stored and h+1 is not; ``next`` is the
        lowest stored seq above h (None when nothing is), so h+1..next-1 is a gap.
        ``known`` is a head found earlier (heads only grow: rows are never deleted)."""
        r = self.execute(
            "SELECT MIN(a.seq) FROM records a WHERE a.station_id = %s AND a.seq >= %s AND NOT EXISTS "
            "(SELECT 1 FROM records b WHERE b.station_id = a.station_id AND b.seq = a.seq + 1)",
            (station_id, known + 1),
        ).fetchone()
        first = self.execute("SELECT 1 FROM records WHERE station_id = %s AND seq = %s",
                             (station_id, known + 1)).fetchone()
        head = int(r[0]) if first and r and r[0] is not None else known
        nxt = self.execute("SELECT MIN(seq) FROM records WHERE station_id = %s AND seq > %s",
                           (station_id, head)).fetchone()
        return head, (int(nxt[0]) if nxt and nxt[0] is not None else None)

    def count(self, table: str = "records") -> int:
        assert table in ("records", "rejected", "alarms")
        return int(self.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


class SqliteStore(Store):
    kind = "sqlite"

    def __init__(self, path: Path) -> None:
        self.where = str(path)
        try:
            # isolation_level None + explicit BEGIN: one transaction per batch, as with PostgreSQL.
            conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # an ack promises the row survives a power cut
        except sqlite3.Error as exc:
            raise StationError(f"cannot open SQLite database {path}: {exc}",
                               "check the path and that its directory exists and is writable") from None
        super().__init__(conn, "?")
        conn.executescript(_TABLES.format(blob="BLOB", time="TEXT", serial="INTEGER PRIMARY KEY AUTOINCREMENT"))

    def _now(self):
        return super()._now().isoformat()

    def begin(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")  # the write lock now: no upgrade deadlock between consumers

    def commit(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("COMMIT")

    def rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")


class PostgresStore(Store):
    kind = "postgresql"

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.url = url
        self.where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or ''}"
        conn = self._connect()
        super().__init__(conn, "%s")
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(7708)")  # consumers starting together create the schema once
            conn.execute(_TABLES.format(blob="BYTEA", time="TIMESTAMPTZ", serial="BIGSERIAL PRIMARY KEY"))

    def reopen(self) -> None:
        self.close()
        self._conn = self._connect()

    def _connect(self):
        import psycopg

        url = self.url
        try:
            return psycopg.connect(url, connect_timeout=5)
        except psycopg.Error as exc:
            raise StationError(f"cannot connect to PostgreSQL at {self.where}: {_first_line(exc)}",
                               "check that the server runs, and the host, port, user and database in --db") from None
        except Exception as exc:  # psycopg raises ProgrammingError/ValueError for a malformed URL
            raise StationError(f"bad PostgreSQL URL {url!r}: {_first_line(exc)}", _FIX_URL) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def open_store(url: str | None, default_path: Path) -> Store:
    if not url:
        return SqliteStore(default_path)
    parts = urlsplit(url)
    if parts.scheme in ("postgresql", "postgres"):
        return PostgresStore(url)
    if parts.scheme == "sqlite":
        return SqliteStore(Path(parts.path))
    if parts.scheme == "" or len(parts.scheme) == 1:  # a path (or a Windows drive letter)
        return SqliteStore(Path(url))
    raise StationError(f"--db {url!r}: unknown database kind {parts.scheme!r}", _FIX_URL)


def db_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean the database (not the record) failed: retry the batch later."""
    errors: list[type[BaseException]] = [sqlite3.OperationalError]
    try:
        import psycopg

        errors.append(psycopg.OperationalError)
    except ImportError:
        pass
    return tuple(errors)
