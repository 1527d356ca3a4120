"""The record payload: deterministic CBOR, schema v2 in docs/RECORDS.md (CDDL).

v2 carries any quantity (one entry per reading, exact integers or an artifact
reference) and the ambient conditions of every stone. Verifiers accept v1 too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from station import __version__
from station.instruments.reading import AmbientStatus, Reading, utc_now
from station.records.carat import format_carats, format_raw_carats
from station.records.cose import dumps

RECORD_VERSION = 2
SOFTWARE_NAME = "diamond-station"

__all__ = ["RecordInput", "build_payload", "reading_to_cbor", "ambient_to_cbor", "utc_now"]


@dataclass(frozen=True)
class RecordInput:
    """One stone's measurement, ready to be sealed into a record."""

    operator: str
    lot: str
    readings: Sequence[Reading]
    flags: Sequence[str] = field(default_factory=tuple)
    ambient: AmbientStatus | None = None


def reading_to_cbor(r: Reading) -> dict:
    out: dict = {
        "device": r.device,
        "kind": r.kind,
        "driver": r.driver,
        "identity": r.identity.to_cbor(),
        "quantity": r.quantity,
        "unit": r.unit,
        "time": r.time,
        "raw": list(r.raw),
    }
    if r.value is not None:
        out["value"] = r.value
        if r.scale:
            out["scale"] = r.scale
    if r.artifact is not None:
        out["artifact"] = r.artifact.to_cbor()
    if r.stable is not None:
        out["stable"] = r.stable
    if r.details is not None:
        out["details"] = r.details
    if r.quantity == "mass" and r.value is not None and r.value >= 0:
        out["carat"] = format_carats(r.value)
        out["carat_raw"] = format_raw_carats(r.value)
    return out


def ambient_to_cbor(a: AmbientStatus | None) -> dict | None:
    """None when the station has no ambient sensor; otherwise always a map with a status."""
    if a is None:
        return None
    out: dict = {"status": a.status, "device": a.device}
    if a.temperature_dc is not None and a.humidity_dpct is not None:
        out.update(temperature_dc=a.temperature_dc, humidity_dpct=a.humidity_dpct, time=a.time, raw=list(a.raw))
        if a.identity is not None:
            out["identity"] = a.identity.to_cbor()
    if a.message:
        out["message"] = a.message
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
            "ambient": ambient_to_cbor(item.ambient),
            "flags": list(item.flags),
        }
    )
