from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from station.errors import OutboxError
from station.delivery.outbox import MIB, ZERO_HASH, Outbox, StoredRecord, check_free_space, format_mib


def recs(start: int, n: int, prefix: str = "r") -> list[StoredRecord]:
    # Arbitrary bytes, including NULs and invalid UTF-8: the outbox must not care.
    return [StoredRecord(s, f"{prefix}{s}", bytes([s % 256, 0, 255]) * (s % 7 + 1)) for s in range(start, start + n)]


@pytest.fixture
def ob(tmp_path: Path):
    box = Outbox(tmp_path / "state" / "outbox.db")
    yield box
    box.close()


def test_wal_and_synchronous_full_are_really_set(ob: Outbox) -> None:
    assert ob.pragma("journal_mode") == "wal"
    assert ob.pragma("synchronous") == "2"  # FULL
    assert int(ob.pragma("busy_timeout")) >= 1000
    # WAL is a property of the file, seen by any other connection too.
    other = sqlite3.connect(ob.path)
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    other.close()


def test_empty_outbox(ob: Outbox) -> None:
    assert ob.next_seq == 1
    assert ob.last_hash == ZERO_HASH
    assert ob.depth() == 0
    assert ob.pending() == []
    assert list(ob.records()) == []


def test_append_advances_seq_and_hash(ob: Outbox) -> None:
    batch = recs(1, 5)
    ob.append(batch)
    assert ob.next_seq == 6
    assert ob.last_hash == hashlib.sha256(batch[-1].data).digest()
    assert ob.depth() == 5
    assert list(ob.records()) == batch


@pytest.mark.parametrize(
    "bad",
    [
        [StoredRecord(2, "a", b"x")],  # gap before the batch
        [StoredRecord(1, "a", b"x"), StoredRecord(3, "b", b"y")],  # gap inside
        [StoredRecord(1, "a", b"x"), StoredRecord(1, "b", b"y")],  # repeat
    ],
)
def test_seq_continuity_is_enforced(ob: Outbox, bad: list[StoredRecord]) -> None:
    with pytest.raises(OutboxError) as err:
        ob.append(bad)
    assert "expects" in err.value.what and err.value.fix
    assert ob.depth() == 0 and ob.next_seq == 1


def test_failed_batch_writes_nothing(ob: Outbox) -> None:
    ob.append(recs(1, 2))
    batch = [StoredRecord(3, "new3", b"a"), StoredRecord(4, "r1", b"dup id")]
    with pytest.raises(OutboxError):
        ob.append(batch)
    assert [r.seq for r in ob.records()] == [1, 2]
    assert ob.next_seq == 3
    ob.append([StoredRecord(3, "new3", b"a")])  # the outbox is still usable
    assert ob.next_seq == 4


def test_disk_full_is_an_outbox_error_and_nothing_is_half_written(ob: Outbox) -> None:
    ob.append(recs(1, 3))
    hash_before = ob.last_hash
    pages = int(ob.pragma("page_count"))
    ob._db.execute(f"PRAGMA max_page_count={pages}")  # the database cannot grow: like a full disk
    big = [StoredRecord(s, f"big{s}", bytes(20_000)) for s in range(4, 14)]
    with pytest.raises(OutboxError) as err:
        ob.append(big)
    assert "disk" in err.value.fix
    assert [r.seq for r in ob.records()] == [1, 2, 3]
    assert ob.next_seq == 4 and ob.last_hash == hash_before


def test_data_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    batch = recs(1, 10)
    with Outbox(path) as a:
        a.append(batch[:4])
        a.append(batch[4:])
        a.mark_delivered([1, 2])
        a.set_meta("station_id", "st-01")
    with Outbox(path) as b:
        assert list(b.records()) == batch
        assert b.next_seq == 11
        assert b.last_hash == hashlib.sha256(batch[-1].data).digest()
        assert [r.seq for r in b.pending()] == list(range(3, 11))
        assert b.get_meta("station_id") == "st-01"
        assert b.get_meta("missing") is None


def test_pending_mark_delivered_depth(ob: Outbox) -> None:
    ob.append(recs(1, 10))
    assert [r.seq for r in ob.pending(limit=3)] == [1, 2, 3]
    assert [r.seq for r in ob.pending(after_seq=7)] == [8, 9, 10]
    ob.mark_delivered([2, 4, 4, 99])
    assert ob.depth() == 8
    assert [r.seq for r in ob.pending(limit=3)] == [1, 3, 5]
    ob.mark_delivered(iter(range(1, 11)))
    assert ob.depth() == 0 and ob.pending() == []
    assert len(list(ob.records())) == 10  # delivered records are kept


def test_meta_overwrite(ob: Outbox) -> None:
    ob.set_meta("k", "1")
    ob.set_meta("k", "2")
    assert ob.get_meta("k") == "2"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payloads=st.lists(st.binary(min_size=0, max_size=2000), min_size=1, max_size=8))
