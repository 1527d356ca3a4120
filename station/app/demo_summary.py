"""The demo's closing report: for each record, the stone's weight, its
screening verdict, its fingerprint matched against the demo's earlier records
(as a central system re-identifies a stone it has seen before) and the central
system's ack; then the delivery: who the broker let in (certificate CNs), the
station's outbox by state, and what the central consumer's database holds.

It reads the records the station exported; their signatures were checked by
the demo's central consumer (`station consume`) already.
"""

from __future__ import annotations

import re
from pathlib import Path

import cbor2
import numpy as np
from rich.table import Table

from station.app import console
from station.records.carat import format_carats
from station.records.cose import COSE_SIGN1_TAG

_CENTRAL = {"acked": "acked by central", "rejected": "REJECTED by central", "published": "published, no ack yet",
            "stored": "not published"}
# mosquitto's connection line; with use_identity_as_username the u'...' is the certificate's CN.
_CONNECTED = re.compile(r"New client connected from \S+ as \S+ \(.*u'([^']*)'\)")


def _payload(data: bytes) -> dict:
    obj = cbor2.loads(data)
    if not isinstance(obj, cbor2.CBORTag) or obj.tag != COSE_SIGN1_TAG:
        raise ValueError("not a COSE_Sign1 record")
    return cbor2.loads(obj.value[2])


def _spectrum(payload: dict) -> dict | None:
    return next((r.get("details") for r in payload["readings"] if r.get("quantity") == "spectrum-processed"), None)


def summarise(export_dir: Path, placed: list[str], states: dict[int, str]) -> tuple[Table, list[dict]]:
    """``placed``: what the demo put on the probe for record 1, 2, ... (for the table only);
    ``states``: each record's state in the station's outbox (Outbox.states())."""
    from station.spectra.matching import MATCH_THRESHOLD, match

    rows, vectors = [], []
    files = sorted(export_dir.glob("*.cose"), key=lambda p: int(p.stem))
    for i, f in enumerate(files):
        p = _payload(f.read_bytes())
        details = _spectrum(p) or {}
        screening = details.get("screening") or {}
        fp = details.get("fingerprint")
        vec = np.frombuffer(fp.value, dtype="<f4") if isinstance(fp, cbor2.CBORTag) else None
        row = {"seq": p["seq"], "placed": placed[i] if i < len(placed) else "", "mass_ug": p["readings"][0]["value"],
               "verdict": screening.get("verdict", "-"), "reasons": screening.get("reasons", []),
               "best_seq": None, "score": None, "match": False,
               "central": _CENTRAL.get(states.get(p["seq"], ""), "not in the outbox")}
        if vec is not None and vectors:
            result = match(np.stack([v for _, v in vectors]), vec, k=1)
            j = int(result.indices[0])
            row.update(best_seq=vectors[j][0], score=float(result.scores[0]), match=result.match)
        if vec is not None:
            vectors.append((p["seq"], vec))
        rows.append(row)
    table = Table(title=f"Stones: weight, screening, fingerprint match (threshold {MATCH_THRESHOLD}), central ack",
                  title_justify="left")
    for col, justify in [("#", "right"), ("placed", "left"), ("carat", "right"), ("µg", "right"),
                         ("screening", "left"), ("best earlier record", "left"), ("central", "left")]:
        table.add_column(col, justify=justify)
    for r in rows:
        verdict = r["verdict"] + (f": {'; '.join(r['reasons'])}" if r["reasons"] else "")
        if r["best_seq"] is None:
            best = "(first stone)" if r is rows[0] else "-"
        else:
            best = (f"#{r['best_seq']} score {r['score']:.4f} "
                    f"{'MATCH: same stone' if r['match'] else 'no match: a new stone'}")
        table.add_row(str(r["seq"]), r["placed"], format_carats(r["mass_ug"]), str(r["mass_ug"]), verdict, best,
                      r["central"])
    return table, rows


def tls_identities(broker_log: Path) -> list[str]:
    """The identities (certificate CNs) the broker accepted, in order of first connection."""
    try:
        text = broker_log.read_text(errors="replace")
    except OSError:
        return []
    return list(dict.fromkeys(m.group(1) for m in _CONNECTED.finditer(text)))


def report(export_dir: Path, placed: list[str], outbox: Path, db: Path, station_id: str, *,
           identities: list[str], expected_identities: tuple[str, ...]) -> list[str]:
    """Print the stones table and the delivery lines; return what did not end as it
    should (a record not acked, not stored centrally or stored twice, a client that
    did not come in by its certificate)."""
    from station.central.store import SqliteStore
    from station.delivery.outbox import Outbox

    with Outbox(outbox) as ob:
        counts, states = ob.counts(), ob.states()
    store = SqliteStore(db)
    try:
        central = [int(r[0]) for r in store.execute(
            "SELECT seq FROM records WHERE station_id = %s ORDER BY seq", (station_id,)).fetchall()]
        central_rejected = store.count("rejected")
    finally:
        store.close()
    table, rows = summarise(export_dir, placed, states)
    console.print_table(table)

    held = sorted(states)
    # Lines, not a table: paths are long, and a line stays whole in a pipe or a log.
    all_acked = counts.acked == len(held) and not counts.unacked
    console.say("ok" if identities else "warn", "Broker: mutual TLS; clients let in by their certificate's CN: "
                + (", ".join(identities) or "none"))
    console.say("ok" if all_acked else "warn", f"Station outbox {outbox}: {counts.acked} acked by central, "
                f"{counts.rejected} rejected, {counts.published} published without an ack, "
                f"{counts.stored} not yet published.")
    console.say("ok" if central == held else "warn",
                f"Central consumer database (SQLite) {db}: {len(central)} record(s) of {station_id}"
                f"{f' (seq {central[0]}..{central[-1]})' if central else ''}, {central_rejected} rejected.")

    problems = []
    if not all_acked:
        problems.append(f"{counts.unacked} of {len(held)} record(s) not acked by central")
    if central != held:
        problems.append(f"the central database holds seqs {central}, the station {held}")
    if len(rows) != len(held):
        problems.append(f"{len(rows)} record(s) exported, {len(held)} in the outbox")
    missing = [cn for cn in expected_identities if cn not in identities]
    if missing:
        problems.append(f"the broker log shows no TLS client {', '.join(missing)}")
    return problems
