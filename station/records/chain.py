"""Seal measurements into the hash chain: build → sign → durable commit.

The chain's head (next seq, hash of the last record) comes from the outbox,
so it cannot drift from what was stored. A copy goes to a small fsynced file
beside it after every commit (records/head.py), so that a lost or rolled-back
outbox is refused at start instead of silently reusing seq numbers.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Sequence
from pathlib import Path

from station.records.cose import Signer
from station.errors import RecordError
from station.delivery.outbox import Outbox, StoredRecord
from station.records.head import write_chain_head
from station.records.payload import RecordInput, build_payload

_KID_META = "signing_kid"
_log = logging.getLogger(__name__)


class RecordWriter:
    def __init__(self, outbox: Outbox, signer: Signer, *, station_id: str, simulated: bool,
                 head_dir: Path | None = None) -> None:
        """``head_dir``: where chain-head.json is kept (the state dir); None only in
        tests and benchmarks of the bare chain."""
        self.outbox = outbox
        self.head_dir = head_dir
        self.signer = signer
        self.station_id = station_id
        self.simulated = simulated
        bound = outbox.get_meta(_KID_META)
        if bound is None:
            outbox.set_meta(_KID_META, signer.kid)
        elif bound != signer.kid:
            raise RecordError(
                f"this outbox's chain is signed by key {bound}, but the station now has key {signer.kid}",
                "use a separate station.state_dir for each key (simulation has its own key), "
                "or restore the original key file",
            )

    def write(self, item: RecordInput, meta: dict[str, str] | None = None) -> StoredRecord:
        return self.write_batch([item], meta)[0]

    def write_batch(self, items: Sequence[RecordInput], meta: dict[str, str] | None = None,
                    *, after: tuple[int, bytes] | None = None) -> list[StoredRecord]:
        """Seal several records in one group commit (with ``meta`` in the same
        transaction); they are stored when this returns. A ``{seq}`` in a meta
        value becomes the last record's seq.

        ``after=(seq, sha256)`` continues the chain after a head the outbox lost
        (only for reset-chain)."""
        seq, prev = (self.outbox.next_seq, self.outbox.last_hash) if after is None else (after[0] + 1, after[1])
        sealed = []
        for item in items:
            record_id = str(uuid.uuid4())
            payload = build_payload(
                item, record_id=record_id, station_id=self.station_id, seq=seq, prev=prev, simulated=self.simulated
            )
            data = self.signer.sign(payload)
            sealed.append(StoredRecord(seq=seq, record_id=record_id, data=data))
            seq, prev = seq + 1, hashlib.sha256(data).digest()
        last = str(sealed[-1].seq) if sealed else ""
        self.outbox.append(sealed, {k: v.replace("{seq}", last) for k, v in (meta or {}).items()},
                           skip_to=None if after is None else after[0] + 1)
        if self.head_dir is not None and sealed:
            try:
                write_chain_head(self.head_dir, self.station_id, sealed[-1].seq, self.outbox.last_hash)
            except OSError as exc:
                # The records ARE stored; an outbox ahead of its head file is not a
                # refusal at the next start, only less protection until the next commit.
                _log.warning("records up to seq %d are stored, but the chain head file could not be written: %s",
                             sealed[-1].seq, exc)
        return sealed
