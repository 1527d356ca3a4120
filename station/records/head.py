"""The chain head kept OUTSIDE the outbox, so that a lost or rolled-back outbox
is noticed instead of silently reusing seq numbers.

Two small JSON files beside the outbox, each replaced atomically (write a
temporary file, fsync it, rename it over the old one, fsync the directory):

- ``chain-head.json``: the last seq this station committed and the SHA-256 of
  its signed bytes, written by the record writer after every commit;
- ``central-ack.json``: the highest seq the central system acknowledged, written
  by the publisher after storing acks.

On start, :func:`check_outbox` compares the outbox with both and refuses to
measure when the outbox is behind (deleted, truncated, its WAL deleted,
restored from an old backup).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from station.errors import ChainError

CHAIN_HEAD = "chain-head.json"
CENTRAL_ACK = "central-ack.json"


@dataclass(frozen=True)
class Head:
    seq: int
    sha256: bytes
    source: str  # which file said so, for messages


def write_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself must survive a power cut
    finally:
        os.close(fd)


def read_head(path: Path) -> Head | None:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return Head(int(raw["seq"]), bytes.fromhex(raw["sha256"]), path.name)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ChainError(
            f"the chain head file {path} cannot be read ({exc})",
            f"restore it from a backup; if it is lost for good, move it aside and start the station "
            f"only after checking with the central system that it holds every record up to the outbox's last",
        ) from exc


def write_chain_head(state_dir: Path, station_id: str, seq: int, sha256: bytes) -> None:
    write_atomic(state_dir / CHAIN_HEAD, {"station_id": station_id, "seq": seq, "sha256": sha256.hex()})


def write_central_ack(state_dir: Path, seq: int, record_id: str, sha256: bytes) -> None:
    write_atomic(state_dir / CENTRAL_ACK, {"seq": seq, "record_id": record_id, "sha256": sha256.hex()})


def known_head(state_dir: Path) -> Head | None:
    """The furthest point of the chain recorded outside the outbox."""
    heads = [h for h in (read_head(state_dir / CHAIN_HEAD), read_head(state_dir / CENTRAL_ACK)) if h is not None]
    return max(heads, key=lambda h: h.seq) if heads else None


def recovery_fix(outbox_path: Path, config_hint: str = "") -> str:
    cfg = f" {config_hint}" if config_hint else ""
    return (f"keep {outbox_path} and its -wal file as they are, then: (1) `station records export DIR{cfg}` "
            f"saves what is left; (2) ask the central system to replay or confirm the missing seqs (it holds "
            f"every record it acknowledged); (3) `station records reset-chain{cfg}` writes a signed record of "
            f"the loss and continues the chain after it. Restoring the lost outbox file (with its -wal) from "
            f"a backup that is not older than the head also works")


def check_outbox(state_dir: Path, outbox_path: Path, last_seq: int, hash_at, config_hint: str = "") -> Head | None:
    """Raise ChainError when the outbox is behind the head recorded outside it.

    ``last_seq`` is the newest seq in the outbox; ``hash_at(seq)`` returns the
    stored record's SHA-256 (or None). Returns the head that was checked."""
    head = known_head(state_dir)
    if head is None:
        return None
    if last_seq < head.seq:
        held = "no records at all" if last_seq == 0 else f"records only up to seq {last_seq}"
        missing = (f"seq {last_seq + 1}" if last_seq + 1 == head.seq else f"seqs {last_seq + 1}..{head.seq}")
        raise ChainError(
            f"refusing to measure: the outbox {outbox_path} holds {held}, but {head.source} says this station "
            f"already committed seq {head.seq}; {missing} are missing (the outbox or its -wal file was deleted, "
            f"truncated or restored from an old backup), and measuring now would reuse their seq numbers",
            recovery_fix(outbox_path, config_hint),
        )
    stored = hash_at(head.seq)
    if stored is not None and stored != head.sha256:
        raise ChainError(
            f"refusing to measure: record seq {head.seq} in {outbox_path} is not the record {head.source} "
            f"names (a different outbox was put in its place)",
            recovery_fix(outbox_path, config_hint),
        )
    return head
