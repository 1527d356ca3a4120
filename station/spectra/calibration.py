"""Instrument calibration from lamp spectra.

Wavelength: find the emission peaks of a Hg-Ar lamp in pixel space, identify
them against the published line list starting from the unit's stored
coefficients (which may have drifted by a few nm), and fit a pixel->nm
polynomial of order 2 or 3 with outlier rejection (blended or unlisted lines).

Response: divide a tungsten-halogen reference lamp of known colour
temperature (CIE illuminant A, 2856 K) by its Planck photon spectrum. The
result holds everything between photon and count for each pixel: grating,
detector QE, etalon fringes, the probe's filter and the pixel's bandwidth.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.polynomial import Polynomial

from station.spectra.errors import CalibrationError
from station.spectra.lines import HG_AR_LINES

HC_OVER_K_NM = 1.438777e7


@dataclass(frozen=True)
class WavelengthFit:
    coeffs: tuple[float, ...]          # λ = c0 + c1 p + c2 p² (+ c3 p³)
    rms_nm: float
    max_abs_nm: float
    lines_used: tuple[float, ...]
    lines_rejected: tuple[float, ...]
    pixels: tuple[float, ...]          # fitted centre of each used line
    resolution_nm: float               # median FWHM of the used lines

    def wavelengths(self, n_pixels: int) -> np.ndarray:
        return Polynomial(self.coeffs)(np.arange(n_pixels, dtype=float))

    def to_json(self) -> dict:
        return {"coeffs": list(self.coeffs), "rms_nm": round(self.rms_nm, 4),
                "max_abs_nm": round(self.max_abs_nm, 4), "lines_used": len(self.lines_used),
                "lines_rejected": list(self.lines_rejected), "resolution_nm": round(self.resolution_nm, 3)}


@dataclass(frozen=True)
class Calibration:
    """Everything processing needs to turn one unit's counts into a
    device-independent spectrum. ``response`` is None when uncalibrated (then
    only the pixel bandwidth is divided out)."""

    n_pixels: int
    wavelength_coeffs: tuple[float, ...]
    response: np.ndarray | None = None
    nonlinearity_coeffs: tuple[float, ...] | None = None
    wavelength_fit: WavelengthFit | None = field(default=None, compare=False)

    def wavelengths(self) -> np.ndarray:
        return Polynomial(self.wavelength_coeffs)(np.arange(self.n_pixels, dtype=float))


def find_peaks(y: np.ndarray, min_snr: float = 10.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local maxima standing ``min_snr`` noise sigmas above the median level.
    Returns (sub-pixel centres, heights, FWHM in pixels) from a three-point
    Gaussian (log-parabola) fit, exact for a Gaussian line shape."""
    y = np.asarray(y, dtype=float)
    sigma = 1.4826 * np.median(np.abs(np.diff(y))) / np.sqrt(2.0) + 1e-12
    floor = np.median(y) + min_snr * sigma
    i = np.flatnonzero((y[1:-1] > y[:-2]) & (y[1:-1] >= y[2:]) & (y[1:-1] > floor)) + 1
    if i.size == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    lo, mid, hi = (np.log(np.maximum(y[j], 1e-9)) for j in (i - 1, i, i + 1))
    curv = lo - 2 * mid + hi
    ok = curv < 0
    i, lo, mid, hi, curv = i[ok], lo[ok], mid[ok], hi[ok], curv[ok]
    delta = 0.5 * (lo - hi) / curv
    fwhm = 2.3548 * np.sqrt(-1.0 / curv)
    return i + delta, y[i], fwhm


