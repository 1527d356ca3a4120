"""The reference consumer's logic: signatures, key bindings, hash chain, sequence gaps.

It is deliberately independent of the outbox and publisher: it only sees the
bytes a central system would see. It streams: each record is checked once on
arrival and then forgotten, except for what `chainstate` keeps (bounded; see
there), so an archive of any size verifies in constant memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from station.central.chainstate import RecentDigests, StationChain
from station.central.trust import TrustStore
from station.errors import RecordError
from station.records import cose

# Required payload fields per schema version `v` (docs/RECORDS.md). A new
# version is one more entry; records of every listed version are accepted.
_V1: dict[str, type | tuple[type, ...]] = {
    "v": int, "record_id": str, "station_id": str, "seq": int, "prev": bytes, "time": str,
    "operator": str, "lot": str, "simulated": bool, "software": dict, "readings": list, "flags": list,
}  # fmt: skip
RECORD_FIELDS: dict[int, dict[str, type | tuple[type, ...]]] = {
    1: _V1,
    2: {**_V1, "ambient": (dict, type(None))},  # null when the station has no ambient sensor
}
_MISSING = object()
MAX_LISTED = 1000  # problems kept for the report; the rest are only counted
DEFAULT_WINDOW = 4096


@dataclass(slots=True)
class Checked:
    source: str
    seq: int | None = None
    station_id: str | None = None
    kid: str | None = None
    payload: dict | None = None  # for the caller's table row; the checker does not keep it
    problems: list[str] = field(default_factory=list)  # why the record is rejected
    notes: list[str] = field(default_factory=list)  # chain problems found on its arrival
    duplicate: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class Report:
    good: int  # distinct records that verified
    bad: int  # records rejected (signature, key binding, schema, conflict)
    duplicates: int  # identical copies of a record already counted
    simulated: int
    bad_records: list[tuple[str, list[str]]]  # (source, problems), the first MAX_LISTED
    gaps: list[tuple[str, int, int]]  # (station_id, first missing, last missing)
    problems: list[str]  # chain-level problems, the first MAX_LISTED
    unlisted: int  # problems counted but not kept

    @property
    def ok(self) -> bool:
        return self.bad == 0 and not self.gaps and not self.problems and self.unlisted == 0


def _field_problems(payload: dict) -> list[str]:
    v = payload.get("v")
    fields = RECORD_FIELDS.get(v) if type(v) is int else None
    if fields is None:
        return [f"payload version v={v!r} is not one this verifier knows ({', '.join(map(str, RECORD_FIELDS))})"]
    out = []
    for key, typ in fields.items():
        value = payload.get(key, _MISSING)
        if value is _MISSING or not isinstance(value, typ) or (typ is int and type(value) is bool):
            name = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
            out.append(f"payload field {key!r} missing or not {name}")
    if isinstance(payload.get("prev"), bytes) and len(payload["prev"]) != 32:
        out.append("payload field 'prev' is not a SHA-256 hash (32 bytes)")
    seq = payload.get("seq")
    if isinstance(seq, int) and not isinstance(seq, bool) and seq < 1:
        out.append(f"payload field 'seq' is {seq}; a chain starts at 1")
    return out


def check_one(data: bytes, trust: TrustStore, source: str) -> tuple[Checked, bytes | None]:
    """Signature, key binding and schema of one record; returns it and its digest."""
    item = Checked(source=source)
    try:
        env = cose.parse(data)
        binding = trust.get(env.kid)
        if binding is None:
            raise RecordError(f"signed by unknown key {env.kid!r}",
                              "add the station's trust entry (`station keys public --trust-entry`) to --trust, "
                              "or pass its public key with --key")
        cose.check_signature(env, binding.key)
    except RecordError as exc:
        item.problems.append(str(exc))
        return item, None
    item.kid = env.kid
    try:
        payload = cose.loads_exactly(env.payload)
    except Exception:
        item.problems.append("signed payload is not CBOR (or not exactly one CBOR item)")
        return item, None
    if not isinstance(payload, dict):
        item.problems.append("signed payload is not a map")
        return item, None
    item.payload = payload
    item.problems.extend(_field_problems(payload))
    if item.problems:
        return item, None
    item.seq, item.station_id = payload["seq"], payload["station_id"]
    wrong = trust.check(env.kid, item.station_id, payload["simulated"])
    if wrong:
        item.problems.append(wrong)
        return item, None
    return item, env.digest


class ChainChecker:
    """Collects records from any source, in any order, with duplicates."""

    def __init__(self, trust: TrustStore | Mapping[str, Ed25519PublicKey], first_seq: int = 1,
                 window: int = DEFAULT_WINDOW) -> None:
        if not isinstance(trust, TrustStore):  # bare keys: bound on first use
            store = TrustStore()
            for kid, key in trust.items():
                store.add(key, None, None, f"key {kid}")
            trust = store
        self.trust = trust
        self.first_seq = first_seq  # records before it are not expected (a consumer that joined late)
        self._recent = RecentDigests(window)
        self._chains: dict[str, StationChain] = {}
        self.good = self.bad = self.duplicates = self.simulated = 0
        self._bad_records: list[tuple[str, list[str]]] = []
        self._problems: list[str] = []
        self._unlisted = 0

    @property
    def count(self) -> int:
        return self.good

    def add(self, data: bytes, source: str) -> Checked:
        item, digest = check_one(data, self.trust, source)
        if digest is None:
            self._reject(item)
            return item
        chain = self._chains.get(item.station_id)
        if chain is None:
            chain = self._chains[item.station_id] = StationChain(item.station_id, self._recent)
        outcome, problems = chain.add(item.seq, item.payload["prev"], digest, source)
        if outcome == "duplicate":
            item.duplicate = True
            self.duplicates += 1
        elif outcome == "conflict":
            item.problems.extend(problems)
            self._reject(item)
        else:
            self.good += 1
            self.simulated += item.payload["simulated"]
            item.notes.extend(problems)
            for p in problems:
                self.problem(p)
        return item

    def _reject(self, item: Checked) -> None:
        self.bad += 1
        if len(self._bad_records) + len(self._problems) < MAX_LISTED:
            self._bad_records.append((item.source, item.problems))
        else:
            self._unlisted += 1

    def problem(self, message: str) -> None:
        """A problem with the whole input (chain break, missing records), not one record."""
        if len(self._bad_records) + len(self._problems) < MAX_LISTED:
            self._problems.append(message)
        else:
            self._unlisted += 1

    def report(self) -> Report:
        gaps = [(station, a, b) for station in sorted(self._chains)
                for a, b in self._chains[station].gaps(self.first_seq)]
        return Report(good=self.good, bad=self.bad, duplicates=self.duplicates, simulated=self.simulated,
                      bad_records=list(self._bad_records), gaps=gaps, problems=list(self._problems),
                      unlisted=self._unlisted)