def test_export_writes_exact_bytes(tmp_path_factory: pytest.TempPathFactory, payloads: list[bytes]) -> None:
    d = tmp_path_factory.mktemp("exp")
    with Outbox(d / "outbox.db") as box:
        box.append([StoredRecord(i + 1, f"id{i}", p) for i, p in enumerate(payloads)])
        assert box.export(d / "out") == len(payloads)
    for i, p in enumerate(payloads):
        assert (d / "out" / f"{i + 1}.cose").read_bytes() == p


@pytest.mark.parametrize("where", ["under-a-file", "proc"])
def test_unwritable_directory_is_an_outbox_error(tmp_path: Path, where: str) -> None:
    if where == "under-a-file":
        (tmp_path / "plain").write_text("not a directory")
        path = tmp_path / "plain" / "sub" / "outbox.db"
    else:
        path = Path("/proc/station-outbox/outbox.db")  # not writable, even for root
    with pytest.raises(OutboxError) as err:
        Outbox(path)
    assert "writable" in err.value.fix


def test_not_a_database_is_an_outbox_error(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    path.write_bytes(b"this is a text file, not sqlite " * 100)
    with pytest.raises(OutboxError) as err:
        Outbox(path)
    assert "move" in err.value.fix


def test_check_free_space(tmp_path: Path) -> None:
    assert check_free_space(tmp_path / "not" / "yet" / "outbox.db", 0) > 0
    with pytest.raises(OutboxError) as err:
        check_free_space(tmp_path, 1 << 62)
    assert "free disk space" in err.value.fix


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB tmpfs: nothing else writes to it, so its free space holds still."""
    mnt = tmp_path / "tiny-disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=True)


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_free_space_boundary_is_exact(tiny_disk: Path) -> None:
    (tiny_disk / "some-data").write_bytes(b"x" * 10_000)
    free = _free(tiny_disk)
    assert check_free_space(tiny_disk / "state" / "outbox.db", free) == free  # exactly the limit: measure
    with pytest.raises(OutboxError):
        check_free_space(tiny_disk / "state" / "outbox.db", free + 1)  # one byte short: refuse


def test_min_free_is_mib_in_the_check_and_in_the_message(tiny_disk: Path) -> None:
    assert _free(tiny_disk) == 4 * MIB
    assert check_free_space(tiny_disk, 4 * MIB) == 4 * MIB
    (tiny_disk / "one-page").write_bytes(b"x")  # tmpfs takes a whole page for it
    free = _free(tiny_disk)
    assert 4_000_000 < free < 4 * MIB  # enough for 4 MB, not for 4 MiB
    with pytest.raises(OutboxError) as err:
        check_free_space(tiny_disk, 4 * MIB)
    assert f"only 3.9 MiB free on the disk holding {tiny_disk}" in err.value.what
    assert "(station.min_free_mb asks for 4 MiB)" in err.value.what
    assert "MB " not in err.value.what


def test_format_mib_rounds_down() -> None:
    assert [format_mib(n) for n in (0, MIB, 64 * MIB, 64 * MIB - 1, 3 * MIB // 2, 3 * MIB // 2 - 1)] == [
        "0", "1", "64", "63.9", "1.5", "1.4"]


def test_writer_and_reader_threads_share_the_file(tmp_path: Path) -> None:
    """The station appends on one thread while the publisher reads and marks on another."""
    path = tmp_path / "outbox.db"
    Outbox(path).close()
    n, errors = 300, []

    def writer() -> None:
        try:
            with Outbox(path) as w:
                for start in range(1, n + 1, 10):
                    w.append(recs(start, 10))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    t = threading.Thread(target=writer)
    t.start()
    delivered = 0
    with Outbox(path) as r:
        while delivered < n:
            batch = r.pending(limit=25)
            r.mark_delivered(x.seq for x in batch)
            delivered += len(batch)
            if not batch and not t.is_alive() and r.depth() == 0:
                break
        t.join()
        assert not errors
        assert delivered == n and r.depth() == 0


# -- application acks: states, bound, retention ---------------------------------

from station.delivery.outbox_states import AppAck  # noqa: E402


def test_states_move_stored_published_acked_rejected(ob: Outbox) -> None:
    ob.append(recs(1, 4))
    ob.mark_delivered([1, 2, 3])
    res = ob.apply_acks([AppAck(1, "r1", "accepted"), AppAck(2, "r2", "rejected", "why"),
                         AppAck(1, "r1", "accepted"), AppAck(9, "r9", "accepted"), AppAck(3, "zz", "accepted")])
    assert res.accepted == [1] and [a.seq for a in res.rejected] == [2] and res.duplicates == 1
    assert [a.seq for a in res.unknown] == [9] and res.mismatched == [(AppAck(3, "zz", "accepted"), "r3")]
    c = ob.counts()
    assert (c.stored, c.published, c.acked, c.rejected, c.last_seq) == (1, 1, 1, 1, 4)
    assert ob.states() == {1: "acked", 2: "rejected", 3: "published", 4: "stored"}
    assert ob.unacked_load()[0] == 3  # published, stored and rejected all count against the bound
    # An ack for a record never marked published (its mark was lost) still acks it.
    ob.apply_acks([AppAck(4, "r4", "accepted")])
    assert ob.counts().stored == 0 and ob.depth() == 0
    assert ob.states()[4] == "acked"
    # The first verdict wins.
    ob.apply_acks([AppAck(2, "r2", "accepted")])
    assert ob.rejections() == [(2, "r2", "why")]


def test_waiting_tells_published_and_answered_apart(ob: Outbox) -> None:
    assert not ob.waiting() and not ob.waiting(acked=True)  # empty
    ob.append(recs(1, 2))
    assert ob.waiting() and ob.waiting(acked=True)
    ob.mark_delivered([1])
    assert ob.waiting()  # 2 is still stored
    ob.mark_delivered([2])
    assert not ob.waiting() and ob.waiting(acked=True)
    ob.apply_acks([AppAck(1, "r1", "accepted")])
    assert ob.waiting(acked=True)
    ob.apply_acks([AppAck(2, "r2", "rejected", "why")])  # a verdict either way answers it
    assert not ob.waiting(acked=True)
    assert ob.counts().awaiting_verdict == 0


def test_oldest_unacked_is_the_first_unacked_or_rejected(ob: Outbox) -> None:
    for seq in (1, 2, 3):
        ob.append([StoredRecord(seq, f"r{seq}", b"x")])
    with sqlite3.connect(ob.path) as con:  # stored_at told apart per record
        con.executemany("UPDATE records SET stored_at = ? WHERE seq = ?", [(10.0, 1), (20.0, 2), (30.0, 3)])
    con.close()
    assert ob.counts().oldest_unacked_at == 10.0
    ob.apply_acks([AppAck(1, "r1", "accepted")])
    assert ob.counts().oldest_unacked_at == 20.0
    ob.apply_acks([AppAck(2, "r2", "rejected", "why")])  # waits for a person: still counts
    assert ob.counts().oldest_unacked_at == 20.0
    ob.apply_acks([AppAck(3, "r3", "accepted")])
    assert ob.counts().oldest_unacked_at == 20.0
    ob.append([StoredRecord(4, "r4", b"x")])
    with sqlite3.connect(ob.path) as con:  # a newer unacked record after an older rejection
        con.execute("UPDATE records SET stored_at = 5.0 WHERE seq = 4")
    con.close()
    assert ob.counts().oldest_unacked_at == 20.0  # the lower seq decides, not the smaller time


def test_unacked_bytes_are_counted(ob: Outbox) -> None:
    batch = recs(1, 3)
    ob.append(batch)
    assert ob.unacked_load() == (3, sum(len(r.data) for r in batch))
    ob.apply_acks([AppAck(1, "r1", "accepted")])
    assert ob.unacked_load() == (2, sum(len(r.data) for r in batch[1:]))


def test_prune_boundary_and_the_newest_record_stays(ob: Outbox) -> None:
    ob.append(recs(1, 4))
    ob.apply_acks([AppAck(s, f"r{s}", "accepted") for s in (1, 2, 4)], now=100.0)
    assert ob.prune(acked_before=100.0) == 0  # acked exactly at the cut-off: kept
    assert ob.prune(acked_before=100.001) == 2  # 1 and 2; 3 is not acked, 4 is the newest
    assert [r.seq for r in ob.records()] == [3, 4]
    assert ob.missing_ranges(1, 6) == [(1, 2), (5, 6)]
    assert ob.missing_ranges(3, 4) == []
    box = Outbox(ob.path)  # the head survives pruning
    assert box.next_seq == 5
    box.close()


def test_an_outbox_from_before_acks_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    con = sqlite3.connect(path)
    con.executescript("CREATE TABLE records (seq INTEGER PRIMARY KEY, record_id TEXT NOT NULL UNIQUE, "
                      "sha256 BLOB NOT NULL, data BLOB NOT NULL, stored_at REAL NOT NULL, delivered_at REAL);"
                      "INSERT INTO records VALUES (1, 'r1', x'00', x'01', 0, 5);")
    con.close()
    with Outbox(path) as box:
        assert box.counts().published == 1
        box.apply_acks([AppAck(1, "r1", "accepted")])
        assert box.counts().acked == 1


def test_reset_chain_may_only_skip_forward(ob: Outbox) -> None:
    ob.append(recs(1, 3))
    with pytest.raises(OutboxError):
        ob.append([StoredRecord(2, "x2", b"x")], skip_to=2)
    ob.append([StoredRecord(9, "x9", b"x")], skip_to=9)
    assert ob.next_seq == 10
