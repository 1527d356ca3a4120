"""The reference consumer's logic: signatures, hash chain, sequence gaps.

It is deliberately independent of the outbox and publisher: it only sees
the bytes a central system would see.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from station.records import cose
from station.errors import RecordError

ZERO_HASH = bytes(32)
_REQUIRED = {
    "v": int, "record_id": str, "station_id": str, "seq": int, "prev": bytes, "time": str,
    "operator": str, "lot": str, "simulated": bool, "software": dict, "readings": list, "flags": list,
}  # fmt: skip


@dataclass
class Checked:
    source: str
    data: bytes
    payload: dict | None = None
    kid: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def seq(self) -> int | None:
        return self.payload.get("seq") if self.payload else None

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class Report:
    records: list[Checked]  # good and bad, in seq order where known
    gaps: list[tuple[str, int, int]]  # (station_id, first missing, last missing)
    problems: list[str]  # chain-level problems

    @property
    def ok(self) -> bool:
        return not self.gaps and not self.problems and all(r.ok for r in self.records)


def check_one(data: bytes, keys: Mapping[str, Ed25519PublicKey], source: str) -> Checked:
    item = Checked(source=source, data=data)
    try:
        verified = cose.verify(data, keys)
    except RecordError as exc:
        item.problems.append(str(exc))
        return item
    item.kid = verified.kid
    try:
        payload = cbor2.loads(verified.payload)
    except Exception:
        item.problems.append("signed payload is not CBOR")
        return item
    if not isinstance(payload, dict):
        item.problems.append("signed payload is not a map")
        return item
    item.payload = payload
    for key, typ in _REQUIRED.items():
        if not isinstance(payload.get(key), typ) or (typ is int and isinstance(payload.get(key), bool)):
            item.problems.append(f"payload field {key!r} missing or not {typ.__name__}")
    if isinstance(payload.get("prev"), bytes) and len(payload["prev"]) != 32:
        item.problems.append("payload field 'prev' is not a SHA-256 hash")
    return item


class ChainChecker:
    """Collects records from any source, in any order, with duplicates."""

    def __init__(self, keys: Mapping[str, Ed25519PublicKey], first_seq: int = 1) -> None:
        self.keys = keys
        self.first_seq = first_seq  # records before it are not expected (a consumer that joined late)
        self._by_key: dict[tuple[str, int], Checked] = {}
        self._bad: list[Checked] = []
        self._conflicts: list[str] = []

    def add(self, data: bytes, source: str) -> Checked:
        item = check_one(data, self.keys, source)
        if not item.ok:
            self._bad.append(item)
            return item
        key = (item.payload["station_id"], item.seq)
        seen = self._by_key.get(key)
        if seen is None:
            self._by_key[key] = item
        elif seen.data != data:  # an at-least-once duplicate is identical; anything else is a conflict
            item.problems.append(f"conflicts with {seen.source}: same station and seq, different bytes")
            self._bad.append(item)
            self._conflicts.append(f"{key[0]} seq {key[1]}: two different records")
        return item

    @property
    def count(self) -> int:
        return len(self._by_key)

    def report(self) -> Report:
        gaps, problems = [], list(self._conflicts)
        good = sorted(self._by_key.values(), key=lambda c: (c.payload["station_id"], c.seq))
        previous: Checked | None = None
        for item in good:
            station, seq, prev = item.payload["station_id"], item.seq, item.payload["prev"]
            if previous is not None and previous.payload["station_id"] == station:
                if seq > previous.seq + 1:
                    gaps.append((station, previous.seq + 1, seq - 1))
                elif prev != hashlib.sha256(previous.data).digest():
                    item.problems.append(f"hash chain broken: prev does not match record {previous.seq}")
            else:
                if seq > self.first_seq:
                    gaps.append((station, self.first_seq, seq - 1))
                if seq == 1 and prev != ZERO_HASH:
                    item.problems.append("first record of the chain must have prev = 32 zero bytes")
            previous = item
        return Report(records=sorted(self._bad, key=lambda c: c.source) + good, gaps=gaps, problems=problems)
