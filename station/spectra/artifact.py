"""Spectra as bytes the record can vouch for (by SHA-256).

Format ``station-spectrum/1``: one deterministic CBOR map (RFC 8949 core
deterministic encoding: shortest lengths, keys sorted) with

    "format":        "station-spectrum/1"
    "kind":          "raw" | "dark" | "processed"
    "wavelength_nm": tag 85 (RFC 8746: float32 little-endian typed array)
    "values":        tag 85, same length as wavelength_nm
    "unit":          text, e.g. "counts" or "relative photon density"
    "meta":          optional map of text -> text/int/float (serial, integration_us, ...)

The same inputs always give the same bytes, so the same SHA-256.
"""

from __future__ import annotations

import hashlib

import cbor2
import numpy as np

FORMAT = "station-spectrum/1"
TAG_FLOAT32_LE = 85


def _typed(a) -> cbor2.CBORTag:
    return cbor2.CBORTag(TAG_FLOAT32_LE, np.ascontiguousarray(a, dtype="<f4").tobytes())


def to_artifact_bytes(wavelength_nm, values, *, kind: str, unit: str, meta: dict | None = None) -> bytes:
    wl, v = np.asarray(wavelength_nm), np.asarray(values)
    if wl.shape != v.shape or wl.ndim != 1:
        raise ValueError(f"wavelength_nm {wl.shape} and values {v.shape} must be equal 1-D shapes")
    doc = {"format": FORMAT, "kind": kind, "unit": unit, "wavelength_nm": _typed(wl), "values": _typed(v)}
    if meta:
        doc["meta"] = dict(meta)
    return cbor2.dumps(doc, canonical=True)


def from_artifact_bytes(data: bytes) -> dict:
    doc = cbor2.loads(data)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} artifact")
    for key in ("wavelength_nm", "values"):
        tag = doc[key]
        if not isinstance(tag, cbor2.CBORTag) or tag.tag != TAG_FLOAT32_LE:
            raise ValueError(f"{key} is not a tag-85 float32 array")
        doc[key] = np.frombuffer(tag.value, dtype="<f4")
    return doc


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
