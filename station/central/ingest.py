"""One batch of received records: verify, store idempotently, decide each ack.

Verification is the streaming verifier's `check_one` (signature, key bound to
the station, simulated flag, schema, empty unprotected header). Dedupe and
chain checks go through the database, not memory, because the consumers of a
shared group each see only part of every station's stream.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field

import cbor2

from station.central.store import Row, Store
from station.central.trust import TrustStore
from station.central.verify import check_one
from station.records import cose

ACCEPTED, REJECTED = "accepted", "rejected"


@dataclass(slots=True)
class Incoming:
    payload: bytes
    topic: str
    token: object = None  # what the transport needs to acknowledge it (an MQTT mid)


@dataclass(slots=True)
class Outcome:
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    acks: dict[str, list[dict]] = field(default_factory=lambda: defaultdict(list))  # station -> ack entries
    alarms: list[str] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)


def topic_station(topic: str) -> str | None:
    parts = topic.split("/")
    return parts[1] if len(parts) == 3 and parts[0] == "stations" and parts[2] == "records" else None


def _claims(data: bytes) -> tuple[int | None, str | None]:
    """seq and record_id as a record claims them, unverified: only to address a rejection ack."""
    try:
        payload = cbor2.loads(cose.parse(data).payload)
    except Exception:
        try:
            payload = cbor2.loads(cbor2.loads(data).value[2])
        except Exception:
            return None, None
    if not isinstance(payload, dict):
        return None, None
    seq, rid = payload.get("seq"), payload.get("record_id")
    return (seq if type(seq) is int else None), (rid if isinstance(rid, str) else None)


class Ingestor:
    def __init__(self, trust: TrustStore, store: Store) -> None:
        self.trust = trust
        self.store = store

    def run(self, batch: list[Incoming]) -> Outcome:
        """Writes the batch in the store's open transaction; the caller commits, then acks."""
        out = Outcome()
        checked = []
        for msg in batch:
            item, digest = check_one(msg.payload, self.trust, msg.topic)
            checked.append((msg, item, digest))
        # One lock order for every consumer (PostgreSQL would otherwise deadlock two
        # consumers inserting the same redelivered keys in different orders).
        checked.sort(key=lambda t: (t[1].station_id or "", t[1].seq or 0))
        # Neighbours inside the batch are linked from memory; only the batch's edges need the database.
        self._batch = {(item.station_id, item.seq): (item.payload["prev"], digest)
                       for _, item, digest in checked if digest is not None}
        self._linked: set[tuple[str, int]] = set()  # stored now, with the link to seq + 1 checked
        for msg, item, digest in checked:
            on_topic = topic_station(msg.topic)
            if digest is not None and on_topic is not None and on_topic != item.station_id:
                item.problems.append(f"published on {msg.topic} but claims station_id {item.station_id!r}")
            if item.problems:
                self._reject(out, msg, on_topic or item.station_id, "; ".join(item.problems))
                continue
            self._store(out, msg, item, digest)
        return out

    def _store(self, out: Outcome, msg: Incoming, item, digest: bytes) -> None:
        p, station, seq = item.payload, item.station_id, item.seq
        row = Row(station, seq, p["record_id"], digest, p["prev"], msg.payload, p["simulated"])
        if not self.store.insert(row):
            first = self.store.digest_at(station, seq)
            if first == digest:
                out.duplicates += 1  # at-least-once delivery: ack it again, store nothing
                out.acks[station].append({"seq": seq, "record_id": row.record_id, "verdict": ACCEPTED})
                return
            reason = (f"conflicts with the stored record for {station} seq {seq}: two different signed "
                      f"records for one seq (the station's chain forked)")
            self._reject(out, msg, topic_station(msg.topic) or station, reason, seq=seq, record_id=row.record_id)
            return
        out.stored += 1
        out.touched.add(station)
        out.acks[station].append({"seq": seq, "record_id": row.record_id, "verdict": ACCEPTED})
        # A genuine record whose links do not match is still stored (it is signed
        # by the station's key), but raises an alarm: the chain forked or was reset.
        if seq == 1 and row.prev != bytes(32):
            self._alarm(out, station, seq, f"{station} seq 1: the first record of a chain must have prev = 32 zero bytes")
        check_before = seq > 1 and (station, seq - 1) not in self._linked  # else checked from seq - 1's side
        nxt = self._batch.get((station, seq + 1))
        before = after = None
        if check_before or nxt is None:
            before, after = self.store.neighbours(station, seq)
        if nxt is not None:
            after = nxt[0]
        if check_before and before is not None and before != row.prev:
            self._alarm(out, station, seq, f"{station}: hash chain broken between seq {seq - 1} and {seq}")
        if after is not None and after != digest:
            self._alarm(out, station, seq, f"{station}: hash chain broken between seq {seq} and {seq + 1}")
        self._linked.add((station, seq))

    def _reject(self, out: Outcome, msg: Incoming, station: str | None, reason: str,
                seq: int | None = None, record_id: str | None = None) -> None:
        if seq is None:
            seq, record_id = _claims(msg.payload)
        out.rejected += 1
        self.store.reject(hashlib.sha256(msg.payload).digest(), msg.topic, station, seq, record_id, msg.payload, reason)
        self._alarm(out, station, seq, f"REJECTED {msg.topic} seq {seq}: {reason}")
        if station is not None:
            out.acks[station].append({"seq": seq, "record_id": record_id, "verdict": REJECTED, "reason": reason})

    def _alarm(self, out: Outcome, station: str | None, seq: int | None, message: str) -> None:
        self.store.alarm(station, seq, message)
        out.alarms.append(message)
