"""Seal measurements into the hash chain: build → sign → durable commit.

The chain's head (next seq, hash of the last record) lives only in the
outbox, so it survives restarts and cannot drift from what was stored.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence

from station.records.cose import Signer
from station.errors import RecordError
from station.delivery.outbox import Outbox, StoredRecord
from station.records.payload import RecordInput, build_payload

_KID_META = "signing_kid"


class RecordWriter:
    def __init__(self, outbox: Outbox, signer: Signer, *, station_id: str, simulated: bool) -> None:
        self.outbox = outbox
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

    def write_batch(self, items: Sequence[RecordInput], meta: dict[str, str] | None = None) -> list[StoredRecord]:
        """Seal several records in one group commit (with ``meta`` in the same
        transaction); they are stored when this returns. A ``{seq}`` in a meta
        value becomes the last record's seq."""
        seq, prev = self.outbox.next_seq, self.outbox.last_hash
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
        self.outbox.append(sealed, {k: v.replace("{seq}", last) for k, v in (meta or {}).items()})
        return sealed
