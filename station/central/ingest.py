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
        """Writes the batch in the store's open transaction; the caller commits, then acks.

        A handful of round trips per batch, not per record: one multi-row insert
        (which reports the keys it stored), one read of the seqs that were already
        there, one read of the chain neighbours at the batch's edges."""
        out = Outcome()
        checked = []
        for msg in batch:
            item, digest = check_one(msg.payload, self.trust, msg.topic)
            on_topic = topic_station(msg.topic)
            if digest is not None and on_topic is not None and on_topic != item.station_id:
                item.problems.append(f"published on {msg.topic} but claims station_id {item.station_id!r}")
            checked.append((msg, item, digest, on_topic))
        # One lock order for every consumer (PostgreSQL would otherwise deadlock two
        # consumers inserting the same redelivered keys in different orders).
        checked.sort(key=lambda t: (t[1].station_id or "", t[1].seq or 0))
        rows: dict[tuple[str, int], Row] = {}  # the first copy of each key in the batch
        for msg, item, digest, _ in checked:
            if not item.problems and (item.station_id, item.seq) not in rows:
                p = item.payload
                rows[(item.station_id, item.seq)] = Row(item.station_id, item.seq, p["record_id"], digest,
                                                         p["prev"], msg.payload, p["simulated"])
        inserted = self.store.insert_many(list(rows.values()))
        held = self.store.digests([k for k in rows if k not in inserted])  # what the table had before
        final = {k: held.get(k, r.digest) for k, r in rows.items()}  # the digest each key now holds
        new = set()
        for msg, item, digest, on_topic in checked:
            if item.problems:
                self._reject(out, msg, on_topic or item.station_id, "; ".join(item.problems))
                continue
            key = (item.station_id, item.seq)
            rid = item.payload["record_id"]
            if final[key] != digest:
                reason = (f"conflicts with the stored record for {key[0]} seq {key[1]}: two different signed "
                          f"records for one seq (the station's chain forked)")
                self._reject(out, msg, on_topic or key[0], reason, seq=key[1], record_id=rid)
            elif key in inserted and key not in new:
                new.add(key)
                out.stored += 1
                out.touched.add(key[0])
                out.acks[key[0]].append({"seq": key[1], "record_id": rid, "verdict": ACCEPTED})
            else:
                out.duplicates += 1  # at-least-once delivery: ack it again, store nothing
                out.acks[key[0]].append({"seq": key[1], "record_id": rid, "verdict": ACCEPTED})
        self._check_links(out, [rows[k] for k in sorted(new)], rows, final)
        return out

    def _check_links(self, out: Outcome, stored: list[Row], rows: dict, final: dict) -> None:
        """A genuine record whose links do not match is still stored (it is signed by
        the station's key), but raises an alarm: the chain forked or was reset."""
        def here(key):  # (digest, prev) of a key the table holds as this batch's copy
            r = rows.get(key)
            return (r.digest, r.prev) if r is not None and final[key] == r.digest else None

        new_keys = {(r.station_id, r.seq) for r in stored}
        edges = [k for r in stored for k in ((r.station_id, r.seq - 1), (r.station_id, r.seq + 1))
                 if k[1] >= 1 and k not in rows]
        known = self.store.links(edges)
        for r in stored:
            if r.seq == 1 and r.prev != bytes(32):
                self._alarm(out, r.station_id, 1, f"{r.station_id} seq 1: the first record of a chain must have "
                                                  f"prev = 32 zero bytes")
            before = here((r.station_id, r.seq - 1)) or known.get((r.station_id, r.seq - 1))
            if before is not None and before[0] != r.prev:
                self._alarm(out, r.station_id, r.seq,
                            f"{r.station_id}: hash chain broken between seq {r.seq - 1} and {r.seq}")
            after = here((r.station_id, r.seq + 1)) or known.get((r.station_id, r.seq + 1))
            # Inside the batch, a pair of new records is reported once, from the lower seq's side.
            if after is not None and after[1] != r.digest and (r.station_id, r.seq + 1) not in new_keys:
                self._alarm(out, r.station_id, r.seq,
                            f"{r.station_id}: hash chain broken between seq {r.seq} and {r.seq + 1}")

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