def fit_wavelengths(lamp: np.ndarray, initial_coeffs, *, reference=HG_AR_LINES, order: int = 3,
                    search_nm: float = 5.0, tolerance_nm: float = 0.4, reject_nm: float = 0.05) -> WavelengthFit:
    """Identify Hg-Ar lines in a dark-subtracted lamp spectrum and fit pixel->nm.

    ``initial_coeffs`` (the unit's stored calibration) only has to be right to
    within ``search_nm``: a global offset is searched first, so the identification
    survives drift, then matches are refined with the fitted polynomial."""
    if order not in (2, 3):
        raise CalibrationError(f"polynomial order {order} not supported", "use order 2 or 3")
    lamp = np.asarray(lamp, dtype=float)
    pix, heights, fwhm_px = find_peaks(lamp)
    ref = np.asarray(reference, dtype=float)
    if pix.size < order + 3:
        raise CalibrationError(f"only {pix.size} lamp lines found in the spectrum",
                               "check the Hg-Ar lamp is on and connected; raise the integration time")
    guess = Polynomial(initial_coeffs)(pix)
    offsets = np.arange(-search_nm, search_nm + 1e-9, 0.05)
    dist = np.abs((guess[None, :, None] + offsets[:, None, None]) - ref[None, None, :]).min(axis=1)
    hits = (dist < tolerance_nm).sum(axis=1)
    offset = offsets[np.flatnonzero(hits == hits.max())[np.argmin(np.abs(offsets[hits == hits.max()]))]]
    predicted = guess + offset
    used = np.ones(ref.size, dtype=bool)
    for _ in range(3 * ref.size):
        # each reference line takes the nearest peak; a peak claimed twice goes to neither
        d = np.abs(predicted[:, None] - ref[None, :])
        j = np.argmin(d, axis=0)
        ok = used & (d[j, np.arange(ref.size)] < tolerance_nm)
        counts = np.bincount(j[ok], minlength=pix.size)
        ok &= counts[j] == 1
        if ok.sum() < order + 3:
            raise CalibrationError(f"only {ok.sum()} Hg-Ar lines identified",
                                   "the stored wavelength coefficients are too far off or this is not a Hg-Ar lamp")
        poly = Polynomial.fit(pix[j[ok]], ref[ok], order).convert()
        resid = ref[ok] - poly(pix[j[ok]])
        worst = np.argmax(np.abs(resid))
        robust = 1.4826 * np.median(np.abs(resid - np.median(resid)))
        if np.abs(resid[worst]) > max(reject_nm, 4.0 * robust):
            used[np.flatnonzero(ok)[worst]] = False  # a blend or a misidentification
            continue
        refined = poly(pix)
        if np.max(np.abs(refined - predicted)) < 0.01:
            break
        predicted = refined  # re-identify with the fitted curve instead of the guess
    dispersion = np.abs(poly.deriv()(pix[j[ok]]))
    return WavelengthFit(
        coeffs=tuple(float(c) for c in poly.coef) + (0.0,) * (order + 1 - poly.coef.size),
        rms_nm=float(np.sqrt(np.mean(resid ** 2))), max_abs_nm=float(np.max(np.abs(resid))),
        lines_used=tuple(float(r) for r in ref[ok]),
        lines_rejected=tuple(float(r) for r in ref[~used]),
        pixels=tuple(float(p) for p in pix[j[ok]]),
        resolution_nm=float(np.median(fwhm_px[j[ok]] * dispersion)),
    )


def planck_photons(wl_nm: np.ndarray, temperature_k: float) -> np.ndarray:
    return wl_nm ** -4.0 / np.expm1(HC_OVER_K_NM / (wl_nm * temperature_k))


def response_from_lamp(lamp: np.ndarray, wavelengths: np.ndarray, temperature_k: float = 2856.0,
                       smooth_px: int = 5, floor: float = 0.02) -> np.ndarray:
    """Relative counts per photon for each pixel from a dark-subtracted
    reference-lamp spectrum; pixels below ``floor`` of the maximum (behind the
    laser filter, beyond the detector) get 0 and are never divided by."""
    r = np.asarray(lamp, dtype=float) / planck_photons(wavelengths, temperature_k)
    if smooth_px > 1:
        k = np.ones(smooth_px) / smooth_px
        r = np.convolve(np.pad(r, smooth_px // 2, mode="edge"), k, mode="valid")
    r /= r.max()
    r[r < floor] = 0.0
    return r
