"""The demo's closing table: for each record, the stone's weight, its
screening verdict and its fingerprint matched against the demo's earlier
records (as a central system re-identifies a stone it has seen before).

It reads the records the station exported; their signatures were checked by
the demo's consumer (`station verify --subscribe`) already.
"""

from __future__ import annotations

from pathlib import Path

import cbor2
import numpy as np
from rich.table import Table

from station.records.carat import format_carats
from station.records.cose import COSE_SIGN1_TAG


def _payload(data: bytes) -> dict:
    obj = cbor2.loads(data)
    if not isinstance(obj, cbor2.CBORTag) or obj.tag != COSE_SIGN1_TAG:
        raise ValueError("not a COSE_Sign1 record")
    return cbor2.loads(obj.value[2])


def _spectrum(payload: dict) -> dict | None:
    return next((r.get("details") for r in payload["readings"] if r.get("quantity") == "spectrum-processed"), None)


def summarise(export_dir: Path, placed: list[str]) -> tuple[Table, list[dict]]:
    """``placed``: what the demo put on the probe for record 1, 2, ... (for the table only)."""
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
               "best_seq": None, "score": None, "match": False}
        if vec is not None and vectors:
            result = match(np.stack([v for _, v in vectors]), vec, k=1)
            j = int(result.indices[0])
            row.update(best_seq=vectors[j][0], score=float(result.scores[0]), match=result.match)
        if vec is not None:
            vectors.append((p["seq"], vec))
        rows.append(row)
    table = Table(title=f"Stones: weight, screening, fingerprint match (threshold {MATCH_THRESHOLD})",
                  title_justify="left")
    for col, justify in [("#", "right"), ("placed", "left"), ("carat", "right"), ("µg", "right"),
                         ("screening", "left"), ("best earlier record", "left")]:
        table.add_column(col, justify=justify)
    for r in rows:
        verdict = r["verdict"] + (f": {'; '.join(r['reasons'])}" if r["reasons"] else "")
        if r["best_seq"] is None:
            best = "(first stone)" if r is rows[0] else "-"
        else:
            best = (f"#{r['best_seq']} score {r['score']:.4f} "
                    f"{'MATCH: same stone' if r['match'] else 'no match: a new stone'}")
        table.add_row(str(r["seq"]), r["placed"], format_carats(r["mass_ug"]), str(r["mass_ug"]), verdict, best)
    return table, rows
