"""A lost or rolled-back outbox is refused at start (records/head.py), and
`station records reset-chain` is the explicit way on. Real processes: records
are written by a child that is killed with SIGKILL, so its last commits are
still in the WAL when the test deletes it."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import cbor2
import pytest

from station.errors import ChainError
from station.records.head import CHAIN_HEAD, check_outbox, read_head
from stationproc import Proc, child_env, station, station_cmd, write_config

REPO = Path(__file__).resolve().parents[1]

_WRITE = """
import os, signal, sys
from station import config
from station.delivery.outbox import Outbox
from station.records.chain import RecordWriter
from station.records.cose import Signer
from station.records.keys import load_private_key
from station.records.payload import RecordInput
cfg = config.load(sys.argv[1])
ob = Outbox(cfg.station.state_dir / "outbox.sqlite3")
w = RecordWriter(ob, Signer(load_private_key(cfg.signing_key_file)), station_id=cfg.station.id,
                 simulated=cfg.simulated, head_dir=cfg.station.state_dir)
for _ in range(int(sys.argv[2])):
    w.write(RecordInput(operator="op", lot="L", readings=()))
if sys.argv[3] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)  # no close, no checkpoint: the commits stay in the WAL
ob.close()
"""


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = write_config(tmp_path, str(tmp_path / "no-balance"), 1)  # never reached: the check comes first
    res = station("keys", "init", "--config", str(path))
    assert res.returncode == 0, res.stderr
    return path


def write_records(cfg: Path, n: int, kill: bool) -> None:
    proc = subprocess.run([sys.executable, "-c", _WRITE, str(cfg), str(n), "kill" if kill else "close"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == (-9 if kill else 0), proc.stderr


def max_seq(db: Path) -> int:
    con = sqlite3.connect(db)
    try:
        return int(con.execute("SELECT coalesce(max(seq), 0) FROM records").fetchone()[0])
    finally:
        con.close()


def refused(cfg: Path, *needles: str) -> str:
    res = station("run", "--config", str(cfg), env=child_env())
    assert res.returncode == 1 and "Traceback" not in res.stderr + res.stdout
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    for needle in ("refusing to measure", "reset-chain", "station records export", "replay", *needles):
        assert needle in lines[0], lines[0]
    return lines[0]


def test_truncated_outbox_is_refused(cfg: Path, tmp_path: Path) -> None:
    write_records(cfg, 6, kill=False)
    db = tmp_path / "state" / "outbox.sqlite3"
    con = sqlite3.connect(db)
    con.execute("DELETE FROM records WHERE seq > 2")  # rolled back to an older state
    con.commit()
    con.close()
    refused(cfg, "records only up to seq 2", "seqs 3..6 are missing")


def test_deleted_wal_is_refused(cfg: Path, tmp_path: Path) -> None:
    write_records(cfg, 3, kill=False)  # checkpointed into the main file at close
    write_records(cfg, 3, kill=True)  # 4..6 committed, only in the WAL
    db = tmp_path / "state" / "outbox.sqlite3"
    wal = db.with_name(db.name + "-wal")
    assert wal.stat().st_size > 0
    wal.unlink()
    db.with_name(db.name + "-shm").unlink(missing_ok=True)
    assert max_seq(db) == 3  # the test really lost 4..6
    assert read_head(tmp_path / "state" / CHAIN_HEAD).seq == 6
    refused(cfg, "records only up to seq 3", "seqs 4..6 are missing")


def test_deleted_outbox_is_refused_and_reset_chain_continues(cfg: Path, tmp_path: Path) -> None:
    write_records(cfg, 4, kill=False)
    state = tmp_path / "state"
    head = read_head(state / CHAIN_HEAD)
    assert head is not None and head.seq == 4
    for name in ("outbox.sqlite3", "outbox.sqlite3-wal", "outbox.sqlite3-shm"):
        (state / name).unlink(missing_ok=True)
    refused(cfg, "holds no records at all", "seqs 1..4 are missing")
    refused(cfg, "holds no records at all")  # still refused: the empty outbox made by the try changes nothing

    res = station("records", "reset-chain", "--config", str(cfg), "--operator", "op-lead")
    assert res.returncode == 0, res.stderr
    assert "seqs 1..4 are not in this outbox" in res.stdout and "record #5" in res.stdout
    export = tmp_path / "export"
    res = station("records", "export", str(export), "--config", str(cfg))
    assert res.returncode == 0, res.stderr
    data = (export / "5.cose").read_bytes()
    payload = cbor2.loads(cbor2.loads(data).value[2])
    assert payload["seq"] == 5 and payload["prev"] == head.sha256  # the chain stays linked
    assert payload["flags"] == ["chain-reset", "outbox-lost:1-4"] and payload["operator"] == "op-lead"
    assert read_head(state / CHAIN_HEAD).seq == 5
    res = station("records", "status", "--config", str(cfg))
    assert res.returncode == 0 and "last seq 5; stored 1, published 0, acked 0, rejected 0" in res.stdout
    assert "recorded head: seq 5 (chain-head.json)" in res.stdout
    # Now the station starts, after the reset record (its balance is missing: it waits for it).
    run = Proc(station_cmd("run", "--config", str(cfg)), env=child_env())
    run.wait_for(r"next record #6")
    run.stop()
    assert "refusing to measure" not in run.output
    # A second reset has nothing to do.
    res = station("records", "reset-chain", "--config", str(cfg), "--operator", "op-lead")
    assert res.returncode == 1 and "nothing to reset" in res.stderr


def test_check_outbox_boundaries(tmp_path: Path) -> None:
    from station.records.head import write_chain_head

    h = hashlib.sha256(b"r5").digest()
    write_chain_head(tmp_path, "S", 5, h)
    assert check_outbox(tmp_path, tmp_path / "o", 5, lambda s: h).seq == 5  # at the head: fine
    assert check_outbox(tmp_path, tmp_path / "o", 6, lambda s: h) is not None  # ahead (head write lost): fine
    with pytest.raises(ChainError) as err:
        check_outbox(tmp_path, tmp_path / "o", 4, lambda s: None)  # one behind
    assert "seq 5 are missing" in err.value.what
    with pytest.raises(ChainError) as err:
        check_outbox(tmp_path, tmp_path / "o", 5, lambda s: b"\x01" * 32)  # same seq, another record
    assert "a different outbox" in err.value.what
    (tmp_path / CHAIN_HEAD).write_text("{not json")
    with pytest.raises(ChainError):
        check_outbox(tmp_path, tmp_path / "o", 5, lambda s: h)
    os.unlink(tmp_path / CHAIN_HEAD)
    assert check_outbox(tmp_path, tmp_path / "o", 0, lambda s: None) is None  # a new station
