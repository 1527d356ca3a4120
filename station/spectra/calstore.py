"""A spectrometer's calibration as a file in the state dir.

``<state_dir>/calibration/spectrometer-<serial>.json``, one per unit (the
calibration belongs to the instrument, so a swapped unit never inherits
another's). UTF-8 JSON, format ``station-spectro-calibration/1``:

    format              "station-spectro-calibration/1"
    id                  first 16 hex digits of the SHA-256 of the canonical JSON of every other field
    serial, model       the unit it was made on
    created             RFC 3339 UTC
    n_pixels            int
    wavelength_coeffs   [c0, c1, c2, c3]: λ(nm) = c0 + c1 p + c2 p² + c3 p³ (p = pixel index)
    nonlinearity_coeffs null, or [k0, k1, k2]
    response            n_pixels floats: relative counts per photon (0 = never divided by)
    wavelength_fit      {rms_nm, max_abs_nm, lines_used, lines_rejected, resolution_nm, coeffs}
    lamps               {"hgar": {integration_us, scans}, "halogen": {...}}

The technician workflow with expiry and signed calibration records is a
later issue; until then this file is what the spectrometer step requires.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from station.spectra.calibration import Calibration
from station.spectra.errors import CalibrationError

FORMAT = "station-spectro-calibration/1"
CALIBRATION_DIR = "calibration"


@dataclass(frozen=True)
class StoredCalibration:
    id: str
    serial: str
    created: str
    calibration: Calibration
    rms_nm: float
    lines_used: int
    resolution_nm: float


def path_for(state_dir: Path, serial: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in serial)
    return Path(state_dir) / CALIBRATION_DIR / f"spectrometer-{safe}.json"


def _digest(doc: dict) -> str:
    body = {k: v for k, v in doc.items() if k != "id"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def save(state_dir: Path, cal: Calibration, *, serial: str, model: str, created: str,
         lamps: dict | None = None) -> tuple[Path, str]:
    if cal.wavelength_fit is None or cal.response is None:
        raise CalibrationError("the calibration lacks its wavelength fit or response", "calibrate with both lamps")
    fit = cal.wavelength_fit.to_json()
    doc = {
        "format": FORMAT, "serial": serial, "model": model, "created": created, "n_pixels": cal.n_pixels,
        "wavelength_coeffs": [float(c) for c in cal.wavelength_coeffs],
        "nonlinearity_coeffs": None if cal.nonlinearity_coeffs is None else [float(k) for k in cal.nonlinearity_coeffs],
        "response": [float(r) for r in np.asarray(cal.response, dtype=float)],
        "wavelength_fit": fit, "lamps": lamps or {},
    }
    doc["id"] = _digest(doc)
    path = path_for(state_dir, serial)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path, doc["id"]


def load(state_dir: Path, serial: str) -> StoredCalibration | None:
    """The unit's calibration, or None when it has none. A damaged file is an error."""
    path = path_for(state_dir, serial)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"cannot read the spectrometer calibration {path}: {exc}",
                               "run `station spectrometer calibrate` again") from exc
    try:
        if doc.get("format") != FORMAT or doc.get("serial") != serial or doc.get("id") != _digest(doc):
            raise ValueError("wrong format, serial or id (edited or damaged)")
        n = int(doc["n_pixels"])
        response = np.asarray(doc["response"], dtype=float)
        if response.shape != (n,):
            raise ValueError(f"response has {response.size} values for {n} pixels")
        nl = doc.get("nonlinearity_coeffs")
        fit = doc["wavelength_fit"]
        cal = Calibration(n, tuple(float(c) for c in doc["wavelength_coeffs"]), response,
                          None if nl is None else tuple(float(k) for k in nl))
        return StoredCalibration(doc["id"], serial, doc["created"], cal, float(fit["rms_nm"]),
                                 int(fit["lines_used"]), float(fit["resolution_nm"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CalibrationError(f"the spectrometer calibration {path} is not usable: {exc}",
                               "run `station spectrometer calibrate` again") from exc
