"""The chain from acquisitions to what a record carries, in one place."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from station.spectra.acquire import Acquisition
from station.spectra.calibration import Calibration, fit_wavelengths, response_from_lamp
from station.spectra.fingerprint import fingerprint
from station.spectra.peaks import DEFAULT_RESOLUTION_NM, Peak, peak_table
from station.spectra.process import Spectrum
from station.spectra.screening import Verdict, screen


def calibration_from_lamps(hgar: Acquisition, halogen: Acquisition, stored_coeffs, *,
                           nonlinearity=None, order: int = 3, temperature_k: float = 2856.0) -> Calibration:
    """Wavelength fit from a Hg-Ar acquisition, then the response from a
    halogen reference-lamp acquisition on the fitted wavelength axis."""
    def counts(a: Acquisition) -> np.ndarray:
        x = a.raw.astype(np.float64) - a.dark
        if nonlinearity is not None:
            k0, k1, k2 = nonlinearity
            x = x * (k0 + x * (k1 + x * k2))
        return x

    fit = fit_wavelengths(counts(hgar), stored_coeffs, order=order)
    n = hgar.raw.size
    response = response_from_lamp(counts(halogen), fit.wavelengths(n), temperature_k)
    return Calibration(n, fit.coeffs, response, tuple(nonlinearity) if nonlinearity else None, fit)


@dataclass(frozen=True)
class Analysis:
    fingerprint: np.ndarray
    peaks: list[Peak]
    verdict: Verdict

    def to_cbor(self) -> dict:
        """What a record carries for the spectrum (besides the artifacts' SHA-256):
        the fingerprint as an RFC 8746 float32 little-endian typed array (tag 85),
        the peak table (NaN as null) and the verdict with its reasons."""
        from station.spectra.artifact import _typed

        return {"fingerprint": _typed(self.fingerprint), "peaks": [p.to_json() for p in self.peaks],
                "screening": self.verdict.to_json()}


def analyse(spectrum: Spectrum, laser_nm: float, resolution_nm: float = DEFAULT_RESOLUTION_NM) -> Analysis:
    peaks = peak_table(spectrum.lines, laser_nm, resolution_nm)
    return Analysis(fingerprint(spectrum.values), peaks, screen(peaks, laser_nm))


def acquisition_artifacts(acq: Acquisition, processor, spectrum: Spectrum, meta: dict | None = None) -> dict[str, bytes]:
    """The bytes to store next to the outbox for one stone: the raw counts and
    the dark frame on the unit's calibrated pixel wavelengths, and the processed
    spectrum on GRID. A record carries ``artifact.sha256`` of each."""
    from station.spectra.artifact import to_artifact_bytes

    m = {"integration_us": int(acq.integration_us), "scans": int(acq.scans), **(meta or {})}
    wl = processor.wavelengths
    return {
        "raw": to_artifact_bytes(wl, acq.raw, kind="raw", unit="counts", meta=m),
        "dark": to_artifact_bytes(wl, acq.dark, kind="dark", unit="counts", meta=m),
        "processed": to_artifact_bytes(spectrum.wavelengths, spectrum.values, kind="processed",
                                       unit="relative photon density (mean 1)", meta=m),
    }
