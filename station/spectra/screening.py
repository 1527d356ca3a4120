"""PASS or REFER, with reasons. Never "synthetic": a screen only says which
stones need a laboratory. Each rule and threshold is explained, with its
source, in docs/SCREENING.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from station.spectra.lines import raman_nm
from station.spectra.peaks import RAMAN_NAME, Peak

SNR_PRESENT = 5.0          # z-score: 2.9e-7 one-sided false-alarm probability per test under white noise
N3_MAX_LASER_NM = 410.0    # N3 emission starts at 415.2 nm; the probe's long-pass filter sits a few nm above the laser
N3_SNR_PASS = 8.0          # N3 is the only evidence that lets a stone PASS: a stricter false-alarm bound
POSITION_TOLERANCE_NM = 1.0
WIDTH_FACTOR = 2.0         # a measured FWHM more than twice the expected line shape is not that line
RAMAN_TOLERANCE_NM = 0.25
RAMAN_CHECK_SNR = 20.0     # below this the Raman position itself is too uncertain to judge the calibration

# Centres whose presence refers a stone, and the words an operator reads.
REFER_IF_PRESENT = {
    "SiV": "SiV 736.8 nm present (CVD growth marker)",
    "596/597": "596/597 nm doublet present (as-grown CVD marker)",
    "499.6": "499.6 nm line present (reported only in CVD synthetics)",
    "Ni": "Ni-related 882.9/884.7 nm present (HPHT growth with Ni catalyst)",
    "H2": "H2 986 nm present (HPHT synthesis or HPHT treatment)",
}
NOTED_IF_PRESENT = {
    "H3": "H3 503.2 nm present",
    "NV0": "NV0 575.0 nm present",
    "NV-": "NV- 637.0 nm present",
    "GR1": "GR1 741.1 nm present (radiation damage)",
}


@dataclass(frozen=True)
class Verdict:
    verdict: str                      # "PASS" | "REFER"
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"verdict": self.verdict, "reasons": self.reasons, "notes": self.notes}


def present(p: Peak, min_snr: float = SNR_PRESENT) -> bool:
    """Detected (SNR), where the centre is (position), and shaped like it (not a broad hump)."""
    return bool(p.snr >= min_snr and np.isfinite(p.position_nm)
                and abs(p.position_nm - p.centre_nm) <= POSITION_TOLERANCE_NM
                and np.isfinite(p.fwhm_nm) and p.fwhm_nm <= WIDTH_FACTOR * p.expected_fwhm_nm)


def screen(peaks: list[Peak], laser_nm: float) -> Verdict:
    by = {p.name: p for p in peaks}
    refer, notes = [], []
    raman = by.get(RAMAN_NAME)
    expected = raman_nm(laser_nm)
    if raman is None or not present(raman):
        refer.append(f"diamond Raman line {expected:.1f} nm not detected (not diamond, or no signal)")
    elif raman.snr < RAMAN_CHECK_SNR:
        notes.append(f"Raman line too weak (SNR {raman.snr:.0f}) for the wavelength check")
    else:
        off = raman.position_nm - expected
        if abs(off) > RAMAN_TOLERANCE_NM:
            refer.append(f"wavelength check failed: Raman line at {raman.position_nm:.2f} nm, "
                         f"expected {expected:.2f} nm (recalibrate)")
        else:
            notes.append(f"Raman {raman.position_nm:.2f} nm (expected {expected:.2f}, SNR {raman.snr:.0f})")
    n3 = by.get("N3")
    if laser_nm >= N3_MAX_LASER_NM:
        refer.append(f"N3 415.2 nm cannot be excited by a {laser_nm:g} nm laser (needs one below "
                     f"{N3_MAX_LASER_NM:g} nm, e.g. 405 nm)")
    elif n3 is None:
        refer.append("N3 415.2 nm not covered by the spectrum")
    elif present(n3, N3_SNR_PASS):
        notes.append("N3 415.2 nm present (type Ia)")
    else:
        refer.append("N3 415.2 nm absent (type II)")
    for name, text in REFER_IF_PRESENT.items():
        if name in by and present(by[name]):
            refer.append(text)
    for name, text in NOTED_IF_PRESENT.items():
        if name in by and present(by[name]):
            notes.append(text)
    return Verdict("REFER" if refer else "PASS", refer, notes)
