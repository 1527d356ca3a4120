"""The record payload: deterministic CBOR, schema in docs/RECORDS.md (CDDL)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

from station import __version__
from station.records.carat import format_carats, format_raw_carats
from station.records.cose import dumps
from station.instruments.reading import MassReading

RECORD_VERSION = 1
SOFTWARE_NAME = "diamond-station"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class RecordInput:
    """One stone's measurement, ready to be sealed into a record."""

    operator: str
    lot: str
    readings: Sequence[MassReading]
    flags: Sequence[str] = field(default_factory=tuple)


def reading_to_cbor(r: MassReading) -> dict:
    out = {
        "device": r.device,
        "driver": r.driver,
        "identity": r.identity.to_cbor(),
        "quantity": "mass",
        "value": r.value_ug,
        "unit": "ug",
        "stable": r.stable,
        "time": r.time,
        "raw": list(r.raw),
    }
    if r.value_ug >= 0:
        out["carat"] = format_carats(r.value_ug)
        out["carat_raw"] = format_raw_carats(r.value_ug)
    return out


def build_payload(
    item: RecordInput,
    *,
    record_id: str,
    station_id: str,
    seq: int,
    prev: bytes,
    simulated: bool,
    time: str | None = None,
) -> bytes:
    return dumps(
        {
            "v": RECORD_VERSION,
            "record_id": record_id,
            "station_id": station_id,
            "seq": seq,
            "prev": prev,
            "time": time or utc_now(),
            "operator": item.operator,
            "lot": item.lot,
            "simulated": simulated,
            "software": {"name": SOFTWARE_NAME, "version": __version__},
            "readings": [reading_to_cbor(r) for r in item.readings],
            "flags": list(item.flags),
        }
    )
