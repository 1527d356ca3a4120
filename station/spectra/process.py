"""Counts -> a device-independent spectrum on a fixed wavelength grid.

    raw, dark (uint16 counts) -> dark subtraction -> [nonlinearity] -> / response
    -> resample onto GRID (410-995 nm, 0.5 nm) -> baseline (morphological opening)
    -> normalise (mean of the spectrum = 1)

Everything that depends only on the calibration (the pixel wavelengths, the
inverse response) is computed once in ``Processor``, so one spectrum costs a
handful of vectorised operations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.polynomial import Polynomial

from station.spectra.calibration import Calibration
from station.spectra.errors import SpectrumError

GRID_START_NM = 410.0
GRID_STOP_NM = 995.0
GRID_STEP_NM = 0.5
GRID = np.round(np.arange(GRID_START_NM, GRID_STOP_NM + GRID_STEP_NM / 2, GRID_STEP_NM), 3)
GRID.setflags(write=False)

# The baseline is a morphological opening over BASELINE_WINDOW_NM: anything
# narrower (zero-phonon lines: 1-5 nm FWHM, so at most ~10 nm at the base)
# is a line; anything broader (phonon sidebands, fluorescence bands: sigma
# >= 15 nm) is baseline. Computed on 2.5 nm blocks to keep it cheap.
_BLOCK = 5
_OPEN_BLOCKS = 5  # 12.5 nm
_NB = -(-GRID.size // _BLOCK)
_BLOCK_CENTRES = GRID[0] + (np.arange(_NB) * _BLOCK + (_BLOCK - 1) / 2) * GRID_STEP_NM
# Precomputed gathers (edge-clamped) instead of np.pad + sliding windows: same result, fewer calls.
_BLOCK_IDX = np.minimum(np.arange(_NB * _BLOCK), GRID.size - 1).reshape(_NB, _BLOCK)
_WIN_IDX = np.clip(np.arange(_NB)[:, None] + np.arange(_OPEN_BLOCKS) - _OPEN_BLOCKS // 2, 0, _NB - 1)


@dataclass(frozen=True)
class Spectrum:
    """A processed spectrum on GRID: ``values`` = ``baseline`` + ``lines``,
    all divided by the mean of the spectrum so brightness and integration
    time drop out."""

    values: np.ndarray
    baseline: np.ndarray
    lines: np.ndarray

    @property
    def wavelengths(self) -> np.ndarray:
        return GRID


def baseline(y: np.ndarray) -> np.ndarray:
    blocks = y[_BLOCK_IDX].min(axis=1)
    opened = blocks[_WIN_IDX].min(axis=1)[_WIN_IDX].max(axis=1)  # erosion, then dilation
    return np.interp(GRID, _BLOCK_CENTRES, opened)


def finish(y: np.ndarray) -> Spectrum:
    """Baseline and normalisation of a spectrum already on GRID."""
    scale = y.mean()
    if not np.isfinite(scale) or scale <= 0:
        raise SpectrumError("the spectrum has no positive signal on 410-995 nm",
                            "check the laser is on and the stone is on the probe window")
    y = y / scale
    b = baseline(y)
    return Spectrum(y, b, y - b)


class Processor:
    """Processing for one calibrated (or uncalibrated) unit."""

    def __init__(self, cal: Calibration) -> None:
        p = np.arange(cal.n_pixels, dtype=float)
        self.wavelengths = Polynomial(cal.wavelength_coeffs)(p)
        if np.any(np.diff(self.wavelengths) <= 0):
            raise SpectrumError("the wavelength polynomial is not increasing over the pixels",
                                "recalibrate the unit with the Hg-Ar lamp")
        if self.wavelengths[0] > GRID[0] or self.wavelengths[-1] < GRID[-1]:
            raise SpectrumError(f"the unit covers {self.wavelengths[0]:.1f}-{self.wavelengths[-1]:.1f} nm, "
                                f"not all of {GRID[0]:.0f}-{GRID[-1]:.0f} nm", "use a spectrometer covering the grid")
        if cal.response is None:  # uncalibrated: only the pixel bandwidth is known
            resp = np.abs(Polynomial(cal.wavelength_coeffs).deriv()(p))
        else:
            resp = np.asarray(cal.response, dtype=float)
        self.inv_response = np.divide(1.0, resp, out=np.zeros_like(resp), where=resp > 0)
        self.nonlinearity = None if cal.nonlinearity_coeffs is None else np.asarray(cal.nonlinearity_coeffs)

    def counts(self, raw: np.ndarray, dark: np.ndarray) -> np.ndarray:
        """Dark-subtracted, linearised, response-corrected, on the pixel axis."""
        x = raw.astype(np.float64) - dark
        if self.nonlinearity is not None:
            k0, k1, k2 = self.nonlinearity
            x = x * (k0 + x * (k1 + x * k2))
        return x * self.inv_response

    def on_grid(self, raw: np.ndarray, dark: np.ndarray) -> np.ndarray:
        return np.interp(GRID, self.wavelengths, self.counts(raw, dark))

    def process(self, raw: np.ndarray, dark: np.ndarray) -> Spectrum:
        return finish(self.on_grid(raw, dark))


def resample(wavelengths: np.ndarray, intensity: np.ndarray) -> np.ndarray:
    """A corrected spectrum on any increasing axis onto GRID (linear interpolation)."""
    return np.interp(GRID, wavelengths, intensity)
