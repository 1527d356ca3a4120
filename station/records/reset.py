"""`station records reset-chain`: the explicit way out of a refusal for a lost
or rolled-back outbox (records/head.py).

It writes ONE signed record that says what was lost, with flags
``["chain-reset", "outbox-lost:<first>-<last>"]``, and continues the chain after
the recorded head: its seq is head + 1 and its ``prev`` the head's hash, so no
seq number is ever used twice and the central system's chain stays linked.
The lost records themselves may still be held by the central system (it keeps
every record it acknowledged) — the reset says only that this outbox lost them.
"""

from __future__ import annotations

from dataclasses import dataclass

from station.app.lock import StateDirLock
from station.config import Config
from station.delivery.outbox import Outbox, StoredRecord
from station.errors import ChainError
from station.records.chain import RecordWriter
from station.records.cose import Signer
from station.records.head import known_head
from station.records.keys import load_private_key
from station.records.payload import RecordInput

RESET_FLAG = "chain-reset"


@dataclass(frozen=True)
class Reset:
    lost_from: int
    lost_to: int
    record: StoredRecord


def reset_chain(cfg: Config, outbox_file, *, operator: str, lot: str) -> Reset:
    lock = StateDirLock(cfg.station.state_dir)
    lock.acquire()  # never while the station runs
    try:
        with Outbox(outbox_file) as ob:
            head = known_head(cfg.station.state_dir)
            last = ob.next_seq - 1
            if head is None or head.seq <= last:
                if head is not None and ob.hash_at(head.seq) not in (None, head.sha256):
                    raise ChainError(
                        f"record seq {head.seq} in {ob.path} differs from the one {head.source} names: this is "
                        "another chain's outbox, not a shortened one",
                        "put the station's own outbox back; reset-chain only continues a chain that lost records")
                raise ChainError(
                    f"nothing to reset: the outbox holds records up to seq {last}"
                    + (f", and the recorded head is seq {head.seq}" if head else ", and no head is recorded"),
                    "start the station as usual")
            signer = Signer(load_private_key(cfg.signing_key_file))
            writer = RecordWriter(ob, signer, station_id=cfg.station.id, simulated=cfg.simulated,
                                  head_dir=cfg.station.state_dir)
            item = RecordInput(operator=operator, lot=lot, readings=(),
                               flags=(RESET_FLAG, f"outbox-lost:{last + 1}-{head.seq}"))
            rec = writer.write_batch([item], after=(head.seq, head.sha256))[0]
            return Reset(last + 1, head.seq, rec)
    finally:
        lock.release()
