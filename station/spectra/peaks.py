"""The peak table: each known diamond centre measured on a processed spectrum.

For each centre a small linear model is fitted by least squares in a +-8 nm
window: a quadratic local background, the centre's line shape (its
room-temperature ZPL width combined with the instrument resolution; both
components of a doublet), and the shapes of any other known line in the
window (so SiV and GR1, or H3 and 499.6, do not steal each other's signal).
The height's standard error follows from the fit residual, so

    SNR = height / standard error(height)

is a z-score under white noise: with no line, SNR >= 5 would happen with
probability 2.9e-7. What the baseline leaves behind is not white, so real
false-alarm rates are higher (docs/SCREENING.md gives the measured ones); the
measured width must also match the expected line shape (screening.present). Position and FWHM come from the background-subtracted
data (three-point Gaussian interpolation; half-maximum crossings).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import lru_cache

import numpy as np

from station.spectra.lines import DIAMOND_CENTRES, ZPL_FWHM, raman_nm
from station.spectra.process import GRID, GRID_STEP_NM

WINDOW_NM = 8.0
SEARCH_NM = 1.5       # how far a measured position may sit from the published one
DEFAULT_RESOLUTION_NM = 1.2
RAMAN_NAME = "Raman"


@dataclass(frozen=True)
class Peak:
    name: str
    centre_nm: float      # published position (mean of the components)
    position_nm: float    # measured (NaN when no peak stands out)
    height: float         # in units of the normalised spectrum
    fwhm_nm: float
    snr: float
    expected_fwhm_nm: float = float("nan")   # the fitted line shape's FWHM (doublet: plus its splitting)

    def to_json(self) -> dict:
        """Floats rounded to 4 decimals; NaN (not measurable) as null."""
        return {k: (v if not isinstance(v, float) else round(v, 4) if math.isfinite(v) else None)
                for k, v in zip(_FIELDS, (self.name, self.centre_nm, self.position_nm, self.height, self.fwhm_nm,
                                          self.snr, self.expected_fwhm_nm))}


_FIELDS = tuple(f.name for f in fields(Peak))


def _features(laser_nm: float) -> dict[str, tuple[tuple[float, ...], float]]:
    f = {name: (comps, ZPL_FWHM[name]) for name, comps in DIAMOND_CENTRES.items()}
    f[RAMAN_NAME] = ((round(raman_nm(laser_nm), 3),), 0.06)
    return f


def _shape(x: np.ndarray, comps: tuple[float, ...], fwhm: float) -> np.ndarray:
    s = fwhm / 2.3548
    return sum(np.exp(-0.5 * ((x - c) / s) ** 2) for c in comps) / len(comps)


@lru_cache(maxsize=16)
def _models(laser_nm: float, resolution_nm: float):
    """Per feature: grid slice, least-squares solver rows, and the variance
    factor of the height estimate. Depends only on the grid, laser and resolution."""
    feats = _features(laser_nm)
    out = {}
    for name, (comps, zpl) in feats.items():
        centre = float(np.mean(comps))
        lo, hi = np.searchsorted(GRID, [centre - WINDOW_NM, centre + WINDOW_NM])
        if hi - lo < 12:
            continue  # outside the grid
        x = GRID[lo:hi]
        width = np.hypot(zpl, resolution_nm)
        u = (x - centre) / WINDOW_NM
        cols = [_shape(x, comps, width), np.ones_like(x), u]
        for other, (oc, oz) in feats.items():
            if other != name and any(abs(c - centre) < WINDOW_NM for c in oc):
                cols.append(_shape(x, oc, np.hypot(oz, resolution_nm)))
        X = np.stack(cols, axis=1)
        xtx_inv = np.linalg.pinv(X.T @ X)
        expected = float(width + (max(comps) - min(comps)))
        out[name] = (centre, lo, hi, X, xtx_inv @ X.T, xtx_inv[0, 0], expected)
    return out


def peak_table(values: np.ndarray, laser_nm: float, resolution_nm: float = DEFAULT_RESOLUTION_NM) -> list[Peak]:
    """Measure every known centre (and the Raman line of ``laser_nm``) on a
    spectrum on GRID."""
    peaks = []
    for name, (centre, lo, hi, X, solver, var_h, expected) in _models(float(laser_nm), float(resolution_nm)).items():
        y = values[lo:hi]
        beta = solver @ y
        resid = y - X @ beta
        dof = max(1, y.size - X.shape[1])
        se = np.sqrt(float(resid @ resid) / dof * var_h)
        h = float(beta[0])
        snr = h / se if se > 0 else (np.inf if h > 0 else 0.0)
        local = y - X[:, 1:3] @ beta[1:3]  # data minus the local background
        position, fwhm = _locate(GRID[lo:hi], local, centre)
        peaks.append(Peak(name, round(centre, 3), position, h, fwhm, float(snr), round(expected, 3)))
    return peaks


def _locate(x: np.ndarray, y: np.ndarray, centre: float) -> tuple[float, float]:
    near = np.flatnonzero(np.abs(x - centre) <= SEARCH_NM)
    i = near[np.argmax(y[near])]
    # a maximum on the search window's edge is the flank of something else
    if i in (near[0], near[-1]) or i == 0 or i == y.size - 1 or y[i] <= 0:
        return float("nan"), float("nan")
    a, b, c = y[i - 1], y[i], y[i + 1]
    if min(a, c) > 0:  # Gaussian (log-parabola) interpolation
        la, lb, lc = np.log([a, b, c])
        den = la - 2 * lb + lc
        delta = 0.5 * (la - lc) / den if den < 0 else 0.0
    else:
        den = a - 2 * b + c
        delta = 0.5 * (a - c) / den if den < 0 else 0.0
    position = float(x[i] + delta * GRID_STEP_NM)
    half = b / 2
    left = i
    while left > 0 and y[left] > half:
        left -= 1
    right = i
    while right < y.size - 1 and y[right] > half:
        right += 1
    if y[left] > half or y[right] > half:
        return position, float("nan")
    xl = x[left] + (half - y[left]) / (y[left + 1] - y[left]) * GRID_STEP_NM
    xr = x[right - 1] + (y[right - 1] - half) / (y[right - 1] - y[right]) * GRID_STEP_NM
    return position, float(xr - xl)
